#!/usr/bin/env bash
# `scripts/local-cluster.sh --proxies N [--keep]` runs this: the tutorial's nodes (masters
# 6381-6383, replicas 6384-6386, spares 6387-6388), etcd, and N redshard proxies sharing the
# cluster through it (docs/fleet.md). Proxy i (p1, p2, ...) serves clients on 127.0.0.1:640i,
# its admin port on 650i (password in .local-cluster/admin-password) and its metrics on 912i;
# p1 also opens the default admin socket, so `redshard-admin check` needs no flags. etcd
# listens on 127.0.0.1:2379 (peer 2380), or on the first free pair from 23791 when those are
# taken (a system etcd). Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
proxies="${1:?usage: scripts/local-cluster.sh --proxies N}"
keep="${2:-0}"
scripts/ensure-etcd.sh

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_ports=(6381 6382 6383 6384 6385 6386 6387 6388)
proxy_ports=()
for i in $(seq "$proxies"); do
  proxy_ports+=("640$i" "650$i" "912$i")
done
for port in "${node_ports[@]}" "${proxy_ports[@]}"; do
  if in_use "$port"; then
    echo "port $port on 127.0.0.1 is already in use; stop what listens there and run again" >&2
    exit 1
  fi
done
etcd_client=""
for pair in "2379 2380" "23791 23792" "23793 23794" "23795 23796"; do
  set -- $pair
  if ! in_use "$1" && ! in_use "$2"; then
    etcd_client=$1
    etcd_peer=$2
    break
  fi
done
if [ -z "$etcd_client" ]; then
  echo "no free pair of ports for etcd (tried 2379-2380 and 23791-23796)" >&2
  exit 1
fi

if [ ! -x target/release/redshard ]; then
  echo "building redshard and redshard-admin (release; the first build takes several minutes) ..." >&2
fi
cargo build --release --locked -p redshard-proxy -p redshard-admin

state=.local-cluster
if [ "$keep" = 1 ] && [ -d "$state/etcd" ]; then
  echo "--keep: reusing the last run's data, etcd and topology in $state/" >&2
else
  rm -rf "$state"
fi
mkdir -p "$state"
if [ ! -s "$state/admin-password" ]; then
  (umask 077 && head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/admin-password")
fi
password=$(cat "$state/admin-password")

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for port in "${node_ports[@]}"; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  wait 2>/dev/null || true
  echo "stopped the proxies, etcd and the redis nodes" >&2
}
trap cleanup EXIT INT TERM

for port in "${node_ports[@]}"; do
  mkdir -p "$state/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --maxmemory-policy noeviction --dir "$state/$port" --logfile "$PWD/$state/$port/redis.log" &
  pids+=($!)
done

mkdir -p "$state/etcd"
etcd --name local --data-dir "$state/etcd/data" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" \
  --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "local=http://127.0.0.1:$etcd_peer" \
  --logger zap --log-outputs stderr 2>"$state/etcd/etcd.log" &
etcd_pid=$!
pids+=("$etcd_pid")

for port in "${node_ports[@]}"; do
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done
etcd_healthy() (
  exec 3<>"/dev/tcp/127.0.0.1/$etcd_client" || exit 1
  printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  grep -q '"health":"true"' <&3
)
until etcd_healthy 2>/dev/null; do
  if ! kill -0 "$etcd_pid" 2>/dev/null; then
    echo "etcd did not start; see $state/etcd/etcd.log" >&2
    exit 1
  fi
  sleep 0.1
done

# Each proxy's configuration: the tutorial's shards, with its own ports and the fleet's etcd.
shards=$(sed -n '/^\[\[shard\]\]/,$p' config/examples/local-cluster.toml)
for i in $(seq "$proxies"); do
  dir="$state/p$i"
  mkdir -p "$dir"
  if [ "$i" = 1 ]; then socket=""; else socket='admin_socket = "off"'; fi
  cat >"$dir/redshard.toml" <<TOML
# Proxy p$i of the local fleet, written by scripts/local-cluster.sh --proxies $proxies.
listen = "127.0.0.1:640$i"
admin_listen = "127.0.0.1:650$i"
admin_password = "$password"
metrics_listen = "127.0.0.1:912$i"
$socket

[backend]
lanes = 0

[log]
level = "info"
format = "text"

[cluster]
etcd = ["127.0.0.1:$etcd_client"]
prefix = "/redshard-local"
proxy_id = "p$i"

$shards
TOML
  ./target/release/redshard --config "$dir/redshard.toml" 2>"$dir/redshard.log" &
  pids+=($!)
  until redis-cli -p "640$i" ping >/dev/null 2>&1; do
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      echo "proxy p$i did not start; see $dir/redshard.log" >&2
      exit 1
    fi
    sleep 0.1
  done
done

{
  echo
  echo "A fleet of $proxies redshard proxies over one cluster (masters 6381-6383, replicas 6384-6386,"
  echo "spare nodes 6387 and 6388), coordinating through etcd on 127.0.0.1:$etcd_client:"
  for i in $(seq "$proxies"); do
    echo "  p$i: clients 127.0.0.1:640$i, admin 127.0.0.1:650$i, metrics http://127.0.0.1:912$i/metrics, log $state/p$i/redshard.log"
  done
  cat <<TXT
The admin password of every proxy is in $state/admin-password. Try:
  redis-cli -p 6401 set k v
  redis-cli -p 6402 get k
  ./target/release/redshard-admin -a "\$(cat $state/admin-password)" -p 6502 check   # any proxy: the fleet, its leader
  ./target/release/redshard-admin check                                          # p1, over its admin socket
Put them behind one address with a TCP load balancer (a haproxy snippet listening on 6379 is
in docs/fleet.md) or DNS round-robin. Press Ctrl-C to stop everything.
TXT
} >&2
# Only etcd ending stops the demo: nodes and proxies may be killed and restarted as part of it.
wait "$etcd_pid" || true
