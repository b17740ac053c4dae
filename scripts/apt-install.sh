#!/usr/bin/env bash
# apt-install.sh WHAT PACKAGE...: installs Debian/Ubuntu PACKAGEs with apt-get (through sudo
# when not root), saying first that WHAT is missing; without apt-get (or without sudo when
# not root) it says exactly what to install and exits 1. The scripts/ensure-*.sh call it;
# it becomes root through scripts/as-root.sh.
set -euo pipefail
what=$1
shift
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$what missing: install the packages $* (or their equivalent) and run again" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "$what missing: run 'apt-get install $*' as root" >&2
  exit 1
fi
as_root="$(dirname "$0")/as-root.sh"
echo "installing $* with apt-get ..." >&2
"$as_root" apt-get update -qq
# Through env: sudo does not pass the caller's environment on to apt-get.
"$as_root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
