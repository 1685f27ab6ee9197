"""The Dagster instance in the state folder: SQLite storage (PostgreSQL in the production profile), telemetry off,
run retries, a run queue and its concurrency limits."""

import os
from pathlib import Path

import yaml

from mlplatform.domain.keys import MODEL_TAG, PRIORITY_TAG, RETRAIN_TAG
from mlplatform.settings import IN_STACK_ENV, Settings, env_name
from mlplatform.stores.postgres import check_reachable


def retrain_run_tags(model: str) -> dict[str, str]:
    """Every retraining run of `model`: the queue runs one per model at a time, before drift reports (a retraining
    waiting behind them delays a better model in service)."""
    return {RETRAIN_TAG: model, PRIORITY_TAG: "10", MODEL_TAG: model}


MAX_CONCURRENT_RUNS = 4

# A loaded machine is slow, not broken: a launch the code server does not answer in time (gRPC DEADLINE_EXCEEDED)
# goes back into the queue and is tried again after a pause, instead of failing the run.
LAUNCH_RETRIES = 6
LAUNCH_RETRY_DELAY_SECONDS = 10
# Time for a code server to load the definitions, and for a launched run to start, on a busy box (Dagster: 180 s each).
CODE_SERVER_STARTUP_SECONDS = 360
RUN_START_TIMEOUT_SECONDS = 600
# Sensor ticks evaluated at once by the daemon: one after the other (Dagster's default), a model's retraining tick waited
# behind every other sensor's gRPC round trip to the code server (~0.5 s each on a busy box, 7 sensors with two models).
SENSOR_TICK_WORKERS = 4


# Named, not imported: the CLI's commands that only prepare the Dagster home do not import Dagster.
WARM_RUN_LAUNCHER = {"module": "mlplatform.orchestration.warm_runs", "class": "WarmRunLauncher"}
# The file the stop of `mlplatform dev` (or its reaper) writes in the Dagster home before it signals anything (its next
# start removes it); read by the steps of its stack (IN_STACK_ENV).
STACK_STOPPING_FILE = "stack-stopping"


def stack_stopping(dagster_home: Path) -> str | None:
    """Why a step of the stack must not start, or None: the stack that runs it is stopping. The stop reaches a run worker
    as an interrupt, which Dagster turns into a retry of the step: the retry ran on with no stack and promoted a champion
    12 s after `dev` was killed (the operator probe). Steps outside a stack (`mlplatform materialize`) are never stopped
    so."""
    if not os.environ.get(IN_STACK_ENV) or not (dagster_home / STACK_STOPPING_FILE).exists():
        return None
    return ("the stack that launched this run is stopping: no step starts again in a worker no stack will watch; run retries "
            "launch the run again once a stack is back")


def _psycopg2_url(url: str) -> str:
    """dagster-postgres speaks psycopg2 (its NOTIFY is psycopg2 syntax), while SQLAlchemy 2.1 maps a bare
    `postgresql://` to psycopg 3: name the driver so the same setting works for every store."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in ("postgresql", "postgres") else url


def instance_config(postgres_url: str | None = None, warm_run_workers: bool = True, skipped_ticks_keep_days: int = 2,
                    run_history_keep_days: int = 14) -> dict[str, object]:
    """dagster.yaml; with `postgres_url`, runs, event logs and schedules live in that database instead of SQLite files;
    with `warm_run_workers`, runs are forked from a warm process (WarmRunLauncher) instead of spawned by the code server;
    skipped sensor ticks purged by the daemon after `skipped_ticks_keep_days`, schedule ticks after `run_history_keep_days`."""
    storage = {"storage": {"postgres": {"postgres_url": _psycopg2_url(postgres_url)}}} if postgres_url else {}
    launcher = {"run_launcher": WARM_RUN_LAUNCHER} if warm_run_workers else {}
    return {
        **storage,
        **launcher,
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
        # How many runs at once, and one retraining per model at a time: Dagster's `concurrency: runs:` section.
        "concurrency": {"runs": {"max_concurrent_runs": MAX_CONCURRENT_RUNS,
                                 "tag_concurrency_limits": [{"key": RETRAIN_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]}},
        # How the queue works (its QueuedRunCoordinator): dequeue every second (Dagster's default: 5 s), the queue being
        # part of the time from trigger to new champion; a launch the code server does not answer goes back into it.
        "run_queue": {"dequeue_interval_seconds": 1, "max_user_code_failure_retries": LAUNCH_RETRIES,
                      "user_code_failure_retry_delay": LAUNCH_RETRY_DELAY_SECONDS},
        "sensors": {"use_threads": True, "num_workers": SENSOR_TICK_WORKERS},
        # Every sensor ticks every 5 s and mostly skips: the skipped ticks are most of what the instance stores.
        "retention": {"sensor": {"purge_after_days": {"skipped": skipped_ticks_keep_days}},
                      "schedule": {"purge_after_days": run_history_keep_days}},  # live_quality ticks 288 times a day per model
        "code_servers": {"local_startup_timeout": CODE_SERVER_STARTUP_SECONDS, "reload_timeout": CODE_SERVER_STARTUP_SECONDS},
        "run_retries": {"enabled": True, "max_retries": 1},
        "run_monitoring": {"enabled": True, "max_runtime_seconds": 3600, "poll_interval_seconds": 30, "start_timeout_seconds": RUN_START_TIMEOUT_SECONDS},
    }


def prepare_dagster_home(settings: Settings) -> str:
    """Create the Dagster home with its dagster.yaml and point DAGSTER_HOME at it.

    The file follows the settings: it is rewritten when they change its content (so switching the storage
    setting takes effect), owner-readable only since it may hold the database password.
    """
    settings.ensure_dirs()
    url = settings.dagster_postgres_url.get_secret_value() if settings.dagster_postgres_url else None
    if url:
        check_reachable(url, env_name("dagster_postgres_url"))
    config_path = settings.dagster_home / "dagster.yaml"
    text = yaml.safe_dump(instance_config(url, settings.warm_run_workers, settings.skipped_ticks_keep_days, settings.run_history_keep_days),
                          sort_keys=False)
    if not config_path.exists() or config_path.read_text(encoding="utf-8") != text:
        staged = config_path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(text, encoding="utf-8")
        staged.chmod(0o600)
        staged.replace(config_path)
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    return str(settings.dagster_home)
