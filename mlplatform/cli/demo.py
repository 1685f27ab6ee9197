"""`mlplatform demo`: the whole loop on the default dataset, against a real Dagster instance and MLflow store."""

import time
from collections.abc import Callable

import dagster as dg
import pandas as pd

from mlplatform.cli.quarantine import nothing_to_train_on
from mlplatform.cli.stack import IN_USE_FILE, LOCK_FILE, empty_unless_used
from mlplatform.cli.status import decision_said
from mlplatform.domain.keys import (CHAMPION_VERSION, DATASET_DRIFT, DRIFT_COLUMNS, DRIFT_SHARE, DRIFT_SHARE_TAG, DRIFTED_COLUMN_NAMES, DRIFTED_COLUMNS, NEW_LABELLED_TAG,
                                   REASON_TAG, REPORT_URL, SKIP_REASON, SKIPPED)
from mlplatform.domain.policy import DRIFT
from mlplatform.domain.spec import DatasetSpec
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.orchestration.launch import LaunchError, launch, materialize, tick
from mlplatform.orchestration.names import DRIFT_REPORT, EVALUATION_REPORT, ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.pipeline.replay import DriftScenario, ReplayError, inject_drift, read_source, write_batches
from mlplatform.root import ModelContext, forget_platforms, platform
from mlplatform.settings import Settings

DEMO_MODEL = "adult"
DEMO_MARKER = ".mlplatform-demo"
FIRST_WINDOW = 10_000
BATCH = 2_500
DRIFTED_ROWS = 4_000
DRIFTED_COLUMNS_PER_TYPE = 4


class DemoError(RuntimeError):
    """The demo cannot run (for example it would overwrite state it did not create)."""


def reset_state(settings: Settings) -> None:
    """Start from an empty state folder, but only one the demo created (or one without a file: empty folders hold nothing)."""
    state = settings.state_dir
    locks = {state / LOCK_FILE, state / IN_USE_FILE}
    if state.exists() and any(p.is_file() and p not in locks for p in state.rglob("*")) and not (state / DEMO_MARKER).exists():
        raise DemoError(f"{state} holds state the demo did not create; set MLPLATFORM_STATE_DIR to another folder or remove it")
    if (user := empty_unless_used(state)) is not None:
        raise DemoError(f"{state} is in use by {user}: the demo starts from an empty state folder and would delete the event logs, "
                        "model versions and reports it works on. Stop it first, or set MLPLATFORM_STATE_DIR to another folder")
    forget_platforms()
    (state / DEMO_MARKER).write_text("created by mlplatform demo\n", encoding="utf-8")


def _sensor_tick(instance: dg.DagsterInstance, names: ModelNames, cursor: str | None,
                 say: Callable[[str], None]) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """One tick of the retraining sensor; held by the cool-down since the latest retraining, one more without it."""
    result = tick(instance, names.retraining_sensor, cursor)
    if not result.run_requests and (result.skip_message or "").startswith("cool-down"):
        say(f"   sensor: {result.skip_message}; the demo replays hours of traffic in seconds, so it lifts the cool-down for one more tick")
        result = tick(instance, names.retraining_sensor, cursor, PlatformResource(retrain_cooldown_seconds=0))
    return list(result.run_requests or []), result.cursor, result.skip_message


def _retrain(instance: dg.DagsterInstance, model: str, request: dg.RunRequest, say: Callable[[str], None]) -> dict[str, object]:
    """Run the retraining the sensor asked for and say its decision; returns the evaluation's metadata."""
    launch(instance, model, request)
    evaluation = latest_metadata(instance, ModelNames(model).asset(EVALUATION_REPORT)) or {}
    say(f"   {decision_said(evaluation)}")
    return evaluation


def run_demo(settings: Settings, model_name: str = DEMO_MODEL, say: Callable[[str], None] = print) -> dict[str, object]:
    started = time.perf_counter()
    reset_state(settings)
    prepare_dagster_home(settings)
    model = platform(settings).model(model_name)
    spec, names = model.spec, ModelNames(model.name)
    landing = model.settings.landing_dir
    try:
        rows = read_source(spec)
    except ReplayError as exc:  # a time_format that does not read the source's times: it ended in a traceback
        raise DemoError(f"model {model.name}'s source cannot be replayed: {exc}") from None
    n = model.settings.retrain_every_n
    say(f"mlplatform demo · model {model.name} ({len(rows)} rows) of {len(platform(settings).models)} in the code location · state {settings.state_dir}")
    try:
        with dg.DagsterInstance.get() as instance:
            write_batches(rows.iloc[:FIRST_WINDOW], spec, landing, BATCH)
            say(f"1. replayed {FIRST_WINDOW} events into {landing}")
            materialize(instance, model.name, ["raw_events", "features", "trained_model", "evaluation_report"])
            first = latest_metadata(instance, names.asset(EVALUATION_REPORT)) or {}
            say(f"   {decision_said(first)}")

            right_after = tick(instance, names.retraining_sensor, None)
            cursor = right_after.cursor
            say(f"2. sensor right after the first champion: {right_after.skip_message or right_after.run_requests}")
            write_batches(rows.iloc[FIRST_WINDOW : FIRST_WINDOW + n], spec, landing, BATCH)
            materialize(instance, model.name, ["raw_events"])
            requests, cursor, skip = _sensor_tick(instance, names, cursor, say)
            if len(requests) != 1:
                raise DemoError(f"expected one retraining request after {n} new labelled events, got {requests} ({skip})")
            say(f"   replayed {n} more labelled events; the sensor asks for a retraining: reason={requests[0].tags[REASON_TAG]}")
            second = _retrain(instance, model.name, requests[0], say)
            say(f"   champion is v{second.get(CHAMPION_VERSION)}")
            third = _drift_step(instance, model, rows, FIRST_WINDOW + n, cursor, say)
    except LaunchError as exc:
        raise DemoError(nothing_to_train_on(model, exc) or str(exc)) from exc
    say(f"done in {time.perf_counter() - started:.0f}s. Where to look:")
    say(f"  Dagster UI:   make dev, then {settings.dagster_ui_url} (assets of every model, runs, the retraining sensors)")
    say(f"  MLflow UI:    make dev, then {settings.mlflow_ui_url} (model {spec.model_name}, alias @champion)")
    say(f"  state folder: {settings.state_dir} (event logs, reports, MLflow store, Dagster home)")
    say(f"  drift:        make dev, then each report's page (above; rendered from its snapshot in {settings.reports_dir / 'drift'}) "
        f"and {settings.evidently_ui_url} (Evidently's UI: drift over time per model)")
    say(f"  status:       .venv/bin/mlplatform status --model {model.name}")
    return {"first": first, "second": second, **third, "state_dir": str(settings.state_dir)}


def drift_scenario(spec: DatasetSpec, reference: pd.DataFrame, seed: int) -> DriftScenario:
    """Works for any spec: the first numeric columns shift by 1.5 standard deviations, the first categorical
    columns get their rarest category in 60 % of rows."""
    mix = {c: str(reference[c].dropna().value_counts().index[-1]) for c in spec.categorical_features[:DRIFTED_COLUMNS_PER_TYPE] if reference[c].notna().any()}
    return DriftScenario(shift_numeric={c: 1.5 for c in spec.numeric_features[:DRIFTED_COLUMNS_PER_TYPE]}, category_mix=mix, seed=seed)


def _drift_step(instance: dg.DagsterInstance, model: ModelContext, rows: pd.DataFrame, start: int, cursor: str | None,
                say: Callable[[str], None]) -> dict[str, object]:
    """Fewer drifted events than N (but enough labels for a drift trigger): only the drift report can start this retraining."""
    settings, spec, names = model.settings, model.spec, ModelNames(model.name)
    count = min(settings.retrain_every_n - 1, max(settings.min_new_labelled_for_drift, DRIFTED_ROWS))
    scenario = drift_scenario(spec, rows.iloc[:start], settings.seed)
    write_batches(inject_drift(rows.iloc[start : start + count], spec, scenario, reference=rows.iloc[:start]), spec, settings.landing_dir, BATCH, prefix="drifted")
    say(f"3. replayed {count} drifted events: shifted {', '.join(scenario.shift_numeric)}; rarest category made common in {', '.join(scenario.category_mix)}")
    materialize(instance, model.name, ["raw_events", "drift_report", "drift_dashboard"])
    drift = latest_metadata(instance, names.asset(DRIFT_REPORT)) or {}
    if drift.get(SKIPPED, True):
        raise DemoError(f"the drift report was skipped: {drift.get(SKIP_REASON)}")
    verdict = "dataset drift" if drift[DATASET_DRIFT] else "no dataset drift"
    say(f"   drift report: {verdict}, share {float(str(drift[DRIFT_SHARE])):.2f} ({drift[DRIFTED_COLUMNS]} of {drift[DRIFT_COLUMNS]} columns: {drift[DRIFTED_COLUMN_NAMES]})")
    requests, next_cursor, skip = _sensor_tick(instance, names, cursor, say)
    if len(requests) != 1 or requests[0].tags.get(REASON_TAG) != DRIFT:
        raise DemoError(f"expected one drift-triggered retraining request, got {requests} ({skip})")
    tags = requests[0].tags
    say(f"   the sensor asks for a retraining: reason={tags[REASON_TAG]}, drift share {tags[DRIFT_SHARE_TAG]}, {tags[NEW_LABELLED_TAG]} new labelled events")
    third = _retrain(instance, model.name, requests[0], say)
    say(f"   champion is v{third.get(CHAMPION_VERSION)}; drift report: {drift[REPORT_URL]} (with make dev)")
    return {"drift": drift, "third": third, "drift_cursor": next_cursor}
