"""Every key one part of the platform writes and another reads, defined once.

Dagster run tags use `mlplatform/…` (Dagster's own convention is `dagster/…`); MLflow tags use
`mlplatform.…` (MLflow shows dotted keys grouped). Metadata names are the ones sensors, alerts,
status and the CLI read back from materializations.
"""

# Dagster run tags
RUN_TAG_PREFIX = "mlplatform/"
MODEL_TAG = "mlplatform/model"
REASON_TAG = "mlplatform/reason"
NEW_LABELLED_TAG = "mlplatform/new_labelled"
LABEL_WATERMARK_TAG = "mlplatform/label_watermark"
CHAMPION_CUTOFF_TAG = "mlplatform/champion_cutoff"
DRIFT_SHARE_TAG = "mlplatform/drift_share"
DRIFT_REPORT_TAG = "mlplatform/drift_report"
LAUNCHED_BY_TAG = "mlplatform/launched_by"
# On a run a stack starting found with its worker gone (the stack before it stopped, or was killed, with the run in
# flight), its own run id: failed so that run retries launch it again, and alerted as an interruption (warning), not as a
# failure. A retry inherits its parent's tags: the id tells the run that was interrupted from its retry.
STACK_STOPPED_TAG = "mlplatform/stack_stopped"
COMMAND_RUN_TAG = "mlplatform/command_run"  # a token of the command that orchestrates a run on Celery: how its interrupt finds the run
RUN_WORKER_TAG = "mlplatform/run_worker"  # "<pid>:<start time>" of the process WarmRunLauncher forked for a run: what terminating and run monitoring look at
# "<host>/<pid>:<start time>" of the mlplatform command that created a run: gone before the run ended, it left the run behind.
COMMAND_PROCESS_TAG = "mlplatform/command_process"
TRIGGERED_AT_TAG = "mlplatform/triggered_at"
# On a run whose trigger the policy decided again after runs that failed before deciding: how many failed so in a row, and
# the policy's cursor before the first of them (JSON), so neither depends on how many runs a query reads back.
AGAIN_TAG = "mlplatform/again"
AGAIN_BASE_TAG = "mlplatform/again_base"
# On every run that carries a trigger of a model's retraining policy (value: the model), whoever decided it: the retraining
# sensor when it requests the run, or the retraining_trigger step inside a drift report run. The policy's cursor is rebuilt from these.
POLICY_TRIGGER_TAG = "mlplatform/policy_trigger"
RETRAIN_TAG = "mlplatform/retrain"
ESTIMATE_TAG = "mlplatform/estimate"  # storage id of the estimated_performance materialization an estimated_drop consumed
QUALITY_TAG = "mlplatform/live_quality"  # storage id of the live_quality materialization a quality_drop consumed


def reading_tags(kind: str) -> tuple[str, str, str, str, str]:
    """The run tags that record the reading a drop reason fired on (`kind`: estimated or realized): metric, value, band,
    reference, events."""
    return tuple(f"{RUN_TAG_PREFIX}{kind}_{part}" for part in ("metric", "value", "band", "reference", "events"))  # type: ignore[return-value]


ESTIMATED_METRIC_TAG, ESTIMATED_VALUE_TAG, ESTIMATED_BAND_TAG, ESTIMATED_REFERENCE_TAG, ESTIMATED_EVENTS_TAG = reading_tags("estimated")
REALIZED_METRIC_TAG, REALIZED_VALUE_TAG, REALIZED_BAND_TAG, REALIZED_REFERENCE_TAG, REALIZED_EVENTS_TAG = reading_tags("realized")
SHADOW_EVIDENCE = "shadow_evidence"  # REASON_TAG of the evaluation the retraining sensor requests once a challenger's shadow evidence is in
SHADOW_WAIT_OVER = "shadow_wait_over"  # REASON_TAG of the one it requests once the challenger waited shadow_max_wait_seconds without it
PRIORITY_TAG = "dagster/priority"  # Dagster's queue starts higher-priority runs first
# The Celery executor's own step order (dagster-celery's default task priority is 5; higher is sent first).
CELERY_STEP_PRIORITY_TAG = "dagster-celery/priority"
RUN_KEY_TAG = "dagster/run_key"  # the run key of the sensor request a run came from (its retries keep it)
PARENT_RUN_ID_TAG = "dagster/parent_run_id"  # on a re-execution (a run retry): the run it re-executes
WILL_RETRY_TAG = "dagster/will_retry"  # set by the instance on a failed run when run retries will re-launch it
RETRY_ON_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"  # "false" on a run: the daemon's run retry leaves it failed

# MLflow tags (model versions and the registered model)
MLFLOW_TAG_PREFIX = "mlplatform."


def mlflow_tag(key: str) -> str:
    """The MLflow tag name of `key`: `decision` -> `mlplatform.decision`."""
    return MLFLOW_TAG_PREFIX + key


WINDOW_TAG_PREFIX = mlflow_tag("window.")  # + a field of the training window a version learned from (retraining.Window)


def window_tag(field: str) -> str:
    """The version tag of one field of its training window: `start` -> `mlplatform.window.start`."""
    return WINDOW_TAG_PREFIX + field


WINDOW_CUTOFF = window_tag("label_seq_cutoff")
POSITIVE_CLASS_TAG = mlflow_tag("positive_class")  # of a binary version: the class its probability is of
DECISION_THRESHOLD_TAG = mlflow_tag("decision_threshold")  # of a binary version, read by `status` without loading the model
DECISION_THRESHOLD_PARAM = "decision_threshold"  # of a binary version (its training run's MLflow param, trained_model's metadata): where its positive class starts
DECISION = mlflow_tag("decision")
DECISION_REASON = mlflow_tag("decision_reason")
AWAITING_SHADOW = "awaiting_shadow"  # DECISION of a challenger that won on the hold-out and waits for its live shadow evidence
PROMOTED = "promoted"  # DECISION of a challenger made champion
REJECTED = "rejected"  # DECISION of a challenger that stays a plain version
SHADOW_METRICS = mlflow_tag("shadow_metrics")
CHALLENGER_SCORE = mlflow_tag("challenger_score")
DECISION_METRIC_TAG = mlflow_tag("decision_metric")  # the metric CHALLENGER_SCORE is of: the one that decided
TRIGGER_REASON = mlflow_tag("trigger.reason")
PINNED = mlflow_tag("pinned")
DAGSTER_RUN_TAG = mlflow_tag("dagster_run_id")  # on a version: the Dagster run that trained it
ESTIMATOR = mlflow_tag("estimator")  # cbpe, dle, or NO_ESTIMATOR_PREFIX and why
NO_ESTIMATOR_PREFIX = "none: "
# + a metric name: the MLflow metrics of a version's run holding its realized metrics on its hold-out, the reference its
# performance estimate and its live quality are compared with
ESTIMATOR_REFERENCE_PREFIX = "estimator_reference_"
CHAMPION_CHANGE = mlflow_tag("champion.")  # + zero-padded sequence number: one registered-model tag per alias move
# The version the platform is moving `@champion` to: set before the alias moves, removed once the move's timeline entry
# is written, so a reader in between tells the platform's own move from one made outside it.
CHAMPION_MOVING = mlflow_tag("champion_moving")

# The challenger's training window chosen on the hold-out (MLflow param and trained_model metadata), the candidates
# tried (MLflow param, largest first), and per candidate its hold-out score (metadata; MLflow metrics window_<size>_holdout_<metric>)
CHOSEN_WINDOW = "training_window_chosen"
WINDOW_CANDIDATES = "training_window_candidates"
WINDOW_SCORES = "training_window_scores"
# The candidate window since the champion's errors rose (MLflow param and trained_model metadata; "none": none offered)
CHANGE_WINDOW = "training_window_since_change"
# trained_model metadata: the rows the registered model was fitted on (the chosen window's training rows, plus the hold-out
# when refit; MLflow metric train_rows), and the window its version's tags record (the `window.*` tags: the chosen
# window's training rows and the hold-out, by event ids, times and label cut-off), so the metadata and MLflow agree
FITTED_ROWS = "fitted_rows"
TRAINED_WINDOW = "window"

# refit_on_holdout: whether the registered model was refit on its training rows + the hold-out after the choice (MLflow
# param and trained_model metadata), on how many rows (MLflow metric and trained_model metadata; 0: not refit, the
# validation model itself is registered), the same count as a version tag (evaluation_report reads the champion's), and the
# validation model's hold-out predictions (an artifact of the version's run): the evidence evaluation_report judges a refit by.
REFIT = "refit_on_holdout"
REFIT_ROWS = "refit_rows"
REFIT_ROWS_TAG = mlflow_tag("refit_rows")
VALIDATION_PREDICTIONS = "evidence/holdout_predictions.parquet"
# evaluation_report: the hold-out rows both models were scored on (the rows the champion did not train on, when it was refit)
JUDGED_ROWS = "judged_rows"

# Materialization metadata read back by sensors, alerts, status and the CLI
# raw_events: what one landing run did with the landing folder (its quality check and `mlplatform materialize` read them)
LANDED_FILES = "files"
INGESTED = "ingested"
DUPLICATES = "duplicates"
QUARANTINED = "quarantined"
LABELS_APPLIED = "labels_applied"
ROWS_READ = "rows_read"  # raw_events: rows its files held; each ended ingested, a duplicate, quarantined or a label applied (a resent known event can be both of the last)
REJECTED_FILES = "rejected_files"
SKIPPED_ENTRIES = "skipped_entries"
UNTIMED_FILES = "untimed_files"  # events files without the spec's time column, their events timed as they landed
IGNORED_COLUMNS = "ignored_columns"  # raw_events: the landed files' columns the spec does not name
LABEL_WATERMARK = "label_watermark"  # raw_events and the retraining trigger: the label sequence number read up to
SKIPPED_ENTRIES_TABLE = "skipped_entries_table"  # which entries and why (SKIPPED is another asset's flag)
# evaluation_report: the challenger won on the scores and was kept out only by a person's pin or move of the champion
KEPT_BY_PERSON = "kept_by_person"
SNAPSHOT = "snapshot"
HISTORY_HORIZON = "history_horizon"  # features: per key of the history features, how far back its rows found the key before (HorizonReach)
HISTORY_BACKDATED = "history_backdated"  # features: events landed dated before requests served earlier, whose served history lacked them (Backdated)
MLFLOW_VERSION = "mlflow_version"
SKIPPED = "skipped"
SKIP_REASON = "skip_reason"
CHAMPION_VERSION = "champion_version"
CHALLENGER_VERSION = "challenger_version"
DECISION_META = "decision"
REASON_META = "reason"
DRIFT_SHARE = "drift_share"
DATASET_DRIFT = "dataset_drift"
DRIFTED_COLUMNS = "drifted_columns"
DRIFTED_COLUMN_NAMES = "drifted_column_names"
DRIFT_COLUMNS = "columns"  # how many columns the report compared
DRIFT_SHARE_THRESHOLD = "drift_share_threshold"
REPORT_PATH = "report_path"
REPORT_URL = "report_url"  # the report as a page (the reports server renders a drift snapshot on demand)
# drift_dashboard: the drift report's snapshot's place in the Evidently workspace (links into `evidently ui`), or why it has none
EVIDENTLY_PROJECT_URL = "evidently_project_url"
EVIDENTLY_SNAPSHOT_URL = "evidently_snapshot_url"
EVIDENTLY_WORKSPACE_ERROR = "evidently_workspace_error"
# estimated_performance: the recent estimate the retraining sensor reads (no labels needed)
ESTIMATED_METRIC = "estimated_metric"
RECENT_ESTIMATE = "recent_estimate"
RECENT_LOWER = "recent_lower"
RECENT_UPPER = "recent_upper"
RECENT_EVENTS = "recent_events"
RECENT_ESTIMATED_PREFIX = "recent_estimated_"  # estimate_floor: the recent estimate it judged, by metric (estimated_*: the newest chunk's)
RECENT_NOTE = "recent_note"  # why there is no recent estimate
# The recent events whose labels came back: how many, the estimate on them alone (with its band) and the realized value,
# by which the retraining sensor lets realized performance supersede the estimate (policy.PerformanceReading.superseded).
RECENT_LABELLED = "recent_labelled"
RECENT_ESTIMATE_ON_LABELLED = "recent_estimate_on_labelled"
RECENT_LOWER_ON_LABELLED = "recent_lower_on_labelled"
RECENT_UPPER_ON_LABELLED = "recent_upper_on_labelled"
RECENT_REALIZED = "recent_realized"
RECENT_LABELLED_FIELDS = (RECENT_ESTIMATE_ON_LABELLED, RECENT_LOWER_ON_LABELLED, RECENT_UPPER_ON_LABELLED, RECENT_REALIZED)  # LabelledPart's order
ESTIMATED_CHUNK = "estimated_chunk"  # the events the headline estimated_* values cover (the newest chunk)
REALIZED_CHUNK = "realized_chunk"  # those realized_* cover (the newest labelled chunk): set side by side, they may be days apart
TRAINING_ROWS_LEFT_OUT = "training_rows_left_out"  # estimated_performance: the latest events it read that were the champion's training rows
REFERENCE = "reference"  # the champion's realized performance on its own hold-out (estimated_performance and live_quality)
# live_quality: the champion's realized performance on its latest labelled served predictions, the reading quality_drop reads
QUALITY_METRIC = "quality_metric"
QUALITY_VALUE = "quality_value"
QUALITY_LOWER = "quality_lower"
QUALITY_UPPER = "quality_upper"
QUALITY_EVENTS = "quality_events"
QUALITY_NOTE = "quality_note"  # why there is no reading
LIVE_VERDICT = "verdict"  # live_quality: the floors breached, "within floors", or why there is no verdict
LIVE_EVENTS = "events"  # live_quality: the labelled served predictions scored
LIVE_SCORED_ON = "scored_on"  # live_quality: what those events are (served predictions, or unseen events predicted now)
LIVE_VERSION = "model_version"  # live_quality: the champion version scored
FLOOR_VERDICT = "floor_verdict"  # estimated_performance: the floors the recent estimate breaches, or why there is none
TRUST_VERDICT = "trust_verdict"  # estimated_performance: where realized performance left the estimate's band

# The event log's `source` of the events the prediction service logged (landed events carry their file's name)
SERVING_SOURCE = "serving"
