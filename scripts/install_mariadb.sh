#!/usr/bin/env bash
# Installs MariaDB (Debian's mariadb-server package) when no `mariadbd` is on the machine, so
# tests/test_mysql_metadata.py can run ML Metadata against a real MySQL-compatible server.
#
# The tests start and stop their own throwaway server (scripts/mariadb_test_server.py): this script
# only installs the binaries and makes sure no system service is left running. Needs root (apt).
# Idempotent: does nothing when mariadbd is already installed. Not root: installs nothing and exits
# 3 (the MySQL tests then skip, saying so; scripts/run_tests.sh lists it).
set -euo pipefail

find_mariadbd() {
  command -v mariadbd 2>/dev/null || { [ -x /usr/sbin/mariadbd ] && echo /usr/sbin/mariadbd; } || true
}

if [ -n "$(find_mariadbd)" ]; then
  echo "mariadbd already installed: $(find_mariadbd)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install_mariadb.sh: needs root to apt-get install mariadb-server (or install it yourself)" >&2
  exit 3
fi

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101: the package must not start (or fail to start) a system service in a
# container without an init system; the tests run their own server.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null
echo "installed: $(find_mariadbd) ($("$(find_mariadbd)" --version))"
