"""Celery through redshard: a task, a group, a chain, a retried task and a chord, with their
results from the Redis result backend. Needs a worker on the same app. Prints `celery ok`."""

from celery import chain, chord, group

from tasks import add, flaky, total

assert add.delay(2, 3).get(timeout=30) == 5
assert group(add.s(i, i) for i in range(10))().get(timeout=30) == [2 * i for i in range(10)]
assert chain(add.s(1, 2), add.s(3), add.s(4))().get(timeout=30) == 10
assert flaky.delay(7).get(timeout=30) == 7
assert chord((add.s(i, i) for i in range(5)), total.s())().get(timeout=30) == 20
print("celery ok")
