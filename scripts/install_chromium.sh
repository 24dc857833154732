#!/usr/bin/env bash
# Installs headless Chromium from Debian's packages when it is missing (tests/test_report.py opens
# the run report in it). Needs root (CI containers) or password-less sudo; does nothing when
# chromium is there. Without either it installs nothing and exits 3 (scripts/run_tests.sh then
# runs the suite without the browser check and says so).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install_chromium.sh: chromium is missing and this is neither root nor password-less" \
      "sudo: install the Debian packages 'chromium' and 'fonts-liberation' yourself." >&2
    exit 3
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# fonts-liberation: the page's text renders with real glyphs in screenshots.
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation
command -v chromium
