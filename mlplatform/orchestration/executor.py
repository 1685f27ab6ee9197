"""Where the steps of a run execute: in the run's own process (embedded), or on Celery workers (production profile)."""

import sys
from collections.abc import Iterator
from typing import Any

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

    # dagster-celery registers its one task again for every step it submits: the second step of each run printed
    # "Task name 'execute_plan' is already registered" (the production probe), the same task each time.
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered", category=DuplicateTaskNameWarning)
    return celery_with_lost_steps().configured({"broker": settings.celery_broker_url, "backend": settings.celery_broker_url}, name="celery")


def celery_with_lost_steps() -> dg.ExecutorDefinition:
    """dagster-celery's executor, but a step whose Celery task itself raised (in the worker, outside the step: its
    events could not be stored, PostgreSQL down) is a step lost, not the end of scheduling. dagster-celery's loop then
    submitted no step again and spun without sleeping: a retry it had scheduled (a step failed on the same outage) never
    ran, the run stayed STARTED with its run worker at 70 % of a CPU until run monitoring's hour (the production probe).
    Read as a revoked task, the step is marked in an unknown state (its run fails at the end, its downstream steps are
    abandoned) and every other step, retries included, goes on."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

    class LostStepsExecutor(CeleryExecutor):
        def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
            from dagster._core.errors import DagsterSubprocessError, DagsterUnknownStepStateError
            from dagster_celery.core_execution_loop import core_celery_execution_loop

            lost: dict[str, Any] = {}  # step key → the SerializableErrorInfo of what its task raised

            def submit(app: Any, context: Any, step: Any, queue: str, priority: int, known_state: Any) -> LostWhenItRaises:
                return LostWhenItRaises(_submit_task(app, context, step, queue, priority, known_state), context, step.key, lost)

            try:
                yield from core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)
            except DagsterUnknownStepStateError as exc:  # the run's failure says why its steps were lost, as dagster-celery's did
                if not lost:
                    raise
                raise DagsterSubprocessError("During celery execution errors occurred in workers:\n" +
                                             "\n".join(f"[{key}]: {error.to_string()}" for key, error in lost.items()),
                                             subprocess_error_infos=list(lost.values())) from exc

    @dg.executor(name="celery", config_schema=CELERY_CONFIG, requirements=dg.multiple_process_executor_requirements())
    def celery(init_context: dg.InitExecutorContext) -> dg.Executor:
        config = init_context.executor_config
        return LostStepsExecutor(retries=RetryMode.from_config(config["retries"]), broker=config.get("broker"), backend=config.get("backend"),
                                 config_source=config.get("config_source"), include=config.get("include"))

    return celery


class LostWhenItRaises:
    """A step's Celery result whose `get` raises as a revoked task does when the task itself failed, saying why in the
    run's log (see `celery_with_lost_steps`)."""

    def __init__(self, result: Any, context: Any, step_key: str, lost: dict[str, Any]) -> None:
        self._result, self._context, self._step_key, self._lost = result, context, step_key, lost  # lost: step key → its error

    def ready(self) -> bool:
        return bool(self._result.ready())

    def revoke(self) -> None:
        self._result.revoke()

    def get(self) -> Any:
        from celery.exceptions import TaskRevokedError
        from dagster._utils.error import serializable_error_info_from_exc_info

        try:
            return self._result.get()
        except TaskRevokedError:
            raise
        except Exception as exc:
            self._lost[self._step_key] = serializable_error_info_from_exc_info(sys.exc_info())
            why = f"{type(exc).__name__}: {exc}"
            self._context.log.error(f"step {self._step_key}: its Celery task failed in the worker ({why}); the step is "
                                    "lost (the run fails once its other steps, their retries included, have ended)")
            raise TaskRevokedError(f"{self._step_key}: {why}") from exc


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
