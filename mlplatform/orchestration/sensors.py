"""Sensors of one model: retraining (counts, the champion and the latest drift verdict in, at most one run per
trigger out), drift reports every M events, whose runs carry the retraining their report calls for, and landing
(a raw_events run once settled files wait in the landing folder).

Both ticks read O(1) counters of the event log, the registry's `@champion` record, the latest materialization
metadata and the newest few trigger runs only: no Evidently, no scans, so a tick costs the same with 10k or 10M
events in the log (benchmarks/bench_sensor_tick.py). The registry is the one truth about the champion: move the
alias by hand (a rollback) and the next tick counts new labels from that version's cut-off. The policy itself, and
how its two callers (this sensor, a drift report run's retraining_trigger step) share one cursor: orchestration/trigger.py.
"""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from mlplatform.domain.keys import (AWAITING_SHADOW, DECISION, LAUNCHED_BY_TAG, MLFLOW_VERSION, REASON_TAG, RUN_KEY_TAG, SHADOW_EVIDENCE, SHADOW_WAIT_OVER,
                                   WILL_RETRY_TAG)
from mlplatform.domain.policy import Cursor
from mlplatform.orchestration.instance import retrain_run_tags
from mlplatform.orchestration.names import DRIFT_REPORT, DRIFT_RUN, EVALUATION_REPORT, RAW_EVENTS, RETRAINING, TRAINED_MODEL, ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.orchestration.trigger import UNFINISHED, again_after, evaluate, latest, retraining_elsewhere
from mlplatform.pipeline.landing import LandingPolicy, landing_candidates
from mlplatform.pipeline.shadow import shadow_wait_left
from mlplatform.root import ModelContext
from mlplatform.settings import Settings
from mlplatform.stores.registry import CHALLENGER, ChampionRecord, champion_gone


@dataclass(frozen=True)
class ShadowWait:
    """A hold-out winner waiting as `@challenger` for its shadow evidence, and whether evaluation_report decides on it now."""

    challenger: int
    champion: int
    due: str | None  # SHADOW_EVIDENCE (the evidence is in) or SHADOW_WAIT_OVER (waited shadow_max_wait_seconds): evaluate again; None: wait
    why: str

    @property
    def run_key(self) -> str:
        return f"{'shadow-evaluation' if self.due == SHADOW_EVIDENCE else 'shadow-wait-over'}-v{self.challenger}-vs-v{self.champion}"


def shadow_wait(instance: dg.DagsterInstance, model: ModelContext, names: ModelNames, record: ChampionRecord | None) -> ShadowWait | None:
    """The challenger awaiting its shadow evidence, if one does and is still the latest trained_model (an evaluation-only run
    evaluates that one); due once it has the evidence, or once it waited shadow_max_wait_seconds without it (no serving
    process scoring shadows, too little traffic): the wait is bounded. Read only with promotion_requires_shadow_win and an
    unpinned champion: one alias read and one count over the challenger's shadow rows."""
    settings = model.settings
    if not settings.promotion_requires_shadow_win or record is None or record.pinned:
        return None
    challenger = model.registry.version_by_alias(CHALLENGER)
    if challenger is None or challenger.tags.get(DECISION) != AWAITING_SHADOW or int(challenger.version) == record.version:
        return None
    trained = latest(instance, names.asset(TRAINED_MODEL))
    if trained is None or str(trained.metadata.get(MLFLOW_VERSION)) != str(challenger.version):
        return None
    version, needed = int(challenger.version), settings.shadow_min_events
    events = model.event_log.shadow_labelled(challenger.version, record.version)
    if events >= needed:
        return ShadowWait(version, record.version, SHADOW_EVIDENCE, f"challenger v{version} has its shadow evidence ({events} live labelled events): evaluating it again")
    left = shadow_wait_left(settings, challenger.creation_timestamp, time.time())
    if left <= 0:
        return ShadowWait(version, record.version, SHADOW_WAIT_OVER, f"challenger v{version} waited shadow_max_wait_seconds ({settings.shadow_max_wait_seconds:.0f} s) "
                                                                   f"with {events} of {needed} live labelled events scored by both: evaluating it again, on the hold-out alone")
    off = "" if settings.serve_shadow_challenger else "; serve_shadow_challenger is off in these settings: a serving process with it on must score it"
    return ShadowWait(version, record.version, None, f"challenger v{version} awaits its shadow evidence ({events} of {needed} live labelled events "
                                                     f"scored by both{off}); decided on the hold-out alone in {left:.0f} s without it")


# The daemon's sensor loop starts every 5 s (Dagster's MIN_INTERVAL_LOOP_TIME) and evaluates a sensor only once its
# minimum interval has passed since its previous tick began. An interval of 5 s, equal to the loop's period, is missed
# whenever the tick begins a little later in its loop than the one before (the loop's order is shuffled): half the ticks
# came 10 s apart, 6 s of waiting per reaction (bench_reaction.py). Below the loop's period, every loop ticks the sensor.
TICK_INTERVAL_SECONDS = 1
LANDING_TICK_SECONDS = 5  # files settle for landing_quiet_seconds (2) anyway; a listing every 5 s is plenty


def build_sensors(names: ModelNames, landing_sensor_running: bool = True) -> list[dg.SensorDefinition]:
    model_name = names.model

    # A tick reads counters only (25–80 ms, flat in the log's size: bench_sensor_tick.py), so ticking on every daemon loop is
    # cheap and keeps the wait for the next tick a small part of the reaction time (bench_reaction.py).
    @dg.sensor(
        name=names.retraining_sensor,
        asset_selection=names.assets(*RETRAINING),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=TICK_INTERVAL_SECONDS,
        description=f"Retrains {model_name} (features → trained_model → evaluation_report) when N new labelled events arrived "
        "since the champion's cut-off, when the latest drift report says drift and enough new labels exist, or when the "
        "champion's estimated performance dropped (estimated_drop: detected without labels, retrained once the drift bar's new labels are in), or when its realized quality on its labelled "
        "served predictions (live_quality) dropped below its hold-out reference (quality_drop); never while the champion is pinned. With "
        "promotion_requires_shadow_win, it requests evaluation_report again once a challenger awaiting its shadow evidence has it, "
        "or once it waited shadow_max_wait_seconds without it (that evaluation decides on the hold-out alone).",
    )
    def retraining_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        model = platform.model(model_name)
        registry = model.registry
        record = registry.champion_record()
        if record is not None and not record.recorded:
            noted = registry.note_outside_move(by=names.retraining_sensor)
            if noted is not None:
                context.log.info(f"@champion was moved outside mlplatform to v{noted.version}: recorded in the champion timeline")
            record = registry.champion_record()
        if record is None and (gone := champion_gone(registry.timeline())):
            return dg.SensorResult(skip_reason=gone, cursor=context.cursor)
        wait = shadow_wait(context.instance, model, names, record)
        if wait is not None and wait.due is not None:
            context.log.info(wait.why)
            # Its own launched_by: the cursor is recovered from the newest retraining this sensor launched, which this is not.
            tags = {**retrain_run_tags(model_name), REASON_TAG: wait.due, LAUNCHED_BY_TAG: f"{names.retraining_sensor}/{wait.due}"}
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=wait.run_key, asset_selection=[names.asset(EVALUATION_REPORT)], tags=tags)],
                                   cursor=context.cursor)
        busy = retraining_elsewhere(context.instance, model_name, "")
        if busy is not None:  # its evaluation may move the champion the policy reads: a trigger now would retrain on the same evidence
            return dg.SensorResult(skip_reason=f"retraining run {busy[:8]} is unfinished: the policy decides again once it ends", cursor=context.cursor)
        cursor, was_reset = Cursor.from_json(context.cursor)
        verdict = evaluate(context.instance, model, names, record, None if was_reset or not context.cursor else cursor)
        if verdict.trigger is None:
            return dg.SensorResult(skip_reason=verdict.why if wait is None else f"{verdict.why}; {wait.why}", cursor=verdict.cursor.to_json())
        context.log.info(verdict.why)
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=verdict.trigger.run_key, tags={**verdict.tags, LAUNCHED_BY_TAG: names.retraining_sensor})],
                               cursor=verdict.cursor.to_json())

    # Its tick reads one counter and the alias: every daemon loop costs nothing, reports are still requested only every M events,
    # and the wait for this tick is part of every drift reaction (bench_reaction.py). Its run holds the retraining steps too:
    # they run when the run's retraining_trigger says the report calls for them, and are skipped otherwise.
    @dg.sensor(
        name=names.drift_sensor,
        asset_selection=names.assets(*DRIFT_RUN),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=TICK_INTERVAL_SECONDS,
        description=f"Requests a new {model_name} drift_report every `drift_every_n_events` new events (served or ingested), once "
        "there is a champion, one run at a time, and the same request again (after 1 min, doubling up to 1 h) when its run failed "
        "without a report; in the same run, retraining_trigger applies the retraining policy to the report, features → "
        "trained_model → evaluation_report follow only when it calls for a retraining, then estimated_performance, "
        "live_quality (the readings estimated_drop and quality_drop act on) and drift_dashboard (the report in Evidently's workspace).",
    )
    def drift_report_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        return drift_request(platform.model(model_name), context.cursor, names, context.instance)

    @dg.sensor(
        name=names.landing_sensor,
        asset_selection=names.assets(RAW_EVENTS),
        default_status=dg.DefaultSensorStatus.RUNNING if landing_sensor_running else dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=LANDING_TICK_SECONDS,
        description=f"Requests a raw_events run of {model_name} once files wait in its landing folder, settled (unchanged for "
        "landing_quiet_seconds) and not requested before: an lstat of the folder per tick, no file read. Files a run ended "
        "and left (its retries spent) are requested again after a back-off of 1 min, doubling up to 1 h. Ingestions of "
        "one folder take turns (a lock), so a run started by hand meanwhile is safe.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        return landing_request(platform.model(model_name).settings, context.cursor, names, context.instance)

    return [retraining_sensor, drift_report_sensor, landing_sensor]


@dataclass(frozen=True)
class LandingCursor:
    """The set of waiting files the landing sensor requested last (a hash of their names, sizes and change times), how
    many times it requested it again after a run that ended and left them, and when it last requested it (0: unknown,
    a cursor written before this was kept)."""

    files: str
    attempt: int = 0
    requested_at: float = 0.0

    @property
    def run_key(self) -> str:
        return f"landing-{self.files}" if not self.attempt else f"landing-{self.files}-again{self.attempt}"

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "attempt": self.attempt, "requested_at": self.requested_at})

    @classmethod
    def from_json(cls, text: str | None) -> "LandingCursor | None":
        """None when absent; a cursor of the earlier format (the bare hash) is that hash, not yet requested again."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["files"]), int(data["attempt"]), float(data.get("requested_at", 0.0)))
        except (ValueError, TypeError, KeyError):
            return cls(text)


# A request with no run this long after it was lost: its run deleted by run_history_retention (the sensor stopped for
# longer than the history is kept), or never launched. The daemon makes a request's run within the tick that made it.
LOST_SECONDS = 300


def again_in(instance: dg.DagsterInstance, run_key: str, launched_by: str, attempt: int, requested_at: float, now: float,
             done: Callable[[dg.DagsterRun], bool]) -> tuple[float | None, str]:
    """When a request of the sensor `launched_by` (its run key, `attempt` times made again) is due again, in seconds
    (≤ 0: now), and its run's state in words. None while its run is not launched yet, unfinished or to be retried, or
    once it is `done`; a request whose run never came is due LOST_SECONDS after it was made. Run keys are unique per
    sensor only: another model's sensor may have used the same one."""
    runs = dg.RunsFilter(tags={RUN_KEY_TAG: run_key, LAUNCHED_BY_TAG: launched_by})
    [record, *_] = instance.get_run_records(filters=runs, limit=1) or [None]
    if record is None:
        return (0.0, "its run never came (or was deleted)") if now - requested_at > LOST_SECONDS else (None, "its run is not launched yet")
    run = record.dagster_run
    state = f"run {run.run_id[:8]} is {run.status.value.lower()}"
    if not run.is_finished or run.tags.get(WILL_RETRY_TAG) == "true" or done(run):
        return None, state
    return (record.end_time or 0.0) + again_after(attempt) - now, f"run {run.run_id[:8]} ended ({run.status.value.lower()})"


def landing_request(settings: Settings, cursor: str | None, names: ModelNames, instance: dg.DagsterInstance, now: float | None = None) -> dg.SensorResult:
    """A raw_events run for the files waiting in the landing folder, keyed by their names, sizes and change times: the
    same files are requested once while that run is queued or running (or will be retried); new or changed files at
    once; the same files again only after that run ended and left them, with a growing back-off."""
    waiting, settling_s = landing_candidates(settings.landing_dir, LandingPolicy.from_settings(settings))
    if not waiting:
        return dg.SensorResult(skip_reason=f"no file waiting in {settings.landing_dir}")
    if settling_s > 0:
        return dg.SensorResult(skip_reason=f"{len(waiting)} file(s) waiting; one changed within landing_quiet_seconds: settling for {settling_s:.1f} s more")
    files = hashlib.sha256(json.dumps(sorted(waiting)).encode()).hexdigest()[:16]
    last = LandingCursor.from_json(cursor)
    now = time.time() if now is None else now
    if last is None or last.files != files:
        return _landing_run(LandingCursor(files, 0, now), names)
    requested = f"the {len(waiting)} file(s) waiting were requested already (run key {last.run_key})"
    left, state = again_in(instance, last.run_key, names.landing_sensor, last.attempt, last.requested_at, now, done=lambda run: False)
    if left is None:
        return dg.SensorResult(skip_reason=f"{requested}: {state}")
    if left > 0:
        return dg.SensorResult(skip_reason=f"{requested}: {state} and left them; requesting them again in {left:.0f} s (or materialize raw_events now)")
    return _landing_run(LandingCursor(files, last.attempt + 1, now), names)


def _landing_run(cursor: LandingCursor, names: ModelNames) -> dg.SensorResult:
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=cursor.run_key, tags={LAUNCHED_BY_TAG: names.landing_sensor})], cursor=cursor.to_json())


@dataclass(frozen=True)
class DriftRequest:
    """The drift report the drift sensor requested last: the event total and champion version it was requested at, how
    many times it was requested again after its run ended without a report, and when (0: unknown)."""

    events: int
    version: int = 0  # 0: unknown (a cursor of the earlier format, the bare total)
    attempt: int = 0
    requested_at: float = 0.0

    @property
    def run_key(self) -> str:
        key = f"drift-report-v{self.version}-{self.events}"
        return key if not self.attempt else f"{key}-again{self.attempt}"

    def to_json(self) -> str:
        return json.dumps({"events": self.events, "version": self.version, "attempt": self.attempt, "requested_at": self.requested_at})

    @classmethod
    def from_json(cls, text: str | None) -> "DriftRequest | None":
        """None when absent or unreadable; a cursor of the earlier format (the bare total) is that total."""
        if not text:
            return None
        try:
            data = json.loads(text)
            if isinstance(data, int):
                return cls(data)
            return cls(int(data["events"]), int(data["version"]), int(data["attempt"]), float(data["requested_at"]))
        except (ValueError, TypeError, KeyError):
            return None


def _reported(instance: dg.DagsterInstance, run: dg.DagsterRun, names: ModelNames) -> bool:
    """The run made its drift report (a later step may have failed), or a person canceled it: its request is done."""
    if run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED):
        return True
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return any(r.event_log_entry.dagster_event is not None and r.event_log_entry.dagster_event.asset_key == names.asset(DRIFT_REPORT) for r in records)


def drift_request(model: ModelContext, cursor: str | None, names: ModelNames, instance: dg.DagsterInstance, now: float | None = None) -> dg.SensorResult:
    """A drift report run every `drift_every_n_events` new events once there is a champion, one at a time; the same
    request again, with a doubling back-off, once its run failed without a report (the dev probe: a run launched while
    a defs.yaml was broken failed, and the next report waited for another `drift_every_n_events` events)."""
    every = model.settings.drift_every_n_events
    total = model.event_log.counts().total
    record = model.registry.champion_record()
    if record is None:
        return dg.SensorResult(skip_reason=champion_gone(model.registry.timeline()) or "no champion yet: drift is measured against the champion's training window")
    now = time.time() if now is None else now
    last = DriftRequest.from_json(cursor)
    attempt = 0
    if last is not None and total - last.events < every:
        waiting = f"{total - last.events} new events since the last drift report request; {every} needed"
        left, state = (None, "") if not last.version else again_in(instance, last.run_key, names.drift_sensor, last.attempt, last.requested_at, now,
                                                                   done=lambda run: _reported(instance, run, names))
        if left is None:
            return dg.SensorResult(skip_reason=waiting)
        if left > 0:
            return dg.SensorResult(skip_reason=f"{waiting}; that request's {state} without a report: requesting it again in {left:.0f} s "
                                               "(or materialize drift_report now)")
        attempt = last.attempt + 1
    # One at a time: a large landing file crossed drift_every_n_events on tick after tick, and its near-identical reports
    # ran side by side. The next one, once this ends, covers every event since.
    running = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: names.drift_sensor}, statuses=UNFINISHED), limit=1)
    if running:
        return dg.SensorResult(skip_reason=f"{total - (last.events if last else 0)} new events since the last drift report request; waiting for its run "
                                           f"{running[0].run_id[:8]} ({running[0].status.value.lower()}) to end")
    request = DriftRequest(total, record.version, attempt, now)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=request.run_key, tags={LAUNCHED_BY_TAG: names.drift_sensor})], cursor=request.to_json())
