#!/usr/bin/env bash
# Makes sure redis-server, redis-cli and redis-benchmark are installed (Debian/Ubuntu: apt).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
  exit 0
fi
scripts/apt-install.sh "redis-server" redis-server redis-tools
# The Debian package may start a system redis on 6379; the proxy wants that port.
if command -v systemctl >/dev/null 2>&1; then
  scripts/as-root.sh systemctl stop redis-server 2>/dev/null || true
fi
scripts/as-root.sh pkill -f 'redis-server 127.0.0.1:6379' 2>/dev/null || true
