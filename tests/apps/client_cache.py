"""redis-py's client-side cache (RESP3, CLIENT TRACKING) through redshard, unmodified.

Usage: client_cache.py PORT KEY...  (keys on different shards). Values read through a
cached client are served from its cache, and dropped from it when another connection
changes them; the script prints "client cache ok" at the end.

redis-py enables its cache only for servers that say they are Redis 7.4 or later (a
policy, not a protocol need: CLIENT TRACKING is Redis 6's); redshard says 7.0, the version of
its command table, so the script lowers that bar and changes nothing else.
"""

import sys
import time

import redis
from redis.cache import CacheConfig
from redis.connection import CacheProxyConnection

CacheProxyConnection.MIN_ALLOWED_VERSION = "7.0.0"

port = int(sys.argv[1])
keys = sys.argv[2:]

cached = redis.Redis(port=port, protocol=3, cache_config=CacheConfig())
plain = redis.Redis(port=port)
cache = cached.get_cache()


def eventually(check, what):
    """Waits (10 s at most) for check() to hold: the invalidation travels on its own."""
    deadline = time.monotonic() + 10
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


for key in keys:
    plain.set(key, "v1")
for key in keys:
    assert cached.get(key) == b"v1", key
assert cache.size == len(keys), f"{cache.size} entries cached"
# Served from the cache now.
for key in keys:
    assert cached.get(key) == b"v1", key

for round_, value in enumerate([b"v2", b"v3"]):
    for key in keys:
        plain.set(key, value)
        eventually(lambda: cached.get(key) == value, f"{key} = {value!r} (round {round_})")

plain.delete(keys[0])
eventually(lambda: cached.get(keys[0]) is None, f"{keys[0]} deleted")
print("client cache ok")
