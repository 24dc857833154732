#!/usr/bin/env bash
# `make test` / `make test-isa` / `make test-all`: installs what the tests need where it can, then
# runs pytest with the arguments given, and says what it could not install and so skipped.
#
#   Chromium (report check in a browser)  scripts/install_chromium.sh  root or password-less sudo
#   MariaDB (ML Metadata on MySQL)        scripts/install_mariadb.sh   root
#   kubectl (renders the k8s overlays)    scripts/install_kubectl.sh   no root (into .venv/tools)
#
# An installer exits 3 when it cannot install without root: the suite still runs (the browser
# test skips with TFXOPT_NO_BROWSER=1, the MySQL tests skip by themselves) and the skipped parts
# are listed before and after it. Any other installer failure stops here.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

skipped=()
install() {  # install <script> <what is skipped without it>
  bash "$1"
  local status=$?
  if [ "$status" -eq 3 ]; then
    skipped+=("$2")
  elif [ "$status" -ne 0 ]; then
    echo "run_tests.sh: $1 failed (exit $status)" >&2
    exit "$status"
  fi
}
install scripts/install_chromium.sh "tests/test_report.py::test_report_opens_in_headless_chromium (no chromium; install it as root: scripts/install_chromium.sh)"
install scripts/install_mariadb.sh "tests/test_mysql_metadata.py (no mariadbd; install it as root: scripts/install_mariadb.sh)"
install scripts/install_kubectl.sh "tests/test_k8s_manifests.py rendering (no kubectl)"

if ! command -v chromium >/dev/null 2>&1; then
  export TFXOPT_NO_BROWSER=1
fi
say_skipped() {
  if [ "${#skipped[@]}" -gt 0 ]; then
    echo "run_tests.sh: not installed, so skipped (run as root to include them):" >&2
    printf '  %s\n' "${skipped[@]}" >&2
  fi
}
say_skipped
"$PY" -m pytest "$@"
status=$?
say_skipped
exit "$status"
