"""`mlplatform demo`: the whole loop on the default dataset (or --model's, its acts fitted to its source), against a
real Dagster instance and MLflow store."""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dagster as dg
import pandas as pd
from dagster._core.definitions.sensor_definition import SensorExecutionData

from mlplatform.cli.quarantine import nothing_to_train_on
from mlplatform.cli.stack import IN_USE_FILE, LOCK_FILE, empty_unless_used
from mlplatform.cli.status import decision_said
from mlplatform.domain.keys import (CHAMPION_VERSION, DATASET_DRIFT, DRIFT_COLUMNS, DRIFT_SHARE, DRIFT_SHARE_TAG, DRIFTED_COLUMN_NAMES, DRIFTED_COLUMNS, NEW_LABELLED_TAG,
                                   REASON_TAG, REPORT_URL, SKIP_REASON, SKIPPED)
from mlplatform.domain.policy import DRIFT
from mlplatform.domain.spec import DatasetSpec
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.orchestration.errors import BLOCKING_CHECK_FAILED
from mlplatform.orchestration.launch import LaunchError, launch, materialize, tick
from mlplatform.orchestration.names import DRIFT_REPORT, EVALUATION_REPORT, ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.pipeline.replay import DriftScenario, ReplayError, canonical_labels, inject_drift, read_source, write_batches
from mlplatform.root import ModelContext, forget_platforms, platform
from mlplatform.settings import Settings

DEMO_MODEL = "adult"
DEMO_MARKER = ".mlplatform-demo"
# Adult's story, in events: the first champion's window, the new labelled events whose count calls for a retraining
# (retrain_every_n's default), and the drifted ones whose drift report calls for the next. A smaller source gets each
# act in the same shares of its events.
FIRST_WINDOW = 10_000
NEW_LABELLED = 5_000
DRIFTED_ROWS = 4_000
STORY = FIRST_WINDOW + NEW_LABELLED + DRIFTED_ROWS
MIN_EVENTS = 1_000  # its smallest act then holds about 200 events: fewer, and a hold-out or a drift report says little
BATCH = 2_500
DRIFTED_COLUMNS_PER_TYPE = 4
MAX_OWN_COOLDOWN_S = 300.0  # a model's own cool-down the demo waits out (twice at most); a longer one is refused before it starts
COOLDOWN_POLL_S = 5.0


class DemoError(RuntimeError):
    """The demo cannot run (for example it would overwrite state it did not create)."""


@dataclass(frozen=True)
class DemoPlan:
    """The events each act of the demo replays, and the retraining sensor's thresholds in its ticks, so that each act
    ends as the demo says: `new_labelled` events call for a retraining by their count (retrain_every_n), and the fewer
    `drifted` ones only through their drift report (min_new_labelled_for_drift at most `drifted`)."""

    first: int
    new_labelled: int
    drifted: int
    drift_bar: int

    def thresholds(self, settings: Settings) -> dict[str, int]:
        """The thresholds this plan sets other than `settings` (the model's own), for the demo's sensor ticks."""
        wanted = {"retrain_every_n": self.new_labelled, "min_new_labelled_for_drift": self.drift_bar}
        return {name: value for name, value in wanted.items() if getattr(settings, name) != value}


def plan_demo(model: str, events: int, settings: Settings) -> DemoPlan:
    """The first window gets its share of the events (at most Adult's 10,000) and the new labelled events the model's
    retrain_every_n, cut to what the window and the drifted events' share leave; the drifted events are fewer than
    those, as in Adult's story, which stays as it was. DemoError, up front, below the events the first training
    (min_training_rows) and the drift report (drift_min_current_rows) need."""
    needed = max(MIN_EVENTS, -(-settings.min_training_rows * STORY // FIRST_WINDOW), -(-settings.drift_min_current_rows * STORY // DRIFTED_ROWS))
    if events < needed:
        raise DemoError(f"model {model}'s source has {events} labelled events; the demo needs at least {needed} (a first champion's window, "
                        "new labelled events that call for a retraining, then drifted events for a drift report)")
    first = min(FIRST_WINDOW, events * FIRST_WINDOW // STORY)
    new_labelled = min(settings.retrain_every_n, events - first - min(DRIFTED_ROWS, events * DRIFTED_ROWS // STORY))
    drifted = min(new_labelled - 1, max(settings.min_new_labelled_for_drift, DRIFTED_ROWS), events - first - new_labelled)
    if drifted < settings.drift_min_current_rows:
        raise DemoError(f"model {model}'s retrain_every_n ({settings.retrain_every_n}) leaves the demo's drifted events, fewer than it, at "
                        f"{drifted}, under the {settings.drift_min_current_rows} a drift report needs (drift_min_current_rows)")
    return DemoPlan(first, new_labelled, drifted, min(settings.min_new_labelled_for_drift, drifted))


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


def own_cooldown(name: str, thresholds: dict[str, int]) -> float:
    """The cool-down the sensor keeps for `name` when the demo lifts it: the model's own `loop:` one, which wins over
    the demo's (0 when the model sets none)."""
    return PlatformResource(**thresholds, retrain_cooldown_seconds=0).model(name).settings.retrain_cooldown_seconds


def _held(result: SensorExecutionData) -> bool:
    """Whether a tick asked for nothing because of the cool-down."""
    return not result.run_requests and (result.skip_message or "").startswith("cool-down")


def _sensor_tick(instance: dg.DagsterInstance, names: ModelNames, cursor: str | None, thresholds: dict[str, int],
                 say: Callable[[str], None]) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """One tick of the retraining sensor at the plan's thresholds; held by the cool-down since the latest retraining, one
    more without it; held by the model's own cool-down (which the demo cannot lift, at most MAX_OWN_COOLDOWN_S), ticks
    until it has passed (a model's `loop: {retrain_cooldown_seconds: 60}` failed the demo: the River probe)."""
    result = tick(instance, names.retraining_sensor, cursor, PlatformResource(**thresholds))
    if _held(result):
        say(f"   sensor: {result.skip_message}; the demo replays hours of traffic in seconds, so it lifts the cool-down for one more tick")
        lifted = PlatformResource(**thresholds, retrain_cooldown_seconds=0)
        result = tick(instance, names.retraining_sensor, cursor, lifted)
        if _held(result):
            say(f"   sensor: {result.skip_message}: the model's own cool-down, which the demo waits out")
            deadline = time.monotonic() + own_cooldown(names.model, thresholds) + COOLDOWN_POLL_S
            while _held(result) and time.monotonic() < deadline:
                time.sleep(COOLDOWN_POLL_S)
                result = tick(instance, names.retraining_sensor, cursor, lifted)
    return list(result.run_requests or []), result.cursor, result.skip_message


def _retrain(instance: dg.DagsterInstance, model: str, request: dg.RunRequest, say: Callable[[str], None]) -> dict[str, object]:
    """Run the retraining the sensor asked for and say its decision; returns the evaluation's metadata. A challenger the
    quality floor refused is a decision (rejected: the champion serves on), not a failed demo, though its blocking check
    fails the run; on a user's data a drifted window may hold too little signal to pass (the demo's review)."""
    try:
        launch(instance, model, request)
    except LaunchError as exc:
        if exc.failed_on != {BLOCKING_CHECK_FAILED}:  # the floor's check alone: any other failure is the demo's to report
            raise
    evaluation = latest_metadata(instance, ModelNames(model).asset(EVALUATION_REPORT)) or {}
    say(f"   {decision_said(evaluation)}")
    return evaluation


def _labelled_rows(model: ModelContext) -> tuple[pd.DataFrame, list[str]]:
    """The source's rows that carry a label, in order (the acts count labelled events, as the sensor does), and notes on
    the rows left out: rows landing would quarantine for their time, as `replay` leaves them out, and rows without a label.
    A source that cannot be replayed is a DemoError."""
    notes: list[str] = []
    try:
        rows = read_source(model.spec, notes)
    except ReplayError as exc:
        raise DemoError(f"model {model.name}'s source cannot be replayed: {exc}") from None
    labelled = canonical_labels(rows, model.spec).notna().to_numpy()
    if not labelled.all():
        notes.append(f"{int((~labelled).sum())} of {len(rows)} rows have no label the spec reads in {model.spec.label!r}: left out")
    return rows[labelled].reset_index(drop=True), notes


def run_demo(settings: Settings, model_name: str = DEMO_MODEL, say: Callable[[str], None] = print) -> dict[str, object]:
    """The demo's three acts on `model_name`'s source, scaled to its events (planned, and refused if too few, before the
    state folder is reset)."""
    started = time.perf_counter()
    model = platform(settings).model(model_name)
    rows, notes = _labelled_rows(model)
    plan = plan_demo(model.name, len(rows), model.settings)
    thresholds = plan.thresholds(model.settings)
    seen = PlatformResource(**thresholds).model(model.name).settings  # what the sensor reads: a model's own loop: wins over a resource
    if (seen.retrain_every_n, seen.min_new_labelled_for_drift) != (plan.new_labelled, plan.drift_bar):
        raise DemoError(f"model {model.name}'s source has {len(rows)} labelled events, for which the demo sets retrain_every_n {plan.new_labelled} and "
                        f"min_new_labelled_for_drift {plan.drift_bar}; {model.declared_in} sets its own in loop:, which the demo cannot change")
    if (cooldown := own_cooldown(model.name, thresholds)) > MAX_OWN_COOLDOWN_S:
        raise DemoError(f"{model.declared_in} sets retrain_cooldown_seconds {cooldown:g} in loop:, which the demo cannot lift and would wait out "
                        f"twice; it waits out at most {MAX_OWN_COOLDOWN_S:g} s: run the demo on a copy of the model without it")
    reset_state(settings)
    prepare_dagster_home(settings)
    model = platform(settings).model(model_name)
    spec, names = model.spec, ModelNames(model.name)
    landing = model.settings.landing_dir
    say(f"mlplatform demo · model {model.name} ({len(rows)} labelled events) of {len(platform(settings).models)} in the code location · state {settings.state_dir}")
    for note in notes:
        say(f"   source: {note}")
    if thresholds:
        say(f"   the acts fit the source's events: {plan.first}, {plan.new_labelled} and {plan.drifted}; the sensor's ticks take "
            + ", ".join(f"{name} {value} (the model's: {getattr(model.settings, name)})" for name, value in thresholds.items()))
    n = plan.new_labelled
    try:
        with dg.DagsterInstance.get() as instance:
            write_batches(rows.iloc[:plan.first], spec, landing, BATCH)
            say(f"1. replayed {plan.first} events into {landing}")
            materialize(instance, model.name, ["raw_events", "features", "trained_model", "evaluation_report"])
            first = latest_metadata(instance, names.asset(EVALUATION_REPORT)) or {}
            say(f"   {decision_said(first)}")

            right_after = tick(instance, names.retraining_sensor, None, PlatformResource(**thresholds))
            cursor = right_after.cursor
            say(f"2. sensor right after the first champion: {right_after.skip_message or right_after.run_requests}")
            write_batches(rows.iloc[plan.first : plan.first + n], spec, landing, BATCH)
            materialize(instance, model.name, ["raw_events"])
            requests, cursor, skip = _sensor_tick(instance, names, cursor, thresholds, say)
            if len(requests) != 1:
                raise DemoError(f"expected one retraining request after {n} new labelled events, got {requests} ({skip})")
            say(f"   replayed {n} more labelled events; the sensor asks for a retraining: reason={requests[0].tags[REASON_TAG]}")
            second = _retrain(instance, model.name, requests[0], say)
            say(f"   champion is v{second.get(CHAMPION_VERSION)}")
            third = _drift_step(instance, model, rows, plan, cursor, thresholds, say)
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


def drift_scenario(spec: DatasetSpec, reference: pd.DataFrame, seed: int, share_threshold: float) -> DriftScenario:
    """Works for any spec: the first numeric columns shift by 1.5 standard deviations, the first categorical columns
    get their rarest category in 60 % of rows; at least DRIFTED_COLUMNS_PER_TYPE of each, and together more than
    `share_threshold` of the columns drift compares, in proportion to their kinds (four of each were 11 % of a
    103-column spec: no dataset drift, and the demo failed on it, the yeast probe)."""
    numeric = [c for c in spec.numeric_features if pd.to_numeric(reference[c], errors="coerce").std() > 0]  # a constant shifts by 0 σ
    categorical = [c for c in spec.categorical_features if reference[c].nunique() > 1]
    compared = len(spec.modelled_features)
    needed = min(len(numeric) + len(categorical), math.floor(share_threshold * compared) + 1 + compared // 20)  # a column in 20 to spare
    shifted = min(len(numeric), max(DRIFTED_COLUMNS_PER_TYPE, math.ceil(needed * len(numeric) / max(compared, 1))))
    mixed = min(len(categorical), max(DRIFTED_COLUMNS_PER_TYPE, needed - shifted))
    shifted = min(len(numeric), max(shifted, needed - mixed))
    mix = {c: str(reference[c].dropna().value_counts().index[-1]) for c in categorical[:mixed]}
    return DriftScenario(shift_numeric={c: 1.5 for c in numeric[:shifted]}, category_mix=mix, seed=seed)


def _named(columns: Iterable[str]) -> str:
    """Column names as a line: all of a few, the first four and the count of many."""
    names = list(columns)
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:4])} and {len(names) - 4} more"


def _drift_step(instance: dg.DagsterInstance, model: ModelContext, rows: pd.DataFrame, plan: DemoPlan, cursor: str | None,
                thresholds: dict[str, int], say: Callable[[str], None]) -> dict[str, object]:
    """Fewer drifted events than N (but enough labels for a drift trigger): only the drift report can start this retraining."""
    settings, spec, names = model.settings, model.spec, ModelNames(model.name)
    start, count = plan.first + plan.new_labelled, plan.drifted
    scenario = drift_scenario(spec, rows.iloc[:start], settings.seed, settings.drift_share_threshold)
    write_batches(inject_drift(rows.iloc[start : start + count], spec, scenario, reference=rows.iloc[:start]), spec, settings.landing_dir, BATCH, prefix="drifted")
    changes = [f"shifted {_named(scenario.shift_numeric)}"] if scenario.shift_numeric else []
    changes += [f"rarest category made common in {_named(scenario.category_mix)}"] if scenario.category_mix else []  # a spec without any said an empty list
    say(f"3. replayed {count} drifted events: {'; '.join(changes)}")
    materialize(instance, model.name, ["raw_events", "drift_report", "drift_dashboard"])
    drift = latest_metadata(instance, names.asset(DRIFT_REPORT)) or {}
    if drift.get(SKIPPED, True):
        raise DemoError(f"the drift report was skipped: {drift.get(SKIP_REASON)}")
    verdict = "dataset drift" if drift[DATASET_DRIFT] else "no dataset drift"
    say(f"   drift report: {verdict}, share {float(str(drift[DRIFT_SHARE])):.2f} ({drift[DRIFTED_COLUMNS]} of {drift[DRIFT_COLUMNS]} columns: {drift[DRIFTED_COLUMN_NAMES]})")
    requests, next_cursor, skip = _sensor_tick(instance, names, cursor, thresholds, say)
    if len(requests) != 1 or requests[0].tags.get(REASON_TAG) != DRIFT:
        raise DemoError(f"expected one drift-triggered retraining request, got {requests} ({skip})")
    tags = requests[0].tags
    say(f"   the sensor asks for a retraining: reason={tags[REASON_TAG]}, drift share {tags[DRIFT_SHARE_TAG]}, {tags[NEW_LABELLED_TAG]} new labelled events")
    third = _retrain(instance, model.name, requests[0], say)
    say(f"   champion is v{third.get(CHAMPION_VERSION)}; drift report: {drift[REPORT_URL]} (with make dev)")
    return {"drift": drift, "third": third, "drift_cursor": next_cursor}
