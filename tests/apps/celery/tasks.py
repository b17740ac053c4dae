"""A Celery app whose broker and result backend are redshard (REDSHARD_URL)."""

import os

from celery import Celery

url = os.environ["REDSHARD_URL"]
app = Celery("tasks", broker=url, backend=url)


@app.task
def add(x, y):
    return x + y


@app.task(bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self, n):
    if self.request.retries < 2:
        raise self.retry(countdown=0.1)
    return n


@app.task
def total(numbers):
    return sum(numbers)
