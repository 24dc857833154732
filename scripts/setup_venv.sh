#!/usr/bin/env bash
# Creates or refreshes .venv with Python 3.10 and installs the project (editable) with its dev
# tools, pinned by requirements/constraints.txt. Re-runs only when the venv is missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.tfxopt-installed"
INPUTS=(pyproject.toml requirements/constraints.txt requirements/model-signing-tool.txt scripts/setup_venv.sh)

find_python310() {
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    command -v python3.10
    return
  fi
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  local candidate
  for candidate in $(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V -r); do
    if [ -x "$candidate/bin/python3.10" ]; then
      echo "$candidate/bin/python3.10"
      return
    fi
  done
  return 1
}

venv_is_current() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null || return 1
  [ -f "$STAMP" ] || return 1
  local f
  for f in "${INPUTS[@]}"; do
    [ "$f" -nt "$STAMP" ] && return 1
  done
  return 0
}

if venv_is_current; then
  exit 0
fi

if ! PY=$(find_python310); then
  echo "error: Python 3.10 is required (tfx 1.16 supports 3.9-3.10) and none was found." >&2
  echo "       Looked for 'python3.10' on PATH and in ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.10.*." >&2
  echo "       Install it, e.g. 'pyenv install 3.10' or 'apt-get install python3.10 python3.10-venv'," >&2
  echo "       then run this command again." >&2
  exit 1
fi

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  echo "Removing $VENV: it is not Python 3.10." >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip<25" "setuptools<76" wheel
echo "Installing tfx-optimize and its pinned stack (requirements/constraints.txt); the first time takes a few minutes"
"$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
# The manifest tests' schema validator lives outside the venv's site-packages: once installed,
# the kubernetes client (which TFX imports) loads it and its JSON-schema format checkers on every
# TFX import, 2-3 s per process that production images do not pay.
"$VENV/bin/python" -m pip uninstall --quiet --yes kubernetes-validate >/dev/null 2>&1 || true
rm -rf "$VENV/tools/kubernetes-validate"
"$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt \
  --target "$VENV/tools/kubernetes-validate" kubernetes-validate==1.37.0
# model_signing (OpenSSF model signing) needs urllib3 2 through sigstore and tuf; kfp pins urllib3 < 2
# here, so it lives in its own directory, run as `PYTHONPATH=.venv/tools/model-signing python -m
# model_signing` (docs/ota.md); only the OTA interop tests and people verifying bundles use it.
rm -rf "$VENV/tools/model-signing"
"$VENV/bin/python" -m pip install --quiet --no-warn-conflicts --target "$VENV/tools/model-signing" \
  -r requirements/model-signing-tool.txt
touch "$STAMP"
