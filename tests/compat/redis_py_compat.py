#!/usr/bin/env python3
"""redis-py, unmodified, with its default connect path (redis-py 8 sends HELLO 3 first),
against redshard. Usage: redis_py_compat.py PORT. Exits non-zero with the failing step."""

import sys
import threading
import time

import redis

port = int(sys.argv[1])


def run(protocol, prefix):
    """Every feature once; `prefix` keeps the two runs' keys apart."""
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, protocol=protocol)
    print("redis-py", redis.__version__, "protocol", protocol or "default")

    # Strings and hashes.
    assert r.set(f"{prefix}:s", "v") is True
    assert r.get(f"{prefix}:s") == "v"
    assert r.incr(f"{prefix}:n") == 1
    r.hset(f"{prefix}:h", mapping={"a": "1", "b": "2"})
    assert r.hgetall(f"{prefix}:h") == {"a": "1", "b": "2"}
    assert r.mset({f"{prefix}:m{i}": str(i) for i in range(20)}) is True
    assert r.mget([f"{prefix}:m{i}" for i in range(20)]) == [str(i) for i in range(20)]

    # Lists with a blocking pop released by another connection.
    def push_later():
        time.sleep(0.2)
        redis.Redis(host="127.0.0.1", port=port).rpush(f"{prefix}:jobs", "j1")

    threading.Thread(target=push_later).start()
    started = time.time()
    popped = r.blpop([f"{prefix}:jobs"], timeout=3)
    assert popped is not None and list(popped) == [f"{prefix}:jobs", "j1"], (popped, time.time() - started)

    # A pipeline (no transaction) across shards.
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(f"{prefix}:p{i}", i)
    for i in range(100):
        p.get(f"{prefix}:p{i}")
    out = p.execute()
    assert out[:100] == [True] * 100 and out[100:] == [str(i) for i in range(100)], out[:5]

    # A transaction with WATCH (keys in one slot).
    with r.pipeline() as tx:
        tx.watch(f"{{{prefix}}}balance")
        tx.multi()
        tx.incrby(f"{{{prefix}}}balance", 5)
        tx.get(f"{{{prefix}}}balance")
        assert tx.execute() == [5, "5"]

    # A script: EVALSHA works on whichever master the keys land.
    incr_by = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert incr_by(keys=[f"{prefix}:script"], args=[3]) == 3
    assert incr_by(keys=[f"{prefix}:other-script-key"], args=[4]) == 4

    # Pub/sub.
    ps = r.pubsub()
    ps.subscribe(f"{prefix}:chan")
    deadline = time.time() + 5
    msg = None
    while time.time() < deadline:
        msg = ps.get_message(timeout=1)
        if msg and msg["type"] == "subscribe":
            break
    assert msg and msg["type"] == "subscribe", msg
    assert r.publish(f"{prefix}:chan", "hello") == 1
    while time.time() < deadline:
        msg = ps.get_message(timeout=1)
        if msg and msg["type"] == "message":
            break
    assert msg and msg["data"] == "hello", msg
    ps.close()

    # A full SCAN.
    keys = set(r.scan_iter(match=f"{prefix}:p*", count=10))
    assert keys == {f"{prefix}:p{i}" for i in range(100)}, len(keys)


# The library's default protocol, then RESP3 explicitly (HELLO 3).
run(None, "py")
run(3, "py3")
print("redis-py compatibility: OK")
