#!/usr/bin/env bash
# Runs redis-py's own test suite against one plain redis-server and against redshard in front
# of three plain redis-server masters (slots split in three), and prints one pytest summary
# line for each. redis-py's sdist (which carries tests/) and the suite's Python dependencies
# come from PyPI into a temporary folder; every node and the proxy listen on free loopback
# ports and are stopped at the end.
#
# Usage: scripts/redis-py-suite.sh [--proxy PATH] [--version X.Y.Z] [--asyncio]
#                                  [--only plain|proxy] [--keep DIR] [-- PYTEST_ARGS...]
#   --proxy    the redshard binary (default: target/debug/redshard, built if missing)
#   --version  redis-py version (default: the installed redis package's, else 8.2.0)
#   --asyncio  run tests/test_asyncio instead of the sync suite
#   --only     run against one side only
#   --keep     keep the JUnit XML files and the proxy's log in DIR (to compare test by test)
#   PYTEST_ARGS  passed to pytest, e.g. `-- -k test_commands -x`
set -euo pipefail
cd "$(dirname "$0")/.."
proxy_bin=target/debug/redshard
version=""
suite=sync
only=""
keep=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy) proxy_bin=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --asyncio) suite=asyncio; shift ;;
    --only) only=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in ""|plain|proxy) ;; *) echo "--only takes plain or proxy" >&2; exit 2 ;; esac
scripts/ensure-redis.sh
if [ "$only" != plain ] && [ ! -x "$proxy_bin" ]; then
  if [ "$proxy_bin" = target/debug/redshard ]; then
    cargo build --locked -p redshard-proxy
  else
    echo "no executable at $proxy_bin" >&2
    exit 1
  fi
fi
if [ "$only" != plain ]; then proxy_bin=$(realpath "$proxy_bin"); fi
if [ -z "$version" ]; then
  version=$(python3 -c 'import redis; print(redis.__version__)' 2>/dev/null || echo 8.2.0)
fi
if [ -n "$keep" ]; then mkdir -p "$keep"; keep=$(cd "$keep" && pwd); fi

work=$(mktemp -d)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "redis-py $version: fetching the sdist and the suite's dependencies from PyPI ..." >&2
python3 -m venv "$work/venv"
py=$work/venv/bin/python
"$py" -m pip install -q --disable-pip-version-check \
  pytest pytest-asyncio pytest-timeout packaging ujson numpy xxhash pybreaker aiohttp \
  "coverage<7.11.1" opentelemetry-api opentelemetry-sdk opentelemetry-exporter-otlp-proto-http \
  redis-entraid
"$py" -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
  "redis==$version" -d "$work/sdist"
tar xzf "$work/sdist/redis-$version.tar.gz" -C "$work"
src=$work/redis-$version

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { # PORT PID
  until redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "the process for port $1 exited:" >&2
      tail -n 5 "$work"/proxy.log "$work"/node-*/redis.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
}
start_node() { # PORT
  mkdir -p "$work/node-$1"
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work/node-$1" --logfile "$work/node-$1/redis.log" &
  pids+=($!)
  wait_ping "$1" "$!"
}

# A port nothing listens on, so the suite's module tests see no redis-stack server.
nomod_port=$(free_port)
markers="not onlycluster and not redismod and not ssl and not replica and not cp_integration and not multidb_integration"
if [ "$suite" = asyncio ]; then
  tests=(tests/test_asyncio --ignore=tests/test_asyncio/test_scenario)
else
  tests=(tests --ignore=tests/test_asyncio --ignore=tests/test_scenario)
fi
# --tb=native: pytest's own traceback formatting (through Python 3.11's ast) crashes the whole
# session on one of the suite's failures.
run_suite() { # NAME PORT
  local xml="$work/$1.xml"
  (cd "$src" && "$py" -m pytest -q -p no:cacheprovider -o addopts="" --tb=native --junit-xml="$xml" \
      --redis-url "redis://127.0.0.1:$2/0" --redis-mod-url "redis://127.0.0.1:$nomod_port" \
      -m "$markers" "${tests[@]}" "${extra[@]}" >"$work/$1.log" 2>&1) || true
  if [ -n "$keep" ]; then cp "$xml" "$work/$1.log" "$keep/" 2>/dev/null || true; fi
  local line
  line=$(grep -E '(passed|failed|error|skipped).* in [0-9.]+s' "$work/$1.log" | tail -1 || true)
  printf '%-8s %s\n' "$1:" "${line:-no summary; last lines: $(tail -3 "$work/$1.log")}"
}

summary=()
if [ "$only" != proxy ]; then
  plain_port=$(free_port)
  start_node "$plain_port"
  summary+=("$(run_suite plain "$plain_port")")
fi
if [ "$only" != plain ]; then
  shard_ports=()
  for _ in 1 2 3; do port=$(free_port); start_node "$port"; shard_ports+=("$port"); done
  proxy_port=$(free_port)
  cat >"$work/redshard.toml" <<EOF
listen = "127.0.0.1:$proxy_port"
metrics_listen = "off"
admin_listen = "off"
admin_socket = "off"
allow_flush = true

[[shard]]
name = "s1"
master = "127.0.0.1:${shard_ports[0]}"
slots = ["0-5460"]

[[shard]]
name = "s2"
master = "127.0.0.1:${shard_ports[1]}"
slots = ["5461-10922"]

[[shard]]
name = "s3"
master = "127.0.0.1:${shard_ports[2]}"
slots = ["10923-16383"]
EOF
  "$proxy_bin" --config "$work/redshard.toml" >"$work/proxy.log" 2>&1 &
  pids+=($!)
  wait_ping "$proxy_port" "$!"
  summary+=("$(run_suite redshard "$proxy_port")")
  if [ -n "$keep" ]; then cp "$work/proxy.log" "$keep/"; fi
fi
echo "redis-py $version, $suite suite (RESP3 unless -- --protocol=2), redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'):"
printf '%s\n' "${summary[@]}"
