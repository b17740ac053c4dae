#!/usr/bin/env bash
# Makes sure redis-server, redis-cli and redis-benchmark are installed (Debian/Ubuntu: apt).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "redis-server is missing: run 'apt-get install redis-server redis-tools' as root" >&2
      exit 1
    fi
  fi
  echo "installing redis-server and redis-tools with apt-get ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
  # The Debian package may start a system redis on 6379; the proxy wants that port.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl stop redis-server 2>/dev/null || true; fi
  $sudo pkill -f 'redis-server 127.0.0.1:6379' 2>/dev/null || true
else
  echo "redis-server is missing: install Redis 7 (package redis-server) and run again" >&2
  exit 1
fi
