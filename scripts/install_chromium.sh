#!/usr/bin/env bash
# Installs headless Chromium from Debian's packages when it is missing (tests/test_report.py opens
# the run report in it). Needs root (CI containers) or sudo; does nothing when chromium is there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install_chromium.sh: chromium is missing and this is not root: install the Debian" \
      "package 'chromium' (and 'fonts-liberation') yourself." >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# fonts-liberation: the page's text renders with real glyphs in screenshots.
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation
command -v chromium
