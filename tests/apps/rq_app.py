"""python-rq through redshard: enqueue 200 jobs (one depending on another, one failing), run a
burst worker, check every result. Usage: rq_app.py PORT. Prints `rq ok` or fails."""

import sys

from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus

import rq_jobs

redis = Redis(port=int(sys.argv[1]))
queue = Queue(connection=redis)
jobs = [queue.enqueue(rq_jobs.add, i, i) for i in range(200)]
dependent = queue.enqueue(rq_jobs.add, 1, 1, depends_on=jobs[0])
failing = queue.enqueue(rq_jobs.fail)
Worker([queue], connection=redis).work(burst=True)
for i, job in enumerate(jobs):
    result = Job.fetch(job.id, connection=redis).return_value()
    assert result == 2 * i, (i, result)
assert Job.fetch(dependent.id, connection=redis).return_value() == 2
assert Job.fetch(failing.id, connection=redis).get_status() == JobStatus.FAILED
assert queue.count == 0
print("rq ok")
