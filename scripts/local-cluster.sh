#!/usr/bin/env bash
# The tutorial's cluster behind one address: 3 masters on 127.0.0.1:6381-6383, their replicas
# on 6384-6386 (plain redis-server processes), and redshard on 127.0.0.1:6379 with its admin
# socket at the default path (redshard-admin finds it). Two spare empty nodes on 6387 and 6388
# (not in the cluster) are there for scaling out with redshard-admin (docs/admin.md). Ctrl-C
# stops everything this script started, and any node restarted by hand on those ports during
# the tutorial.
#
# Each run starts fresh: the last run's nodes' data and the proxy's persisted topology in
# .local-cluster/ are removed first. `--keep` keeps them (the proxy then starts from the
# topology the last run left, which may differ from the banner below: failovers, new shards).
#
# `--proxies N` (1 to 9) runs a fleet instead of one proxy (docs/fleet.md): etcd on
# 127.0.0.1:2379 (or the next free pair of ports from 23791), and N proxies sharing it,
# proxy i serving clients on 640i, its admin port on 650i and its metrics on 912i; the admin
# password is in .local-cluster/admin-password. 6379 stays free for a load balancer.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
proxies=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --proxies)
      proxies="${2:-}"
      shift || true
      if ! [[ "$proxies" =~ ^[1-9]$ ]]; then
        echo "--proxies needs a number of proxies from 1 to 9" >&2
        exit 2
      fi
      ;;
    --proxies=*)
      proxies="${1#--proxies=}"
      if ! [[ "$proxies" =~ ^[1-9]$ ]]; then
        echo "--proxies needs a number of proxies from 1 to 9" >&2
        exit 2
      fi
      ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (known: --keep, --proxies N)" >&2; exit 2 ;;
  esac
  shift
done
scripts/ensure-redis.sh
scripts/ensure-protoc.sh
if [ "$proxies" -gt 0 ]; then
  exec scripts/local-fleet.sh "$proxies" "$keep"
fi

for port in 6379 6381 6382 6383 6384 6385 6386 6387 6388; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is already in use; stop what listens there and run again" >&2
    exit 1
  fi
done

if [ ! -x target/release/redshard ]; then
  echo "building redshard and redshard-admin (release; the first build takes several minutes) ..." >&2
fi
cargo build --release --locked -p redshard-proxy -p redshard-admin

state=.local-cluster
node_ports=(6381 6382 6383 6384 6385 6386 6387 6388)
if [ "$keep" = 1 ] && [ -f "$state/topology.toml" ]; then
  echo "--keep: reusing the last run's data and topology in $state/ (failovers and added shards of" >&2
  echo "that run still apply; run without --keep to start from config/examples/local-cluster.toml)" >&2
else
  rm -rf "$state"
fi
mkdir -p "$state"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A node the tutorial restarted by hand (e.g. with --daemonize yes) is not our child: stop
  # whatever serves the tutorial's ports (they were free when this script started).
  for port in "${node_ports[@]}"; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  wait 2>/dev/null || true
  echo "stopped redshard and the redis nodes" >&2
}
trap cleanup EXIT INT TERM

for port in "${node_ports[@]}"; do
  mkdir -p "$state/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --maxmemory-policy noeviction --dir "$state/$port" --logfile "$PWD/$state/$port/redis.log" &
  pids+=($!)
done
for port in "${node_ports[@]}"; do
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done

./target/release/redshard --config config/examples/local-cluster.toml &
proxy=$!
pids+=("$proxy")
until redis-cli -p 6379 ping >/dev/null 2>&1; do
  if ! kill -0 "$proxy" 2>/dev/null; then
    echo "redshard did not start; see its log above" >&2
    exit 1
  fi
  sleep 0.1
done
cat >&2 <<'TXT'

redshard is serving on 127.0.0.1:6379 (masters 6381-6383, replicas 6384-6386), its admin
socket (/tmp/redshard-<uid>/admin.sock); 6387 and 6388 are spare nodes for scaling out. Try:
  redis-cli -p 6379 set k v
  redis-cli -p 6379 get k
  redis-cli -p 6379 info keyspace
  ./target/release/redshard-admin check
A node may be killed (kill -9 of a master fails it over; restart it with the same command
line and it rejoins as a replica). The tour in README.md and the tutorials in
docs/replication.md go further. Press Ctrl-C to stop everything.
TXT
# Only the proxy ending stops the demo: nodes are killed and restarted as part of it.
wait "$proxy" || true
