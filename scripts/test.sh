#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests (against real
# redis-server and etcd processes the tests start on free loopback ports).
#
# Every step runs even when an earlier one fails, cargo runs every test binary (--no-fail-fast),
# and the last line is always `total: N passed, M failed` (a failed fmt or clippy step counts as
# one failure each). The exit status is non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis.sh || exit 1
# The fleet tests run a real etcd; the etcd client crate needs protoc to build.
scripts/ensure-etcd.sh || exit 1
# The client-compatibility test drives redis-py, unmodified.
if ! python3 -c 'import redis, sys; sys.exit(int(redis.__version__.split(".")[0]) < 8)' 2>/dev/null; then
  echo "installing redis-py 8 for the client-compatibility test ..." >&2
  python3 -m pip install -q --disable-pip-version-check 'redis>=8,<9' 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages 'redis>=8,<9'
fi
# The app tests run python-rq, Celery, Django's cache and BullMQ through the proxy.
scripts/ensure-apps.sh || echo "could not install every app of the app tests; those tests will fail" >&2
step_failures=0
if ! cargo fmt --all -- --check; then
  echo "FAILED: cargo fmt --all -- --check (run cargo fmt --all)" >&2
  step_failures=$((step_failures + 1))
fi
if ! cargo clippy --workspace --all-targets --locked -- -D warnings; then
  echo "FAILED: cargo clippy --workspace --all-targets -- -D warnings" >&2
  step_failures=$((step_failures + 1))
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
# One closing line for the whole run (cargo's own last line is the last crate's doc-tests). A
# test binary that did not build or crashed prints no `test result:` line: it counts as failed.
awk -v steps="$step_failures" -v status="$test_status" '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
  END { f += steps; if (status != 0 && f == 0) f = 1; printf "total: %d passed, %d failed\n", p, f }' "$log"
if [ "$step_failures" -ne 0 ] || [ "$test_status" -ne 0 ]; then
  exit 1
fi
