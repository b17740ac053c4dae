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
cargo test --workspace --locked
