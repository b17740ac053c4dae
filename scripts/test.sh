#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests (against real
# redis-server processes the tests start on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh
# The client-compatibility test drives redis-py, unmodified.
if ! python3 -c 'import redis, sys; sys.exit(int(redis.__version__.split(".")[0]) < 8)' 2>/dev/null; then
  echo "installing redis-py 8 for the client-compatibility test ..." >&2
  python3 -m pip install -q --disable-pip-version-check 'redis>=8,<9' 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages 'redis>=8,<9'
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo's own last line is the last crate's doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
