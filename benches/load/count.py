#!/usr/bin/env python3
"""Load-independent costs per request of redshard and predixy: user-space instructions
(callgrind) and syscalls (perf's syscall tracepoints), for A/B comparisons on a busy machine.

For each proxy it starts 3 plain redis-server masters on free 127.0.0.1 ports and the proxy in
front of them, configured exactly as benches/load/run.py configures it (one worker thread, or
`--threads N`), prefills the keyspace through it, then runs each case with redis-benchmark
(`-c 50 -d 100 -r 100000`, or `-c N` with `--clients N`; `-P 1` or `-P 16`, `-n N`): set_p1,
get_p1, set_p16, get_p16 (the default) and mset_p1, mget_p1 (10 random keys per command, as
run.py sends them):

  ir    the proxy runs under `valgrind --tool=callgrind`; its counters are zeroed before the
        case and dumped after it (callgrind_control), so the count is the case's alone:
        instructions per request = the dump's total / N. Every thread of the process counts.
        With `--cache-sim`, also simulated L1/LL data-cache misses per request: what grows
        with many connections (each one's state is touched once per request) when the
        instructions do not.
  sys   the proxy runs natively; `perf stat -p PID` counts its syscalls (all, and read/write,
        recv/send, epoll_wait, futex each), context switches, CPU migrations and task-clock
        during the case,
        and /proc/PID/stat its utime and stime: per request, each divided by N.
  load  the proxy runs natively and the cases run with nothing measured: the training run of
        a profile-guided build (scripts/build-pgo.sh).
  fds   the proxy runs natively; `perf record` of its read and write syscalls with their file
        descriptors, split between its connections to the nodes (the sockets whose peer is a
        master's port, open before the case) and the rest (the clients): reads and writes
        per request on each side, e.g. how many writes a pipeline's replies take.

Instruction and syscall counts do not depend on how busy the machine is, but they do depend
on how requests batch (a proxy slowed down by callgrind sees bigger batches): compare builds
and proxies with the same command, never these numbers with the load benchmark's. Under
callgrind redshard's SLOWLOG would record every request (they all take longer than 10 ms),
so its configuration here sets `[slowlog] log_slower_than_us = -1`.

  benches/load/count.py ir target/release/redshard                    # redshard, 4 cases
  benches/load/count.py sys target/release/redshard --cases set_p1 -n 300000
  benches/load/count.py ir ~/src/predixy/src/predixy --predixy       # predixy (see README)
  benches/load/count.py sys target/release/redshard --clients 500 --threads 2
  benches/load/count.py fds target/release/redshard --cases set_p16

Needs redis-server, redis-benchmark, valgrind (ir) and perf (sys, fds). Only 127.0.0.1 is
contacted; everything started is stopped on exit.
"""

import argparse
import collections
import glob
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BenchError, Procs, run_in_workdir  # noqa: E402
from run import MULTI_KEYS, VALUE_SIZE, free_port, predixy_config, raise_nofile, redshard_config, start_redis, wait_for_ping  # noqa: E402

# case: (redis-benchmark `-t` test, or the command's arguments as run.py gives them; pipeline)
_MULTI = [a for _ in range(MULTI_KEYS) for a in ("key:__rand_int__", "v" * VALUE_SIZE)]
CASES = {"set_p1": ("set", 1), "get_p1": ("get", 1), "set_p16": ("set", 16), "get_p16": ("get", 16),
         "mset_p1": (["mset"] + _MULTI, 1), "mget_p1": (["mget"] + ["key:__rand_int__"] * MULTI_KEYS, 1)}
DEFAULT_CASES = ["set_p1", "get_p1", "set_p16", "get_p16"]
SYSCALLS = ["read", "recvfrom", "write", "writev", "sendto", "sendmsg", "epoll_wait", "futex"]
FD_SYSCALLS = ["read", "recvfrom", "readv", "recvmsg", "write", "writev", "sendto", "sendmsg"]


def bench_argv(port, case, n, clients):
    test, pipeline = CASES[case]
    command = ["-t", test] if isinstance(test, str) else test
    return ["redis-benchmark", "-p", str(port), "-n", str(n), "-r", "100000", "-d", "100",
            "-c", str(clients), "-P", str(pipeline), "-q"] + command


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


def count_ir(proxy, port, case, n, clients, workdir, keep):
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, **quiet)
    subprocess.run(bench_argv(port, case, n, clients), check=True, **quiet)
    subprocess.run(["callgrind_control", "-d", case, str(proxy.pid)], check=True, **quiet)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for path in glob.glob(os.path.join(workdir, f"callgrind.out.{proxy.pid}*")):
            with open(path) as f:
                text = f.read()
            # The whole line: "dump set_p1" is also the start of "dump set_p16".
            if re.search(rf"^desc: Trigger: dump {re.escape(case)}$", text, re.M):
                total = re.search(r"^(?:summary|totals):((?: \d+)+)", text, re.M)
                events = re.search(r"^events:((?: \w+)+)", text, re.M)
                if total and events:
                    # Callgrind leaves trailing zero counts out.
                    counts = collections.defaultdict(int, zip(events.group(1).split(),
                                                              map(int, total.group(1).split())))
                    where = f" ({path})" if keep else ""
                    line = f"{counts['Ir'] / n:.0f} instructions/request"
                    if "D1mr" in counts:  # --cache-sim
                        d1 = counts["D1mr"] + counts["D1mw"]
                        ll = counts["DLmr"] + counts["DLmw"]
                        line += (f" {(counts['Dr'] + counts['Dw']) / n:.0f} data refs, {d1 / n:.1f} D1 misses, "
                                 f"{ll / n:.2f} LL data misses, {counts['I1mr'] / n:.1f} I1 misses/request")
                    return line + where
        time.sleep(0.2)
    raise BenchError(f"no callgrind dump for {case}")


def bench_under_perf(perf_argv, port, case, n, clients, **popen):
    """Runs the case with redis-benchmark while `perf_argv` (a perf command attached to the
    proxy) records; returns redis-benchmark's last line."""
    perf = subprocess.Popen(perf_argv, **popen)
    time.sleep(0.5)  # perf attached
    rate = bench_rate(port, case, n, clients)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    return rate


def bench_rate(port, case, n, clients):
    """Runs the case with redis-benchmark; returns its last line's numbers."""
    bench = subprocess.run(bench_argv(port, case, n, clients), check=True, capture_output=True, text=True)
    last = bench.stdout.strip().splitlines()[-1].strip()
    # A custom command's line starts with the whole command: keep the numbers.
    rate = re.search(r"[\d.]+ requests per second.*", last)
    return rate.group(0) if rate else last


def count_sys(proxy, port, case, n, clients, workdir, _keep):
    out = os.path.join(workdir, f"perf-{case}.txt")
    events = ",".join(["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{s}" for s in SYSCALLS]
                      + ["context-switches", "cpu-migrations", "task-clock"])
    before = cpu_ticks(proxy.pid)
    bench = bench_under_perf(["perf", "stat", "-x", ",", "-e", events, "-p", str(proxy.pid), "-o", out],
                             port, case, n, clients)
    after = cpu_ticks(proxy.pid)
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    parts = []
    with open(out) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) < 3 or not fields[0][:1].isdigit():
                continue
            name = fields[2].replace("raw_syscalls:sys_enter", "syscalls").replace("syscalls:sys_enter_", "")
            value = float(fields[0]) / n
            if name == "task-clock":
                parts.append(f"task-clock={value * 1000:.2f}us")  # perf reports msec
            elif value:
                parts.append(f"{name}={value:.3f}")
    parts.append(f"utime={(after[0] - before[0]) * tick_us / n:.2f}us")
    parts.append(f"stime={(after[1] - before[1]) * tick_us / n:.2f}us")
    return " ".join(parts) + f"  [{bench}]"


def run_load(_proxy, port, case, n, clients, _workdir, _keep):
    """The case with nothing measured but redis-benchmark's own rate (`load`: a profile-guided
    build's training run, see scripts/build-pgo.sh)."""
    return f"[{bench_rate(port, case, n, clients)}]"


def node_fds(pid, masters):
    """The proxy's file descriptors that are TCP connections to one of `masters` (ports)."""
    inodes = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if remote_port in masters:
                        inodes[fields[9]] = remote_port
        except FileNotFoundError:
            continue
    fds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match and match.group(1) in inodes:
            fds.add(int(fd))
    return fds


def count_fds(masters, proxy, port, case, n, clients, workdir, _keep):
    nodes = node_fds(proxy.pid, set(masters))
    if not nodes:
        raise BenchError("no connection from the proxy to a master found in /proc")
    out = os.path.join(workdir, f"perf-fds-{case}.data")
    events = [arg for s in FD_SYSCALLS for arg in ("-e", f"syscalls:sys_enter_{s}")]
    bench = bench_under_perf(["perf", "record", "-q", *events, "-p", str(proxy.pid), "-o", out],
                             port, case, n, clients, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    script = subprocess.run(["perf", "script", "-i", out, "-F", "event,trace"], check=True,
                            capture_output=True, text=True).stdout
    counts = collections.Counter()
    for line in script.splitlines():
        match = re.search(r"sys_enter_(\w+):\s+fd: (0x[0-9a-f]+)", line)
        if match:
            kind = "write" if match.group(1) in ("write", "writev", "sendto", "sendmsg") else "read"
            side = "nodes" if int(match.group(2), 16) in nodes else "clients"
            counts[(side, kind)] += 1
    parts = [f"{side}_{kind}s={counts[(side, kind)] / n:.4f}"
             for side in ("clients", "nodes") for kind in ("read", "write")]
    return " ".join(parts) + f" (node connections: {len(nodes)})  [{bench}]"


def run(args, workdir):
    raise_nofile(args.clients + 1024)  # redis-benchmark's and the proxy's connections
    procs = Procs(workdir)
    try:
        masters = [free_port() for _ in range(3)]
        start_redis(procs, workdir, "redis-server", masters, "master", args.clients + 1000)
        port = free_port()
        conf = os.path.join(workdir, "proxy.conf")
        if args.predixy:
            with open(conf, "w") as f:
                f.write(predixy_config(port, masters, args.threads))
            argv = [args.binary, conf]
        else:
            with open(conf, "w") as f:
                lanes = f"\n[backend]\nlanes = {args.lanes}\n" if args.lanes is not None else ""
                f.write(redshard_config(port, masters, threads=args.threads)
                        + "\n[slowlog]\nlog_slower_than_us = -1\n" + lanes)
            argv = [args.binary, "--config", conf]
        if args.mode == "ir":
            cache = ["--cache-sim=yes", *(f"--{level}={spec}" for level, spec in
                                          zip(("D1", "I1", "LL"), args.cache_sim.split("/")))] \
                if args.cache_sim else []
            argv = ["valgrind", "--tool=callgrind", "--dump-instr=no", *cache,
                    f"--callgrind-out-file={workdir}/callgrind.out.%p"] + argv
        proxy = procs.start("proxy", argv)
        wait_for_ping("proxy", port, proxy, procs, timeout=120)
        # The prefill, retried: predixy under callgrind (cache simulation above all) can be
        # slower than its 1 s ServerTimeout while its backend connections come up.
        for attempt in range(3):
            prefill = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", "100000",
                                      "-r", "100000", "-d", "100", "-c", "50", "-P", "16", "-q"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if prefill.returncode == 0:
                break
        else:
            raise BenchError(f"the prefill through the proxy failed 3 times (exit {prefill.returncode})")
        name = "predixy" if args.predixy else "redshard"
        for case in args.cases.split(","):
            if case not in CASES:
                raise BenchError(f"unknown case {case!r} (one of {', '.join(CASES)})")
            n = args.n or (200_000 if CASES[case][1] > 1 else 50_000)
            count = {"ir": count_ir, "sys": count_sys, "load": run_load,
                     "fds": lambda *a: count_fds(masters, *a)}[args.mode]
            result = count(proxy, port, case, n, args.clients, workdir, args.keep)
            print(f"{name} {case} n={n} c={args.clients} threads={args.threads}: {result}", flush=True)
    finally:
        procs.stop_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["ir", "sys", "fds", "load"],
                        help="instructions (callgrind), syscalls (perf), reads and writes per side (perf), "
                             "or only the load (no measurement: a training run)")
    parser.add_argument("binary", help="the proxy's executable")
    parser.add_argument("--predixy", action="store_true", help="the binary is predixy, not redshard")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("-n", type=int, default=0, help="requests per case (default 50000 at -P 1, 200000 at -P 16)")
    parser.add_argument("--clients", type=int, default=50,
                        help="redis-benchmark's -c, connections per case (default 50, as run.py)")
    parser.add_argument("--threads", type=int, default=1,
                        help="worker threads of redshard (`threads`) or predixy (`WorkerThreads`), "
                             "as run.py's --threads (default 1)")
    parser.add_argument("--lanes", type=int, help="redshard's `[backend] lanes` (default: its default, "
                                                   "one lane per worker thread)")
    parser.add_argument("--cache-sim", metavar="D1/I1/LL", nargs="?", const="49152,12,64/32768,8,64/2097152,16,64",
                        help="ir: also simulate the caches (callgrind --cache-sim=yes) and report data "
                             "references and D1/LL data misses per request; sizes as valgrind's "
                             "SIZE,ASSOC,LINE for D1/I1/LL (default: 48 KiB L1d, 32 KiB L1i, 2 MiB LL "
                             "standing for one core's L2: the shared L3 would hide every miss)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (callgrind dumps)")
    args = parser.parse_args()
    if args.clients < 1 or args.threads < 1:
        parser.error("--clients and --threads must be >= 1")
    return run_in_workdir("redshard-count-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
