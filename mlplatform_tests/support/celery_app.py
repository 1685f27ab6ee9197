"""A Celery app of one task that holds its pool process for a while: started by the production tests with the worker
command the stack uses, to see which queued steps a busy worker takes."""

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
