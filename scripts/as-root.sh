#!/usr/bin/env bash
# as-root.sh COMMAND...: runs COMMAND as root: as it is when already root, else through sudo;
# without sudo it says so and exits 1. The other scripts' one way to become root.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  exec "$@"
fi
if command -v sudo >/dev/null 2>&1; then
  exec sudo "$@"
fi
echo "needs root: run '$*' as root" >&2
exit 1
