"""A Celery app of two tasks, one that holds its pool process for a while and one that fails in the worker: started by
the production tests with the worker command the stack uses, to see which queued steps a busy worker takes and what
the executor makes of a task that raised."""

from __future__ import annotations

import time

from celery import Celery

from mlplatform.orchestration.executor import CELERY_QUEUE

app = Celery("mlplatform_tests")  # broker and backend from CELERY_BROKER_URL / CELERY_RESULT_BACKEND, as the stack's workers
app.conf.task_default_queue = CELERY_QUEUE


@app.task(name="hold")
def hold(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="fail")
def fail() -> None:
    raise RuntimeError("too many retries for DB connection")  # as dagster's task raised when its events could not be stored
