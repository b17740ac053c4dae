#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests (against real
# redis-server processes the tests start on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
