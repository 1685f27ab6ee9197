"""Where the steps of a run execute: in the run's own process (embedded), or on Celery workers (production profile)."""

import dagster as dg

from mlplatform.settings import Settings, env_name

CELERY_QUEUE = "dagster"  # the queue dagster-celery submits steps to and its workers listen on
CELERY_APP = "dagster_celery.app"


def run_executor(settings: Settings) -> dg.ExecutorDefinition:
    """In process unless `celery_broker_url` is set: the steps of one run are a chain, so one process per run saves an
    import of the code location per step; with a broker, each step is a Celery task, run by whichever worker is free."""
    if settings.celery_broker_url is None:
        return dg.in_process_executor
    import warnings

    from celery.exceptions import DuplicateTaskNameWarning
    from dagster_celery import celery_executor

    # dagster-celery registers its one task again for every step it submits: the second step of each run printed
    # "Task name 'execute_plan' is already registered" (the production probe), the same task each time.
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered", category=DuplicateTaskNameWarning)
    return celery_executor.configured({"broker": settings.celery_broker_url, "backend": settings.celery_broker_url}, name="celery")


def celery_worker_command(python_bin: str, name: str, concurrency: int, app: str = CELERY_APP) -> list[str]:
    """A worker of the code location's steps (it imports the code from each task's job pointer), `concurrency` tasks at
    a time, taking a step only when a pool process is free (`--disable-prefetch`: with `--prefetch-multiplier 1` alone
    the worker still reserved one step beyond those running, and a worker killed with it lost that step, of another
    run that had not started, until Redis's one-hour visibility timeout: the production probe); the broker comes from
    CELERY_BROKER_URL / CELERY_RESULT_BACKEND in its environment (Celery reads them first). `app`: the tests' own."""
    return [python_bin, "-m", "celery", "-A", app, "worker", "-Q", CELERY_QUEUE, "-n", name, "--concurrency", str(concurrency),
            "--prefetch-multiplier", "1", "--disable-prefetch", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]


def celery_worker_env(settings: Settings) -> dict[str, str]:
    """The worker's broker and result backend, the same Redis as the executor's."""
    if settings.celery_broker_url is None:
        raise ValueError(f"{env_name('celery_broker_url')} is not set: there is no broker for a Celery worker")
    return {"CELERY_BROKER_URL": settings.celery_broker_url, "CELERY_RESULT_BACKEND": settings.celery_broker_url}
