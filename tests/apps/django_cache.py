"""Django's built-in Redis cache through redshard: set_many/get_many/delete_many/incr/touch.
Usage: django_cache.py PORT. Prints `django ok`."""

import sys

import django
from django.conf import settings

settings.configure(
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{sys.argv[1]}",
        }
    }
)
django.setup()

from django.core.cache import cache  # noqa: E402

data = {f"k{i}": i for i in range(30)}
cache.set_many(data, timeout=100)
assert cache.get_many(list(data)) == data
cache.set("n", 1)
assert cache.incr("n", 5) == 6
assert cache.touch("n", 50)
cache.delete_many([f"k{i}" for i in range(10)])
assert cache.get_many(list(data)) == {f"k{i}": i for i in range(10, 30)}
print("django ok")
