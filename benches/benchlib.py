"""What the benchmark scripts share: building redshard, a work directory and signal handling
around the whole run, child processes that are always stopped, a minimal RESP2 client, the
machine's load. Imported by benches/load/run.py and benches/failover/run.py."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


class BenchError(Exception):
    """Something the benchmark cannot go on without (a missing binary, a server that died)."""


def cargo_target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")


def build_release(packages):
    """`cargo build --release` of `packages` in the repository."""
    argv = ["cargo", "build", "--release"] + [a for p in packages for a in ("-p", p)]
    print(f"building redshard ({' '.join(argv)}) ...", file=sys.stderr)
    try:
        subprocess.run(argv, cwd=REPO, check=True, timeout=1800)
    except FileNotFoundError:
        raise BenchError("cargo not found; build redshard yourself and pass --no-build --redshard PATH")
    except subprocess.CalledProcessError as e:
        raise BenchError(f"cargo build failed with status {e.returncode}")
    except subprocess.TimeoutExpired:
        raise BenchError("cargo build took more than 30 minutes")


def run_in_workdir(prefix, keep, body):
    """Runs `body(workdir)` in a new temporary directory, with SIGTERM, SIGHUP and SIGINT (also
    when started in the background) turned into KeyboardInterrupt so every `finally` runs.
    The directory is kept with `keep` or when the run failed (then its path is printed), else
    removed. Returns the exit status: 1 when the run failed or was interrupted, else 0."""

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    workdir = tempfile.mkdtemp(prefix=prefix)
    crashed = False
    try:
        body(workdir)
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        crashed = True
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        crashed = True
    finally:
        if keep or (crashed and os.listdir(workdir)):
            print(f"work directory (configs, logs): {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if crashed else 0


class Procs:
    """Every child process a benchmark starts, stopped whatever happens."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.children = []  # (name, Popen, log path)

    def start(self, name, argv, cwd=None):
        log_path = os.path.join(self.workdir, name + ".log")
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd
            )
        finally:
            log.close()
        self.children.append((name, proc, log_path))
        return proc

    def log_of(self, name):
        for n, _, path in self.children:
            if n == name:
                with open(path, "rb") as f:
                    return f.read().decode("utf-8", "replace")
        return ""

    def check_alive(self, *names):
        """Raise when a server we started (of `names`, or any) has exited: every number after
        that is meaningless."""
        for name, proc, log_path in self.children:
            if (not names or name in names) and proc.poll() is not None:
                raise BenchError(
                    f"{name} (pid {proc.pid}) exited with status {proc.returncode}; "
                    f"last log lines:\n{tail(log_path)}"
                )

    def stop_all(self):
        for _, proc, _ in self.children:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for _, proc, _ in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.children = []


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            data = f.read()[-8192:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + l for l in data.splitlines()[-lines:])


def resp_command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_reply(f):
    """One RESP2 reply from a buffered socket file; status, error and integer replies come back
    as their line ('+OK', '-ERR ...', ':1')."""
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed by the proxy")
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"truncated reply line {line!r}")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-", b":"):
        return (kind + rest).decode("utf-8", "replace")
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise ConnectionError(f"unexpected reply line {line!r}")


def call(port, *args, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(resp_command(*args))
        return read_reply(s.makefile("rb"))


def loadavg():
    """The 1-minute load average: how busy the machine was besides this benchmark."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def crc16_xmodem(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def key_slot(key):
    """Redis Cluster's slot of a key: CRC16/XMODEM of the hash tag when there is a non-empty
    one (between the first '{' and the next '}'), else of the whole key, mod 16384."""
    b = key.encode()
    start = b.find(b"{")
    if start >= 0:
        end = b.find(b"}", start + 1)
        if end > start + 1:
            b = b[start + 1 : end]
    return crc16_xmodem(b) % 16384
