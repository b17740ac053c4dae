#!/usr/bin/env python3
"""Failover timing: how long after `kill -9` of a master redshard accepts writes again.

Each trial starts from nothing: 2 shards (slots 0-8191 and 8192-16383) of one fresh
redis-server master and one fresh replica each, on free 127.0.0.1 ports, and the release
`redshard` binary in front of them with **default settings** (no `[health]` or `[mirror]`
section: sync mirroring, 100 ms probes, 1.5 s down-time, a refused connection counts as down
after a third of it). Once `GET /readyz` answers 200, two writer threads run through the proxy,
one on a key of shard s1 and one on a key of shard s2, each sending `SET {tag}:N N` on its own
connection every `--interval-ms` (waiting for each reply). After `--before-ms` the master of s1
is killed with SIGKILL (`kill -9`), and the trial measures

  recovery = (reply time of the first SET sent after the kill that got +OK) - (kill time)

on the s1 writer. Errors the s1 writer gets are counted in two kinds, from the proxy's own
message: a request that was on the old master's connection when it broke may fail (its outcome
is unknown, as the design allows); one answered `-ERR backend ADDR unavailable: ...` was refused
by a lane that could not connect, i.e. never sent to any node, which the design says should
wait for the failover instead. The time the killed process was gone (reaped) is shown too: on
a loaded machine it can trail the signal. The trial also checks that every SET that
got +OK on s1 (before and after the kill) reads back through the proxy (sync mirroring: an
acknowledged write survives the failover), that the s2 writer saw no error, that the proxy now
routes s1 to the former replica (`INFO redshard`), and reports the proxy's own account from
its log ("master failing for N ms, promotion took M ms"). Then everything is stopped.

The report gives p50 (median), p90 (nearest rank) and max of the recovery over the trials,
and every trial, as a Markdown table on stdout and JSON (`--json`). The targets of issue 5
(p50 <= 1 s, max <= 2 s) are printed as PASS/FAIL: informational, the exit status is 0 unless
something crashed or could not start. Only 127.0.0.1 is ever contacted. Python 3 standard
library only.
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import (  # noqa: E402
    REPO, BenchError, Procs, build_release, call, cargo_target_dir, key_slot, loadavg, read_reply,
    resp_command,
    run_in_workdir,
)

TOTAL_SLOTS = 16384
SHARD_SLOTS = [(0, 8191), (8192, 16383)]
TARGET_P50_S = 1.0
TARGET_MAX_S = 2.0


# ---------------------------------------------------------------------------------------------
# Processes and the wire


def free_ports(n):
    """n distinct free ports (all held open while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_status(port, path, timeout=1.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, body
    finally:
        conn.close()


def wait_for(what, check, procs, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            ok, last = check()
            if ok:
                return
        except (OSError, ConnectionError, http.client.HTTPException) as e:
            last = e
        time.sleep(0.02)
    raise BenchError(f"{what} not ready within {timeout:.0f} s ({last})")


# ---------------------------------------------------------------------------------------------
# Slots


def tag_in(lo, hi, prefix):
    """The first hash tag `prefix<n>` whose slot lies in lo..hi."""
    for n in range(100_000):
        tag = f"{prefix}{n}"
        if lo <= key_slot("{" + tag + "}") <= hi:
            return tag
    raise BenchError(f"no hash tag found for slots {lo}-{hi}")


def check_slots_with_admin(admin, config_path, keys):
    """Cross-check the Python slot function against `redshard-admin keyslot --config`: each
    key's slot and shard. Returns the admin's lines, or None when the CLI is missing."""
    if not admin:
        return None
    r = subprocess.run([admin, "keyslot", "--config", config_path, *keys],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise BenchError(f"redshard-admin keyslot failed: {(r.stdout + r.stderr).strip()[:300]}")
    lines = r.stdout.strip().splitlines()
    for key, line in zip(keys, lines):
        if str(key_slot(key)) not in line.split():
            raise BenchError(f"slot of {key!r}: this script says {key_slot(key)}, "
                             f"redshard-admin says {line!r}")
    return lines


# ---------------------------------------------------------------------------------------------
# Writers


class Writer(threading.Thread):
    """`SET {tag}:N N` through the proxy, one at a time on one connection, every `interval`
    seconds (or right after the previous reply when that took longer). Records every request:
    (N, send time, reply time, ok, error text)."""

    def __init__(self, port, tag, interval, reply_timeout):
        super().__init__(daemon=True)
        self.port, self.tag, self.interval, self.reply_timeout = port, tag, interval, reply_timeout
        self.records = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.first_ok_after = None  # the record of the first +OK after watch()
        self._watch_from = None

    def watch(self, t):
        """From now on remember the first +OK of a SET sent at or after `t` (also one
        recorded already)."""
        with self.lock:
            self._watch_from = t
            self.first_ok_after = next((r for r in self.records if r[3] and r[1] >= t), None)

    def first_ok(self):
        with self.lock:
            return self.first_ok_after

    def _record(self, rec):
        with self.lock:
            self.records.append(rec)
            if (self._watch_from is not None and self.first_ok_after is None and rec[3]
                    and rec[1] >= self._watch_from):
                self.first_ok_after = rec

    def run(self):
        sock = f = None
        n = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            if sock is None:
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                    sock.settimeout(self.reply_timeout)
                    f = sock.makefile("rb")
                except OSError as e:
                    t = time.monotonic()
                    self._record((None, t, t, False, f"connect: {e}"))
                    sock = None
                    time.sleep(self.interval)
                    continue
            n += 1
            t0 = time.monotonic()
            try:
                sock.sendall(resp_command("SET", f"{{{self.tag}}}:{n}", n))
                reply = read_reply(f)
            except (OSError, ConnectionError) as e:
                self._record((n, t0, time.monotonic(), False, f"connection: {e}"))
                try:
                    sock.close()
                except OSError:
                    pass
                sock = f = None
            else:
                ok = reply == "+OK"
                self._record((n, t0, time.monotonic(), ok, None if ok else str(reply)))
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()
        if sock is not None:
            sock.close()


def check_acked(port, tag, records):
    """Every N whose SET got +OK must read back as N. Returns (checked, missing, wrong)."""
    acked = [r[0] for r in records if r[3]]
    missing = wrong = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        for i in range(0, len(acked), 500):
            batch = acked[i : i + 500]
            s.sendall(resp_command("MGET", *[f"{{{tag}}}:{n}" for n in batch]))
            values = read_reply(f)
            if not isinstance(values, list):
                raise BenchError(f"MGET through the proxy answered {values!r}")
            for n, v in zip(batch, values):
                if v is None:
                    missing += 1
                elif v != str(n):
                    wrong += 1
    return len(acked), missing, wrong


# ---------------------------------------------------------------------------------------------
# One trial


def proxy_config(listen, metrics, masters, replicas, log_level):
    lines = [
        "# Generated by benches/failover/run.py: default [health] and [mirror] settings.",
        f'listen = "127.0.0.1:{listen}"',
        f'metrics_listen = "127.0.0.1:{metrics}"',
        'admin_listen = "off"',
        'admin_socket = "off"',
        "shutdown_grace_ms = 0",
        "",
        "[log]",
        f'level = "{log_level}"',
        'format = "text"',
        "",
    ]
    for i, ((lo, hi), m, r) in enumerate(zip(SHARD_SLOTS, masters, replicas)):
        lines += [
            "[[shard]]",
            f'name = "s{i + 1}"',
            f'master = "127.0.0.1:{m}"',
            f'replicas = ["127.0.0.1:{r}"]',
            f'slots = ["{lo}-{hi}"]',
            "",
        ]
    return "\n".join(lines)


FAILOVER_LINE = re.compile(
    r"failover: shard (\S+): (\S+) promoted, old master (\S+) fenced; master failing for (\d+) ms, "
    r"promotion took (\d+) ms")


def shard_masters(port):
    """shard name -> master address, and the epoch, from the proxy's `INFO redshard`."""
    text = call(port, "INFO", "redshard") or ""
    masters, epoch = {}, None
    for line in text.splitlines():
        if line.startswith("topology_epoch:"):
            epoch = int(line.split(":", 1)[1])
        elif re.match(r"route\d+:", line):  # routeN:name=...,master=...,lanes=N
            fields = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].split(","))
            masters[fields["name"]] = fields["master"]
    return masters, epoch


def trial(number, args, tools, tags, base_workdir):
    workdir = tempfile.mkdtemp(prefix=f"trial-{number:02d}-", dir=base_workdir)
    procs = Procs(workdir)
    try:
        return run_trial(number, args, tools, tags, workdir, procs)
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run_trial(number, args, tools, tags, workdir, procs):
    m1, r1, m2, r2, listen, metrics = free_ports(6)
    masters, replicas = [m1, m2], [r1, r2]
    redis = {}
    for role, port in (("master-s1", m1), ("replica-s1", r1), ("master-s2", m2), ("replica-s2", r2)):
        d = os.path.join(workdir, f"redis-{port}")
        os.mkdir(d)
        redis[role] = procs.start(f"redis-{role}", [
            tools["redis-server"], "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", d,
        ])
    for role, proc in redis.items():
        port = {"master-s1": m1, "replica-s1": r1, "master-s2": m2, "replica-s2": r2}[role]
        wait_for(f"redis-server {role} :{port}", lambda p=port: (call(p, "PING", timeout=1) == "+PONG", None),
                 procs, 15)

    conf = os.path.join(workdir, "redshard.toml")
    with open(conf, "w") as f:
        f.write(proxy_config(listen, metrics, masters, replicas, args.log_level))
    if number == 1:
        keys = [f"{{{tags[0]}}}:1", f"{{{tags[1]}}}:1"]
        lines = check_slots_with_admin(tools.get("redshard-admin"), conf, keys)
        if lines:
            print("key slots (redshard-admin keyslot --config): " + "; ".join(lines), file=sys.stderr)
    started = time.monotonic()
    procs.start("redshard", [tools["redshard"], "--config", conf])

    def ready():
        status, body = http_status(metrics, "/readyz")
        return status == 200, f"/readyz {status}: {body.strip()[:200]}"

    wait_for("redshard /readyz", ready, procs, 15)
    wait_for("SET through redshard", lambda: (call(listen, "SET", "ready", "1", timeout=1) == "+OK", None),
             procs, 15)
    ready_s = time.monotonic() - started
    before_masters, epoch_before = shard_masters(listen)

    interval = args.interval_ms / 1000
    w1 = Writer(listen, tags[0], interval, args.give_up_s + 5)
    w2 = Writer(listen, tags[1], interval, args.give_up_s + 5)
    w1.start()
    w2.start()
    try:
        time.sleep(args.before_ms / 1000)
        procs.check_alive()
        victim = redis["master-s1"]
        gone = {}
        reaper = threading.Thread(target=lambda: (victim.wait(), gone.setdefault("t", time.monotonic())),
                                  daemon=True)
        os.kill(victim.pid, signal.SIGKILL)  # kill -9
        # Taken after the signal was sent: a SET sent from now on cannot be answered by the
        # old master (a SIGKILLed process runs no more user code).
        t_kill = time.monotonic()
        reaper.start()
        w1.watch(t_kill)
        deadline = t_kill + args.give_up_s
        while w1.first_ok() is None and time.monotonic() < deadline:
            procs.check_alive("redshard", "redis-replica-s1", "redis-master-s2", "redis-replica-s2")
            time.sleep(0.005)
        time.sleep(args.after_ms / 1000)
    finally:
        w1.stop.set()
        w2.stop.set()
        w1.join(args.give_up_s + 10)
        w2.join(args.give_up_s + 10)
    procs.check_alive("redshard")
    reaper.join(5)

    first = w1.first_ok()
    recovery_ms = (first[2] - t_kill) * 1000 if first else None
    after_kill = [r for r in w1.records if r[1] >= t_kill or r[2] >= t_kill]
    errors = [r for r in after_kill if not r[3]]
    # The proxy's error says which: "backend ADDR unavailable: ..." answers a request the lane
    # could not send because it cannot connect (it never reached any node), the others one that
    # was written to the old master's connection or queued on it when it broke (outcome unknown).
    never_sent = [r for r in errors if " unavailable: " in (r[4] or "")]
    before_ok = sum(1 for r in w1.records if r[3] and r[2] < t_kill)
    w2_errors = [r for r in w2.records if not r[3]]
    w2_window = [r for r in w2.records if r[2] >= t_kill - 0.1]
    w2_max_ms = max(((r[2] - r[1]) * 1000 for r in w2_window), default=None)
    checked, missing, wrong = check_acked(listen, tags[0], w1.records)
    after_masters, epoch_after = shard_masters(listen)
    m = FAILOVER_LINE.search(procs.log_of("redshard"))
    result = {
        "trial": number,
        "recovery_ms": None if recovery_ms is None else round(recovery_ms, 1),
        "recovered": recovery_ms is not None,
        # When the killed process was gone (reaped by wait(): its sockets are closed by then).
        "master_gone_ms": round((gone["t"] - t_kill) * 1000, 1) if "t" in gone else None,
        "proxy_ready_s": round(ready_s, 2),
        "s1_acked_before_kill": before_ok,
        "s1_requests_after_kill": len(after_kill),
        "s1_errors_after_kill": len(errors),
        # In flight: sent before the kill, answered with an error after it (outcome unknown).
        "s1_errors_outcome_unknown": len(errors) - len(never_sent),
        # Sent after the kill: the proxy had not sent them to the dead master yet.
        "s1_errors_never_sent": len(never_sent),
        "s1_errors": [
            {"sent_ms_after_kill": round((r[1] - t_kill) * 1000, 1),
             "answered_ms_after_kill": round((r[2] - t_kill) * 1000, 1),
             "error": r[4]}
            for r in errors
        ],
        "s1_error_kinds": sorted({re.sub(r"\d+", "N", r[4] or "")[:160] for r in errors}),
        "s1_acked_checked": checked,
        "s1_acked_missing": missing,
        "s1_acked_wrong": wrong,
        "s2_requests": len(w2.records),
        "s2_errors": len(w2_errors),
        "s2_max_latency_ms_around_kill": None if w2_max_ms is None else round(w2_max_ms, 1),
        "s1_master_before": before_masters.get("s1"),
        "s1_master_after": after_masters.get("s1"),
        "promoted_replica": after_masters.get("s1") == f"127.0.0.1:{r1}",
        "epoch_before_after": [epoch_before, epoch_after],
        "proxy_failing_ms": int(m.group(4)) if m else None,
        "proxy_promotion_ms": int(m.group(5)) if m else None,
    }
    return result


# ---------------------------------------------------------------------------------------------
# Report


def nearest_rank(values, q):
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def summarize(trials):
    rec = [t["recovery_ms"] for t in trials if t["recovered"]]
    failed = len(trials) - len(rec)
    s = {
        "trials": len(trials),
        "recovered": len(rec),
        "not_recovered": failed,
        "p50_ms": statistics.median(rec) if rec else None,
        "p90_ms": nearest_rank(rec, 0.9) if rec else None,
        "max_ms": max(rec) if rec else None,
        "min_ms": min(rec) if rec else None,
        "mean_ms": round(statistics.fmean(rec), 1) if rec else None,
        "acked_writes_checked": sum(t["s1_acked_checked"] for t in trials),
        "acked_writes_lost": sum(t["s1_acked_missing"] + t["s1_acked_wrong"] for t in trials),
        "s1_errors_after_kill": sum(t["s1_errors_after_kill"] for t in trials),
        "s1_errors_outcome_unknown": sum(t["s1_errors_outcome_unknown"] for t in trials),
        "s1_errors_never_sent": sum(t["s1_errors_never_sent"] for t in trials),
        "trials_with_errors_never_sent": sum(1 for t in trials if t["s1_errors_never_sent"]),
        "s2_errors": sum(t["s2_errors"] for t in trials),
        "promoted_every_time": all(t["promoted_replica"] for t in trials),
    }
    # A trial that never recovered counts as infinitely slow for the targets.
    s["target_p50"] = bool(rec) and failed * 2 < len(trials) and statistics.median(
        rec + [math.inf] * failed) <= TARGET_P50_S * 1000
    s["target_max"] = bool(rec) and failed == 0 and max(rec) <= TARGET_MAX_S * 1000
    return s


def short_error(e):
    """An error reply without the node's address, for the table."""
    return re.sub(r"127\.0\.0\.1:\d+ ", "", e or "")[:80]


def fmt_ms(v):
    return "—" if v is None else f"{v:.0f}"


def markdown(args, summary, trials, load, versions, now):
    out = []
    out.append(f"## Failover benchmark results ({now:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
               f"{summary['trials']} trials; load average {load[0]:.1f} before, {load[1]:.1f} after)\n")
    out.append(f"`kill -9` of shard s1's master while one client writes to s1 and one to s2 through "
               f"redshard (a `SET` every {args.interval_ms:g} ms each, waiting for each reply); "
               "2 shards of one master + one replica, default settings (sync mirroring, probes every "
               "100 ms, down after 1.5 s or after 0.5 s of refused connections). Recovery = from the "
               "kill to the +OK of the first SET sent after it. p90 is the nearest rank. s1 errors: "
               "*outcome unknown* = the request was on the old master's connection when it broke; "
               "*never sent* = answered `-ERR backend ... unavailable` by a lane that could not "
               "connect (the request reached no node; by the design it should have waited for the "
               "failover).\n")
    out.append("| trials | recovered | p50 | p90 | max | min | target p50 ≤ 1 s | target max ≤ 2 s "
               "| s1 errors: outcome unknown / never sent (`unavailable`) | acknowledged s1 writes lost "
               "| errors on s2 |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    out.append(
        f"| {summary['trials']} | {summary['recovered']} | {fmt_ms(summary['p50_ms'])} ms "
        f"| {fmt_ms(summary['p90_ms'])} ms | {fmt_ms(summary['max_ms'])} ms | {fmt_ms(summary['min_ms'])} ms "
        f"| {'PASS' if summary['target_p50'] else 'FAIL'} | {'PASS' if summary['target_max'] else 'FAIL'} "
        f"| {summary['s1_errors_outcome_unknown']} / {summary['s1_errors_never_sent']} "
        f"(in {summary['trials_with_errors_never_sent']} trials) | {summary['acked_writes_lost']} of "
        f"{summary['acked_writes_checked']} | {summary['s2_errors']} |"
    )
    out.append("\nEach trial:\n")
    out.append("| trial | recovery ms | killed process gone after ms | proxy log: master failing / promotion ms "
               "| s1 errors (ms after the kill the SET was sent: error) "
               "| s1 acked writes read back | s2 errors / max latency ms | s1 master after |")
    out.append("|---|---|---|---|---|---|---|---|")
    for t in trials:
        rec = fmt_ms(t["recovery_ms"]) if t["recovered"] else f"> {args.give_up_s * 1000:.0f} (not recovered)"
        proxy = ("—" if t["proxy_failing_ms"] is None
                 else f"{t['proxy_failing_ms']} / {t['proxy_promotion_ms']}")
        acked = f"{t['s1_acked_checked'] - t['s1_acked_missing'] - t['s1_acked_wrong']}/{t['s1_acked_checked']}"
        errs = "; ".join(f"{e['sent_ms_after_kill']:+.1f}: {short_error(e['error'])}" for e in t["s1_errors"][:3])
        if len(t["s1_errors"]) > 3:
            errs += f"; ... ({len(t['s1_errors'])} in all)"
        out.append(
            f"| {t['trial']} | {rec} | {'—' if t['master_gone_ms'] is None else format(t['master_gone_ms'], '.1f')} | {proxy} | {errs or 'none'} | {acked} "
            f"| {t['s2_errors']} / {fmt_ms(t['s2_max_latency_ms_around_kill'])} "
            f"| {'replica promoted' if t['promoted_replica'] else t['s1_master_after']} |"
        )
    out.append(f"\nredis-server: {versions.get('redis-server', '?')}; redshard: {versions.get('redshard', '?')}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Main


def find_binary(name):
    return shutil.which(name)


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: benches/failover/run.py --trials 20 --json target/failover-bench.json",
    )
    p.add_argument("--trials", type=int, default=20, help="trials, each with fresh processes (default 20)")
    p.add_argument("--before-ms", type=float, default=1000,
                   help="writing before the kill, ms (default 1000)")
    p.add_argument("--after-ms", type=float, default=300,
                   help="writing after the first successful SET, ms (default 300)")
    p.add_argument("--interval-ms", type=float, default=1.0,
                   help="time between two SETs of one writer when the reply came sooner (default 1)")
    p.add_argument("--give-up-s", type=float, default=10.0,
                   help="a trial whose writes are not accepted again this long after the kill "
                        "counts as not recovered (default 10)")
    p.add_argument("--json", default=os.path.join("target", "failover-bench.json"),
                   help="machine-readable output (default target/failover-bench.json, relative to the repo)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    p.add_argument("--redshard", help="redshard binary (default $CARGO_TARGET_DIR/release/redshard)")
    p.add_argument("--log-level", default="info",
                   help="the proxy's [log] level, e.g. debug to see every probe (default info: "
                        "the failover line this report reads is logged at info)")
    p.add_argument("--keep", action="store_true", help="keep the work directories (configs, logs)")
    args = p.parse_args()
    if args.trials < 1 or args.interval_ms <= 0 or args.give_up_s <= 0 or args.before_ms < 0:
        p.error("--trials ≥ 1, --interval-ms and --give-up-s > 0, --before-ms ≥ 0")
    return args


def main():
    args = parse_args()
    return run_in_workdir("redshard-failover-", args.keep, lambda workdir: run(args, workdir))


def run(args, workdir):
    redis_server = find_binary("redis-server")
    if not redis_server:
        raise BenchError("redis-server is needed (Debian: apt-get install redis-server)")
    if not args.no_build and not args.redshard:
        build_release(["redshard-proxy", "redshard-admin"])
    redshard = args.redshard or os.path.join(cargo_target_dir(), "release", "redshard")
    if not os.access(redshard, os.X_OK):
        raise BenchError(f"redshard binary not found at {redshard} (build it, or pass --redshard PATH)")
    admin = os.path.join(os.path.dirname(redshard), "redshard-admin")
    tools = {"redis-server": redis_server, "redshard": redshard,
             "redshard-admin": admin if os.access(admin, os.X_OK) else None}
    versions = {
        "redis-server": subprocess.run([redis_server, "--version"], capture_output=True, text=True,
                                       timeout=10).stdout.strip(),
        "redshard": subprocess.run([redshard, "--version"], capture_output=True, text=True,
                                   timeout=10).stdout.strip(),
    }
    tags = [tag_in(*SHARD_SLOTS[0], "fo-s1-"), tag_in(*SHARD_SLOTS[1], "fo-s2-")]
    print(f"writer keys: {{{tags[0]}}}:N (slot {key_slot('{' + tags[0] + '}')}, shard s1), "
          f"{{{tags[1]}}}:N (slot {key_slot('{' + tags[1] + '}')}, shard s2)", file=sys.stderr)

    load_before = loadavg()
    trials = []
    for n in range(1, args.trials + 1):
        t = trial(n, args, tools, tags, workdir)
        trials.append(t)
        rec = f"{t['recovery_ms']:.0f} ms" if t["recovered"] else "NOT RECOVERED"
        print(f"trial {n:2}/{args.trials}: writes accepted again after {rec} (killed process gone after "
              f"{t['master_gone_ms']} ms); proxy: failing "
              f"{t['proxy_failing_ms']} ms, promotion {t['proxy_promotion_ms']} ms; s1 errors "
              f"{t['s1_errors_outcome_unknown']} outcome unknown, {t['s1_errors_never_sent']} never sent "
              f"{t['s1_error_kinds'] or ''}; acked "
              f"{t['s1_acked_checked'] - t['s1_acked_missing'] - t['s1_acked_wrong']}/{t['s1_acked_checked']} "
              f"read back; s2 errors {t['s2_errors']}, max {t['s2_max_latency_ms_around_kill']} ms",
              file=sys.stderr)
    load = [load_before, loadavg()]
    summary = summarize(trials)
    now = datetime.datetime.now(datetime.timezone.utc)
    print(markdown(args, summary, trials, load, versions, now))

    json_path = args.json if os.path.isabs(args.json) else os.path.join(REPO, args.json)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    doc = {
        "date_utc": now.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m_before_after": load},
        "versions": versions,
        "parameters": {
            "trials": args.trials, "before_ms": args.before_ms, "after_ms": args.after_ms,
            "interval_ms": args.interval_ms, "give_up_s": args.give_up_s,
            "shards": [f"{lo}-{hi}" for lo, hi in SHARD_SLOTS], "writer_tags": tags,
            "settings": "defaults (no [health] or [mirror] section)",
        },
        "targets": {"p50_ms_at_most": TARGET_P50_S * 1000, "max_ms_at_most": TARGET_MAX_S * 1000},
        "summary": summary,
        "trials": trials,
    }
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"\nJSON: {json_path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
