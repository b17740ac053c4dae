#!/usr/bin/env bash
# Makes sure etcd (the server the fleet tests and `local-cluster.sh --proxies N` coordinate
# through) is installed (Debian/Ubuntu: apt), and protoc, which building redshard needs
# (scripts/ensure-protoc.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-protoc.sh
if command -v etcd >/dev/null 2>&1; then
  exit 0
fi
scripts/apt-install.sh "etcd" etcd-server
# The Debian package may start a system etcd on 2379; the tests never use it.
if command -v systemctl >/dev/null 2>&1; then
  scripts/as-root.sh systemctl stop etcd 2>/dev/null || true
fi
