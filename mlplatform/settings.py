"""One settings object for the whole platform, read from `MLPLATFORM_*` environment variables."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.domain.retry_budget import RetryBudget

if TYPE_CHECKING:
    from mlplatform.domain.policy import PolicyConfig

FloorMetric = Literal["roc_auc", "log_loss", "rmse"]  # the primary metrics (mlplatform.domain.evaluation.PRIMARY_METRIC)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / "data" / "adult.yaml"
LANDING_MAX_FUTURE_SECONDS = 86_400.0  # a day: producers' clock skew and time zone slips pass, a year ahead does not
ENV_PREFIX = "MLPLATFORM_"

# The MLPLATFORM_* variables the platform reads that are no setting (NOT_SETTINGS); Settings refuses any other such name.
# Set for the process that launches runs (with the run queue, the daemon; `mlplatform dev` sets it for its daemon): its
# launcher starts the warm process as it loads, so that the first run does not wait for the imports. Elsewhere (the
# webserver, which loads the launcher to terminate runs) the warm process starts at the first launch, if any.
WARM_RUNS_PRESTART_ENV = f"{ENV_PREFIX}WARM_RUNS_PRESTART"
# Set by `mlplatform dev` in its servers' environment (so in every run worker and Celery worker of the stack): a step
# of a stack that is stopping starts no more (mlplatform.orchestration.instance.stack_stopping).
IN_STACK_ENV = f"{ENV_PREFIX}IN_STACK"
# The models a worker process of `serve --workers N` serves, handed down by `serve` (workers build their app from the environment).
SERVE_MODELS_ENV = f"{ENV_PREFIX}SERVE_MODELS"
# Set to 1, the UI tests also refresh the README's screenshots (mlplatform_tests/test_ui_browser.py).
DOCS_SCREENSHOTS_ENV = f"{ENV_PREFIX}DOCS_SCREENSHOTS"
NOT_SETTINGS = (WARM_RUNS_PRESTART_ENV, IN_STACK_ENV, SERVE_MODELS_ENV, DOCS_SCREENSHOTS_ENV)
# Fields the composition root sets for each model from its defs.yaml, over whatever a variable said: no variable sets them.
PER_MODEL_FIELDS = {"dataset_spec": "a model's dataset spec is named by `spec:` in its defs.yaml (`mlplatform replay --spec` replays another)"}


def env_name(setting: str) -> str:
    """The environment variable of a Settings field: what messages name, and how `mlplatform dev` hands it to children."""
    return f"{Settings.model_config['env_prefix']}{setting.upper()}"


def env_value(value: object) -> str:
    """A setting's value as its environment variable spells it (a secret in clear: for a child's environment or a 0600 file)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def redact(url: str) -> str:
    """The URL (or key=value connection string) without its password, for messages and metadata."""
    url = re.sub(r"password\s*=\s*('[^']*'|[^\s&]+)", "password=***", url)
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def settings_problems(exc: ValidationError) -> str:
    """A Settings validation error said as the environment variables a user sets: each with the value given and the
    rule it breaks, without pydantic's field paths and URLs. Any other model's error as pydantic says it."""
    if exc.title != "Settings":
        return str(exc)
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field not in Settings.model_fields:
            problems.append(error["msg"])
            continue
        value = f"={error['input']!r}" if isinstance(error.get("input"), str) else ""  # a SecretStr takes any text: never here
        problems.append(f"{env_name(field)}{value}: {error['msg']}")
    return "; ".join(problems)


def unknown_variables(environ: Mapping[str, str]) -> str | None:
    """Why MLPLATFORM_* variables of `environ` that name no setting are refused, or None: pydantic-settings ignores them,
    so a misspelt one (or MLPLATFORM_DATASET_SPEC, which a shipped spec told users to set) did nothing, without a word,
    while defs.yaml refuses an unknown key. Names are compared in capitals, as pydantic-settings reads them."""
    fields = sorted(name for name in Settings.model_fields if name not in PER_MODEL_FIELDS)
    settings = {env_name(name) for name in fields}
    per_model = {env_name(name): why for name, why in PER_MODEL_FIELDS.items()}
    problems = []
    for name in sorted(environ):
        wanted = name.upper()
        if not wanted.startswith(ENV_PREFIX) or wanted in settings or wanted in NOT_SETTINGS:
            continue
        if wanted in per_model:
            problems.append(f"{name} is no setting: {per_model[wanted]}")
            continue
        closest = difflib.get_close_matches(wanted.removeprefix(ENV_PREFIX).lower(), fields, n=2, cutoff=0.7)  # the names, not their shared prefix
        problems.append(f"{name} is no setting" + (f" (did you mean {' or '.join(map(env_name, closest))}?)" if closest else ""))
    if not problems:
        return None
    return (f"{'; '.join(problems)}. An {ENV_PREFIX}* variable names a setting: a field of Settings in mlplatform/settings.py, "
            "in capitals (README: Configuration and state)")


@contextmanager
def scoped_environment(values: dict[str, str], restore: tuple[str, ...] = ()) -> Iterator[None]:
    """Set `values` in this process's environment (settings are read from it), and put them, and `restore`, back after."""
    previous = {key: os.environ.get(key) for key in (*values, *restore)}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class SettingsError(ValueError):
    """Settings that are valid one by one but not together with the dataset spec (the CLI exits 2 with the message)."""


class Settings(BaseSettings):
    """Where state lives and the knobs of the retraining loop.

    Every path below defaults to a place inside `state_dir`, so one variable
    (`MLPLATFORM_STATE_DIR`) moves everything.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    state_dir: Path = Field(default=REPO_ROOT / ".mlplatform", description="Dagster home, MLflow store, event log, reports.")
    dataset_spec: Path = Field(default=DEFAULT_SPEC, description="A model's dataset spec: set per model by the composition root from its defs.yaml.")
    landing_dir: Path | None = Field(default=None, description="Folder watched for new event files (default: <state>/landing).")
    mlflow_tracking_uri: str | None = Field(default=None, description="Default: mlflow_ui_url when mlflow_backend_store_url is set, else SQLite in the state folder.")
    external_retry_budget_seconds: float = Field(default=60.0, ge=10, description="With MLflow unreachable, a run fails (and alerts) within this long: Dagster's step retries and MLflow's request timeout are derived from it.")

    retrain_every_n: int = Field(default=5000, ge=1, description="New labelled events since the champion's cut-off that trigger a retraining.")
    min_new_labelled_for_drift: int = Field(default=500, ge=0, description="Drift, a quality drop or an estimated drop triggers a retraining only with at least this many new labelled events (doubled per such retraining not promoted since the latest promotion).")
    retrain_cooldown_seconds: float = Field(default=300.0, ge=0, description="Minimum time between two retrainings: after one the policy triggered, or one started by hand (from its start), the sensor triggers none before this.")
    training_window: int = Field(default=50_000, ge=100, description="Most recent labelled events used for one training.")
    training_window_candidates: list[int] | None = Field(default=None, description="Window sizes (events, hold-out included, each ≤ training_window) the challenger is trained on, one model each; the best on the hold-out is kept (tuning on the largest only). Unset: training_window and a tenth of it; one size: that window alone.")
    training_window_since_change: bool = Field(default=True, description="Also train a candidate window that starts where the champion's errors rose significantly on the labelled events it never trained on (a concept change); the hold-out decides between it and training_window_candidates. Off: those alone.")
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.9, description="Latest share of the window kept for challenger vs champion.")
    holdout_max_rows: int = Field(default=2000, ge=10, description="Cap on the hold-out, so a challenger still trains on most of what arrived since the last champion.")
    refit_on_holdout: bool = Field(default=True, description="After the challenger's window and parameters are chosen on the hold-out, refit that configuration (same boosting rounds) on its training rows and the hold-out, and register the refit; the validation model's hold-out predictions stay the evidence it is judged by (against a refit champion: on the hold-out rows labelled after the champion's cut-off, when there are at least 200). Off: the validation model itself is registered.")
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.9, description="Latest share of the training part used for early stopping.")
    min_training_rows: int = Field(default=200, ge=10, description="Fewer labelled events than this in the window and training refuses to run (its training part, the hold-out split off, needs this times 1 - holdout_fraction).")
    tuning_trials: int = Field(default=8, ge=1, description="Hyperparameter trials per training.")
    tuning_seconds: float = Field(default=60.0, gt=0, description="Time budget for tuning per training.")
    num_boost_round: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    seed: int = 7
    promotion_requires_significance: bool = Field(default=False, description="Promote over a champion only when the 95 % paired-bootstrap interval of the challenger's gain on the judged hold-out rows lies above 0 (the interval is said in every decision either way): on a small hold-out a win by the margin can be noise.")
    promotion_margin: float = Field(default=0.002, ge=0, description="How much better than the champion a challenger must be: in the primary metric's units (ROC AUC, log loss); for an error in the label's units (RMSE, MAE), this share of the champion's.")
    quality_floor: float | dict[FloorMetric, float] | None = Field(default=None, description="The primary metric a challenger must reach to be promoted, in that metric's own terms: binary, roc_auc at least this; multiclass, log_loss at most this; regression, rmse at most this. A mapping ({\"roc_auc\": 0.7, \"rmse\": 80}) gives each metric its own, for every model of that task; a single number for models whose metrics differ is refused. Default from the task: AUC 0.6, the log loss of predicting the training labels' class shares, the RMSE of predicting their mean.")
    promotion_requires_shadow_win: bool = Field(default=False, description="A challenger that wins on the hold-out is promoted only once it also wins on live labelled events both it (in shadow) and the champion scored; until then it stays `@challenger`, decision `awaiting_shadow` (needs serve_shadow_challenger).")
    shadow_min_events: int = Field(default=200, ge=10, description="Live labelled events scored by both champion and shadow challenger needed before the shadow comparison decides.")
    shadow_max_wait_seconds: float = Field(default=86_400.0, gt=0, description="How long a hold-out winner waits for its shadow evidence (from its registration) under promotion_requires_shadow_win; then the retraining sensor has evaluation_report decide on the hold-out alone, recording that the evidence was short (no serving process scoring shadows, or too little traffic).")

    max_quarantine_share: float = Field(default=0.05, ge=0, le=1, description="raw_events check: warn above this share of quarantined rows in one ingestion.")
    max_null_share: float = Field(default=0.5, ge=0, le=1, description="raw_events check: warn when a feature is missing in more of the recent events.")
    drift_sample_rows: int = Field(default=100_000, ge=2000, description="Events sampled per side of a drift report: bounds its time and memory on any window (above 1000 rows, so Evidently picks the same test as on all rows).")
    drift_share_threshold: float = Field(default=0.5, gt=0, le=1, description="Dataset drift when at least this share of feature columns drifted (Evidently's default).")
    drift_min_current_rows: int = Field(default=50, ge=1, description="With fewer events since the champion's window the drift report is skipped, saying why.")
    drift_current_hours: float | None = Field(default=None, gt=0, description="Current window: only the last hours of events (default: every event since the champion's window).")
    drift_every_n_events: int = Field(default=1000, ge=1, description="The drift sensor requests a new drift report after this many new events.")
    freshness_model_hours: float = Field(default=168.0, ge=0.05, description="trained_model shows as stale (FAIL) in the Dagster UI after this long without a retraining, WARN after half of it.")
    freshness_drift_hours: float = Field(default=6.0, ge=0.05, description="drift_report shows as stale (FAIL) after this long without a report (the stream or its sensor stopped), WARN after half of it.")
    freshness_live_quality_hours: float = Field(default=0.5, ge=0.05, description="live_quality (scheduled every 5 minutes, and in every drift report run) shows as stale (FAIL) after this long without a score, WARN after half of it.")
    feature_snapshots_keep: int = Field(default=20, ge=2, description="Feature snapshots kept per model in work/<model> (the newest; an older one is removed when features writes a new one: each holds a training window's rows, and a run or its retry reads only its own recent one).")
    run_history_keep_days: int = Field(default=14, ge=1, description="Days the Dagster instance keeps a finished run (its events and captured logs) before the daily `run_history_retention` job deletes it; never the runs a model's history rests on (retrainings, policy triggers, champion jobs, the latest materialization or observation of each asset). On the embedded instance a run is a SQLite file of about 140 kB, and live_quality starts 288 runs a day per model. Schedule ticks are purged after as many days.")
    skipped_ticks_keep_days: int = Field(default=2, ge=1, description="Days the Dagster instance keeps the sensors' skipped ticks (and their reasons) before its daemon purges them (Dagster's default: 7). A skipped tick holds a sentence and the cursor, about 1.7 kB in SQLite; every sensor skips about 17,000 times a day, so with two models 7 days held about 1.3 GB.")
    drift_reports_keep: int = Field(default=50, ge=1, description="Drift reports kept per model in reports/drift (the newest; older ones and the reference caches of versions no longer champion or challenger are removed after each report).")
    dagster_ui_url: str = Field(default="http://127.0.0.1:3000", description="Used to build links in metadata, alerts and the CLI.")
    mlflow_ui_url: str = Field(default="http://127.0.0.1:5000", description="Used to build links to model versions and reports.")
    alertmanager_url: str | None = Field(default=None, description="Prometheus Alertmanager base URL (e.g. http://127.0.0.1:9093); alerts are off when unset.")
    alert_timeout_seconds: float = Field(default=2.0, gt=0, description="Per-request timeout when sending alerts; a few jittered retries follow, then the alert waits in the outbox.")
    alert_ttl_seconds: float = Field(default=3600.0, ge=60, description="A firing alert's endsAt is this far ahead; the alert sensor re-sends it before then while the condition holds.")
    alert_keep_firing_seconds: float = Field(default=60.0, ge=0, description="An alert resolved sooner than this after it began is sent ending this long after its start (Prometheus' keep_firing_for), so Alertmanager, whose group_wait is 30 s by default, notifies it: one fired and resolved between two deliveries reached it already over, and nobody heard of it.")
    live_quality_window: int = Field(default=500, ge=10, description="Latest labelled served predictions of the champion scored by `live_quality`.")
    live_quality_min_events: int = Field(default=50, ge=1, description="With fewer labelled served predictions, `live_quality` reports no verdict.")
    live_min_precision: float | None = Field(default=0.5, ge=0, le=1, description="Live precision floor (classification); unset for none.")
    live_min_recall: float | None = Field(default=0.5, ge=0, le=1, description="Live recall floor (classification); unset for none.")
    live_max_rmse: float | None = Field(default=None, gt=0, description="Live RMSE ceiling (regression); unset for none.")
    estimation_chunk_events: int = Field(default=1000, ge=10, description="estimated_performance: events per chunk (the latest chunks of served or ingested events, labelled or not).")
    estimation_chunks: int = Field(default=10, ge=1, description="estimated_performance: how many of the latest chunks are estimated (and, where labels came back, realized).")
    estimation_min_events: int = Field(default=200, ge=10, description="A chunk (or its labelled part) with fewer events gets no estimate (no realized value), saying why.")
    retrain_on_estimated_drop: bool = Field(default=True, description="The retraining sensor's third reason, estimated_drop (detected without labels; it retrains once the drift bar's new labels are in, MIN_NEW_LABELLED_FOR_DRIFT doubled per unpromoted one): see estimated_drop_margin.")
    estimated_drop_margin: float = Field(default=0.05, ge=0, le=1, description="Retrain (reason estimated_drop) when the champion's estimated performance on its latest `estimated_drop_events` events is this share worse than its hold-out reference, with the reference outside the 95 % band.")
    estimated_drop_events: int = Field(default=2000, ge=10, description="Latest events the estimated_drop trigger estimates over: fewer in the log and it waits.")
    retrain_on_quality_drop: bool = Field(default=True, description="The retraining sensor's fourth reason, quality_drop (labelled served predictions): see quality_drop_margin.")
    quality_drop_margin: float = Field(default=0.05, ge=0, le=1, description="Retrain (reason quality_drop) when the champion's realized performance on its latest `quality_drop_events` labelled served predictions (live_quality) is this share worse than its hold-out reference, with the reference outside the 95 % band.")
    quality_drop_events: int = Field(default=1000, ge=10, description="Labelled served predictions of the champion the quality_drop trigger reads: fewer and it waits.")
    reports_url: str = Field(default="http://127.0.0.1:3001", description="Where `mlplatform dev` serves the reports folder; report links in metadata point here.")
    evidently_workspace_dir: Path | None = Field(default=None, description="The local Evidently workspace every drift report's snapshot is added to, one project per model (default: <state>/evidently).")
    code_server_port: int | None = Field(default=None, ge=1, le=65535, description="The port of `mlplatform dev`'s code server on 127.0.0.1 (the next ports for further code locations of workspace.yaml); unset: a free port each start.")
    evidently_ui_url: str = Field(default="http://127.0.0.1:3002", description="Where `mlplatform dev` serves `evidently ui` on the workspace; drift_report metadata links to the model's project here.")

    serve_host: str = Field(default="127.0.0.1", description="Prediction service bind address (loopback unless you mean to expose it).")
    serve_port: int = Field(default=8000, ge=0, le=65535)
    serve_workers: int = Field(default=1, ge=1, le=64, description="Serving processes sharing the port (`mlplatform serve`, and the one `make prod` starts); more than 1 needs the PostgreSQL event log (event_log_url).")
    serve_reload_seconds: float = Field(default=1.0, gt=0, description="How often serving checks which version is `@champion` (one alias read: cheap; part of the time from promotion to serving).")
    serve_history_catch_up_seconds: float = Field(default=1.0, gt=0, description="How often serving's history state reads the labels that landed outside /feedback (label files), and rebuilds from the log when events landed from files: two counter reads when none did. Its own interval, as reading the champion alias (`serve_reload_seconds`) costs a model registry query.")
    serve_max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
    serve_max_batch_rows: int = Field(default=1000, ge=1, description="Larger /predict batches get 413.")
    serve_token: SecretStr | None = Field(default=None, description="Bearer token required, when set, by every endpoint except /healthz and the /readyz ones (predict, feedback, admin, metrics, OpenAPI).")
    serve_log_interval_ms: float = Field(default=0.0, ge=0, description="Prediction-log group commit: extra wait to gather a bigger group (0: requests queued while the previous commit ran form the next group).")
    serve_live_quality_seconds: float = Field(default=30.0, gt=0, description="How often serving refreshes its live-quality gauges.")
    serve_log_max_rows: int = Field(default=2000, ge=1, description="Prediction-log group commit: most rows in one transaction.")
    serve_log_on_loop: bool = Field(default=True, description="Prediction-log group commit: commit the requests of one event-loop turn on the loop itself when the embedded event log's write lock is free (no hand-over to the writer thread, which still takes the groups that would wait); false: always the writer thread.")
    serve_online_correction: bool = Field(default=False, description="Serve the champion through an online residual correction learned from /feedback labels (binary and regression; reset at every promotion).")
    serve_correction_learning_rate: float = Field(default=0.5, gt=0, le=1, description="Learning rate of the online correction (normalised LMS step).")
    serve_correction_warm_events: int = Field(default=5000, ge=0, description="Latest labelled served predictions of a version replayed into its correction when it is loaded.")
    serve_shadow_challenger: bool = Field(default=False, description="Also score each served event with `@challenger` (when it differs from the champion), off the response path, and log its prediction with its version in the event log's shadow_predictions.")
    serve_shadow_queue: int = Field(default=1000, ge=1, le=1_000_000, description="Requests waiting for the shadow challenger; above this, their events are dropped from the shadow (counted), never slowing an answer.")

    # landing
    landing_sensor: bool = Field(default=True, description="The model's landing sensor starts running (a raw_events run once settled files wait in the landing folder); off, it starts stopped and is switched on in the UI.")
    landing_quiet_seconds: float = Field(default=2.0, ge=0, description="A landing file is taken only once its size and times have not changed for this long (a run waits at most this long for a fresh file; one still changing is left for a later run).")
    landing_ready_marker: str | None = Field(default=None, min_length=1, description="Marker mode: when set (e.g. '.ready'), a landing file is taken only once '<file><marker>' exists beside it; the marker moves with the file.")
    landing_max_file_bytes: int = Field(default=1 << 36, ge=1, description="Larger landing files are rejected before reading (files are streamed in batches, so this guards the disk and the run's length, not memory).")
    landing_max_decompressed_bytes: int = Field(default=1 << 36, ge=1, description="A .gz landing file that expands beyond this is rejected (checked while decompressing, before any of its rows is written).")
    landing_max_future_seconds: float = Field(default=LANDING_MAX_FUTURE_SECONDS, gt=0, le=3_155_760_000, allow_inf_nan=False, description="A landed event timed more than this after the landing run's clock is quarantined as in the future (served events are timed by the server's clock): one years ahead sat at the end of every hold-out and made serving's history features read labels from the future.")
    landing_batch_bytes: int = Field(default=8 << 20, ge=1 << 10, description="Landing text (CSV, JSON Lines) is parsed, validated and committed this many bytes at a time (Parquet: a 128th as many rows): memory is bounded by it, not by the file.")

    warm_run_workers: bool = Field(default=True, description="Each run worker is forked from a process that has already imported Dagster, MLflow, LightGBM, scikit-learn and Evidently (WarmRunLauncher, written into <state>/dagster/dagster.yaml) instead of a fresh interpreter importing them; false: Dagster's default launcher through the code server.")

    # production profile
    event_log_url: SecretStr | None = Field(default=None, description="PostgreSQL URL of the event log (e.g. postgresql://user:password@127.0.0.1:5432/db), one schema per dataset; unset: the SQLite file in <state>/events.")
    dagster_postgres_url: SecretStr | None = Field(default=None, description="PostgreSQL URL of the Dagster instance's storage (runs, event logs, schedules), written into <state>/dagster/dagster.yaml; unset: SQLite files in the Dagster home.")
    mlflow_backend_store_url: SecretStr | None = Field(default=None, description="PostgreSQL URL of the MLflow tracking server's store: `mlplatform dev` serves it at mlflow_ui_url (artifacts proxied into <state>/mlflow/artifacts) and the platform tracks through that server; unset: SQLite in the state folder.")
    dask_scheduler: str | None = Field(default=None, min_length=1, description="Address of a Dask scheduler (e.g. tcp://10.0.0.5:8786): trained_model boosts each tuning trial on its workers with lightgbm.dask (trials one after another); unset: in the step's own process.")
    celery_broker_url: str | None = Field(default=None, description="Redis URL of the Celery broker (e.g. redis://127.0.0.1:6379/0): each step of a run becomes a task for the Celery workers listening to it, results coming back through the same Redis; unset: a run's steps run in its own process.")
    celery_worker_concurrency: int = Field(default=1, ge=1, le=64, description="Pool processes of the Celery worker `mlplatform dev` starts: the steps it executes at once (each process imports the code location and holds a step's data: budget the memory of a training per process).")

    # serving
    serve_unknown_fields: Literal["refuse", "ignore"] = Field(default="refuse", description="/predict fields that are neither a feature nor a column the spec drops: 422 (refuse) or silently ignored (ignore). Dropped columns are always ignored.")
    serve_body_timeout_seconds: float = Field(default=10.0, gt=0, description="A request body not fully received within this time gets 408 and its connection is closed.")

    def __init__(self, **values: Any) -> None:
        """Settings from the environment (and `values`), refusing first an MLPLATFORM_* variable that names no setting."""
        problem = unknown_variables(os.environ)
        if problem is not None:
            raise SettingsError(problem)
        super().__init__(**values)

    @model_validator(mode="after")
    def _resolve_paths(self) -> "Settings":
        self.state_dir = self.state_dir.expanduser().resolve()
        self.dataset_spec = self.dataset_spec.expanduser().resolve()
        if self.landing_dir is None:
            self.landing_dir = self.state_dir / "landing"
        if self.evidently_workspace_dir is None:
            self.evidently_workspace_dir = self.state_dir / "evidently"
        if self.training_window_candidates is not None:
            self._check_window_candidates(self.training_window_candidates)
        if self.live_quality_min_events > self.live_quality_window:  # live_quality would never give a verdict (the review)
            raise ValueError(f"live_quality_min_events ({env_name('live_quality_min_events')}) {self.live_quality_min_events} is more than the "
                             f"live_quality_window ({env_name('live_quality_window')}) {self.live_quality_window} it counts them in: no verdict could ever be given")
        if self.min_training_rows > self.training_window:  # every training would refuse: the window holds fewer labelled events
            raise ValueError(f"min_training_rows ({env_name('min_training_rows')}) {self.min_training_rows} is more than the training_window "
                             f"({env_name('training_window')}) {self.training_window}, the most labelled events a training reads: no training could ever run")
        return self

    def floor_of(self, metric: str) -> float | None:
        """The quality floor set for models whose primary metric is `metric` (None: the task's default)."""
        return self.quality_floor.get(metric) if isinstance(self.quality_floor, dict) else self.quality_floor  # type: ignore[call-overload]

    def _check_window_candidates(self, candidates: list[int]) -> None:
        """Refuse a candidate list that cannot be meant: empty, a size < 1, a repeat, or one larger than the window read."""
        name = f"training_window_candidates ({env_name('training_window_candidates')})"
        if not candidates:
            raise ValueError(f"{name}: give at least one window size (one size is a single fixed window)")
        if bad := [c for c in candidates if c < 1]:
            raise ValueError(f"{name}: window sizes must be ≥ 1 events, got {bad}")
        if repeated := sorted({c for c in candidates if candidates.count(c) > 1}):
            raise ValueError(f"{name}: repeated window sizes {repeated}")
        if larger := [c for c in candidates if c > self.training_window]:
            raise ValueError(f"{name}: {larger} larger than training_window ({self.training_window}), the most events a training reads")
        holdout = min(int(self.training_window * self.holdout_fraction), self.holdout_max_rows)  # at a full window
        if max(candidates) - holdout < self.train_part_min_rows:  # the largest is always trained: it would always fail
            raise ValueError(f"{name}: the largest, {max(candidates)}, leaves {max(candidates) - holdout} training rows beside a full window's hold-out of "
                             f"{holdout} (holdout_fraction, holdout_max_rows), fewer than the {self.train_part_min_rows} min_training_rows asks for")

    @property
    def train_part_min_rows(self) -> int:
        """The labelled rows a window's training part needs: min_training_rows' share once the hold-out is split off. One
        rule for `features` and `trained_model`: training asked for all of min_training_rows on that part, so a window of
        200 to 249 labelled events passed `features` and then failed every training (the review)."""
        return max(10, int(self.min_training_rows * (1 - self.holdout_fraction)))

    @property
    def window_candidates(self) -> tuple[int, ...]:
        """The candidate training windows, largest first (the default: the whole window and its newest tenth)."""
        sizes = self.training_window_candidates or [self.training_window, self.training_window // 10]
        return tuple(sorted(set(sizes), reverse=True))

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"

    @property
    def mlflow_dir(self) -> Path:
        return self.state_dir / "mlflow"

    @property
    def tracking_uri(self) -> str:
        """Where the platform tracks: the explicit URI, else the MLflow server when it has a database, else SQLite."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return self.mlflow_ui_url if self.mlflow_backend_store_url is not None else self.mlflow_server_store_uri

    @property
    def mlflow_server_store_uri(self) -> str:
        """The store behind the MLflow server `mlplatform dev` starts."""
        if self.mlflow_backend_store_url is not None:
            return self.mlflow_backend_store_url.get_secret_value()
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifacts_dir_uri(self) -> str:
        """The folder holding the artifacts, written by the clients (embedded) or by the MLflow server (proxied)."""
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def retry_budget(self) -> RetryBudget:
        return RetryBudget(self.external_retry_budget_seconds)

    def policy_config(self, estimated_drop: bool = True) -> PolicyConfig:
        """The retraining policy these settings describe: the sensor's, and the adaptation benchmark's, which estimates
        no performance (`estimated_drop=False`) but must otherwise decide as the sensor does."""
        from mlplatform.domain.policy import PolicyConfig  # pandas comes with it: not for every reader of a setting

        return PolicyConfig(self.retrain_every_n, self.min_new_labelled_for_drift, self.retrain_cooldown_seconds,
                            self.estimated_drop_margin if estimated_drop and self.retrain_on_estimated_drop else None, self.estimated_drop_events,
                            self.quality_drop_margin if self.retrain_on_quality_drop else None, self.quality_drop_events)

    @property
    def artifact_root(self) -> str:
        """Where new experiments put artifacts: through the tracking server's proxy when tracking over HTTP (clients on
        other machines cannot write the server's folder), else straight into the folder."""
        return "mlflow-artifacts:" if self.tracking_uri.startswith(("http://", "https://")) else self.artifacts_dir_uri

    @property
    def events_dir(self) -> Path:
        return self.state_dir / "events"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"

    @property
    def work_dir(self) -> Path:
        """Snapshots handed from one asset to the next (feature windows, hold-outs)."""
        return self.state_dir / "work"

    def ensure_dirs(self) -> None:
        for path in (self.state_dir, self.dagster_home, self.mlflow_dir, self.events_dir, self.reports_dir, self.work_dir, self.landing_dir):
            path.mkdir(parents=True, exist_ok=True)
