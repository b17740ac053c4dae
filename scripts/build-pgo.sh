#!/usr/bin/env bash
# Builds target/release/redshard with profile-guided optimisation: an instrumented build runs
# the load benchmark's cases through 3 local redis-servers (benches/load/count.py load), and
# the release build is then laid out by what that run executed. Needs redis-server,
# redis-benchmark, python3 and rustup's llvm-tools component (added when missing).
#
#   scripts/build-pgo.sh            # then run target/release/redshard as usual
#
# The instrumented build has its own target directory (target/pgo-generate); the profile is
# kept in target/pgo/redshard.profdata. Measured results: benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x $profdata ]]; then
  echo "adding rustup's llvm-tools component (llvm-profdata) ..."
  rustup component add llvm-tools >/dev/null
fi
[[ -x $profdata ]] || { echo "llvm-profdata not found at $profdata" >&2; exit 1; }
for tool in redis-server redis-benchmark python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (scripts/ensure-redis.sh installs Redis)" >&2; exit 1; }
done

raw=$(pwd)/target/pgo/raw
rm -rf "$raw"
mkdir -p "$raw"
echo "1/3 the instrumented build ..."
CARGO_TARGET_DIR=target/pgo-generate RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" \
  cargo build --release --locked -p redshard-proxy
echo "2/3 the training run (the load benchmark's cases, ~1 min) ..."
benches/load/count.py load target/pgo-generate/release/redshard \
  --cases set_p1,get_p1,set_p16,get_p16,mset_p1,mget_p1 -n 200000
"$profdata" merge -o target/pgo/redshard.profdata "$raw"
echo "3/3 the release build, laid out by the profile ..."
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$(pwd)/target/pgo/redshard.profdata" \
  cargo build --release --locked -p redshard-proxy
echo "built target/release/redshard (profile-guided)"
