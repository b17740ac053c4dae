"""The jobs of rq_app.py (rq imports them by module path)."""


def add(a, b):
    return a + b


def fail():
    raise ValueError("this job fails on purpose")
