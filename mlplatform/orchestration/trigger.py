"""The retraining policy (`decide`) evaluated against the Dagster instance, by its two callers: the retraining sensor on
every tick, and the `retraining_trigger` step of a drift report run right after that run's report, so a drift verdict
that calls for a retraining gets it in the same run: no second run worker to start, no second tick to wait for
(benchmarks/bench_reaction.py).

Both read the same state. Every trigger is recorded in the tags of the run that carries it (POLICY_TRIGGER_TAG and the
trigger's own tags), and the policy's cursor (what was consumed, when the cool-down started) is the newest of those and
of the sensor's stored cursor. A drift report made by a drift report run is that run's to decide on until the run ends;
only then may the sensor act on it (drift seen, labels still missing), so one verdict never starts two retrainings.
The step takes drift triggers about its own report only; counts, estimates and realized quality readings stay the sensor's.

The policy also learns from its own record (`DriftBar`): the outcome of each of those runs is the decision its
evaluation_report recorded, read from the newest few evaluation_report materializations.

Reads are O(1) in the event log's size: counters, the `@champion` record, the latest materializations' metadata and
the newest few runs carrying a trigger (benchmarks/bench_sensor_tick.py).
"""

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg

from mlplatform.domain.estimation import HIGHER_IS_BETTER
from mlplatform.domain.keys import (AGAIN_BASE_TAG, AGAIN_TAG, CHAMPION_VERSION, DATASET_DRIFT, DECISION_META, DRIFT_REPORT_TAG, KEPT_BY_PERSON, DRIFT_SHARE, ESTIMATE_TAG, ESTIMATED_METRIC,
                                   LABEL_WATERMARK, LABEL_WATERMARK_TAG, LAUNCHED_BY_TAG, POLICY_TRIGGER_TAG, QUALITY_EVENTS, QUALITY_LOWER, QUALITY_METRIC, QUALITY_NOTE,
                                   QUALITY_TAG, QUALITY_UPPER, QUALITY_VALUE, REASON_META, REASON_TAG, RECENT_ESTIMATE, RECENT_EVENTS, RECENT_LABELLED,
                                   RECENT_LABELLED_FIELDS, RECENT_LOWER, RECENT_NOTE, RECENT_UPPER, REFERENCE, RETRAIN_TAG, RETRY_ON_FAILURE_TAG, SKIP_REASON, SKIPPED,
                                   TRIGGERED_AT_TAG, WILL_RETRY_TAG)
from mlplatform.domain.policy import (BY_HAND, DRIFT, ESTIMATE_WATCH, QUALITY_WATCH, RECORD_SIZE, Cursor, DropWatch, LabelledPart, Observation, PerformanceReading,
                                      RetrainOutcome, Trigger, decide)
from mlplatform.orchestration.instance import retrain_run_tags
from mlplatform.orchestration.names import (CRITICAL_STEP, DRIFT_REPORT, ESTIMATED_PERFORMANCE, EVALUATION_REPORT, LIVE_QUALITY, RETRAINING_TRIGGER,
                                            ModelNames)
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.root import ModelContext
from mlplatform.stores.registry import ChampionRecord

RECENT_TRIGGER_RUNS = 5  # a drift report run records its trigger after later-created runs may have recorded theirs
# After a run that ended without doing what it was asked (the files left in the landing folder, no drift report, a trigger
# not decided on; its retries spent: the event log unavailable, the disk full, a code location that did not load), the
# same request is made again after this back-off, doubled each time up to AGAIN_MAX_SECONDS.
AGAIN_SECONDS = 60
AGAIN_MAX_SECONDS = 3600
# A policy trigger whose runs failed before deciding this many times in a row (1, 2, 4, ... 60 minutes apart: about
# two hours) is used up, saying so: a failure that running again does not mend (a run past its max_runtime, one out of
# memory) would otherwise retrain, and alert, every hour for good.
AGAIN_MAX_ATTEMPTS = 8


def again_after(attempt: int) -> float:
    """The back-off before a request is made again for the `attempt`+1-th time."""
    return float(min(AGAIN_SECONDS * 2**attempt, AGAIN_MAX_SECONDS))


@dataclass(frozen=True)
class Latest:
    """An asset's latest materialization: its storage id (what triggers name), the run that made it, its metadata values."""

    storage_id: str
    run_id: str
    metadata: dict[str, object]


def latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> Latest | None:
    """One indexed query, the cheapest read there is."""
    records = instance.fetch_materializations(key, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    record = records[0]
    return Latest(str(record.storage_id), record.run_id, {k: v.value for k, v in record.asset_materialization.metadata.items()})


def drift_state(instance: dg.DagsterInstance, names: ModelNames, champion_version: int | None,
                deciding_run: str | None = None) -> tuple[bool | None, float | None, str | None, str]:
    """Drift verdict, share, report id and, without a usable verdict, why: only a real report about the current champion
    counts, and one made by a drift report run other than `deciding_run` only once that run has ended."""
    report = latest(instance, names.asset(DRIFT_REPORT))
    if report is None:
        return None, None, None, "no drift report yet"
    meta = report.metadata
    if meta.get(SKIPPED, True):
        return None, None, report.storage_id, f"latest drift report was skipped: {meta.get(SKIP_REASON, 'no reason recorded')}"
    about = int(str(meta.get(CHAMPION_VERSION, 0)))
    if about != champion_version:
        return None, None, report.storage_id, f"latest drift report {_about(about, champion_version)}: waiting for a new one"
    if report.run_id != deciding_run:
        run = instance.get_run_by_id(report.run_id)
        if run is not None and run.tags.get(LAUNCHED_BY_TAG) == names.drift_sensor and not run.is_finished:
            return None, None, report.storage_id, f"latest drift report's run {report.run_id} is still deciding on it"
    return bool(meta[DATASET_DRIFT]), float(str(meta[DRIFT_SHARE])), report.storage_id, ""


@dataclass(frozen=True)
class ReadingSource:
    """Where a drop reason's reading lives: the asset and the metadata names of its metric, value, band, events and,
    without a value, the note that says why."""

    watch: DropWatch
    asset: str
    fields: tuple[str, str, str, str, str]  # metric, value, lower, upper, events
    note: str
    labelled_fields: tuple[str, ...] | None = None  # an estimate's labelled part: LabelledPart's values but its count


READING_SOURCES = (ReadingSource(ESTIMATE_WATCH, ESTIMATED_PERFORMANCE, (ESTIMATED_METRIC, RECENT_ESTIMATE, RECENT_LOWER, RECENT_UPPER, RECENT_EVENTS), RECENT_NOTE,
                                 RECENT_LABELLED_FIELDS),
                   ReadingSource(QUALITY_WATCH, LIVE_QUALITY, (QUALITY_METRIC, QUALITY_VALUE, QUALITY_LOWER, QUALITY_UPPER, QUALITY_EVENTS), QUALITY_NOTE))


def _about(version: object, champion_version: int | None) -> str:
    """Whom a reading that is not about the champion was about: version 0 is "no champion yet" (there is no v0)."""
    if str(version) in ("0", "", "None"):
        return f"was taken before there was a champion, not about the champion v{champion_version}"
    return f"is about v{version}, not the champion v{champion_version}"


def reading_state(instance: dg.DagsterInstance, names: ModelNames, source: ReadingSource,
                  champion_version: int | None) -> tuple[PerformanceReading | None, str]:
    """The newest reading of `source` (one indexed query) and, without a usable one, why: only a finite reading about the
    current champion counts; anything missing or unreadable in its metadata is a note, never a failed tick."""
    noun = source.watch.noun
    found = latest(instance, names.asset(source.asset))
    if found is None:
        return None, f"no {noun} yet"
    meta = found.metadata
    if meta.get(SKIPPED, False):
        return None, f"latest {noun} was skipped: {meta.get(SKIP_REASON, 'no reason recorded')}"
    about = meta.get(CHAMPION_VERSION, 0)
    if str(about) != str(champion_version):
        return None, f"latest {noun} {_about(about, champion_version)}: waiting for a new one"
    metric, value, lower, upper, events = source.fields
    if value not in meta:
        return None, f"no recent {noun}: {meta.get(source.note, 'no reason recorded')}"
    try:
        reading = PerformanceReading(found.storage_id, str(meta[metric]), float(str(meta[value])), float(str(meta[lower])), float(str(meta[upper])),
                                     float(str(meta[REFERENCE])), int(str(meta[events])), _labelled_part(meta, source))
    except (KeyError, ValueError) as exc:
        return None, f"latest {noun} is unreadable ({type(exc).__name__}: {exc}): waiting for a new one"
    if reading.metric not in HIGHER_IS_BETTER or not all(map(math.isfinite, (reading.value, reading.lower, reading.upper, reading.reference))):
        return None, f"latest {noun} has no usable {reading.metric} against its reference: waiting for a new one"
    return reading, ""


def _labelled_part(meta: dict[str, object], source: ReadingSource) -> LabelledPart | None:
    """Where the reading's events have labels enough for a realized value beside an estimate on them; None for a
    realized reading, for an estimate from before labels were read beside it, or with a value that is not finite."""
    if source.labelled_fields is None or not all(f in meta for f in source.labelled_fields):
        return None
    values = [float(str(meta[f])) for f in source.labelled_fields]
    return LabelledPart(int(str(meta[RECENT_LABELLED])), *values) if all(map(math.isfinite, values)) else None


def _recorded(tags: dict[str, str]) -> Cursor:
    """The cursor right after the trigger a run's tags record."""
    return Cursor(last_trigger_seq=int(tags.get(LABEL_WATERMARK_TAG, 0)), last_trigger_time=float(tags.get(TRIGGERED_AT_TAG, 0)),
                  last_drift_report=tags.get(DRIFT_REPORT_TAG), last_estimate=tags.get(ESTIMATE_TAG), last_quality=tags.get(QUALITY_TAG))


def trigger_runs(instance: dg.DagsterInstance, model: str) -> list[dg.DagsterRun]:
    """The latest runs carrying a trigger of the model's policy, the newest trigger first: enough for the record and for
    the longest chain of triggers that failed before deciding, each with its run retries (the review: ten runs read back
    let five such triggers push every decision out of the record, and the drift bar fell to its minimum)."""
    per_trigger = 1 + (instance.run_retries_max_retries if instance.run_retries_enabled else 0)
    runs = instance.get_runs(filters=dg.RunsFilter(tags={POLICY_TRIGGER_TAG: model}),
                             limit=max(RECENT_TRIGGER_RUNS, per_trigger * (RECORD_SIZE + AGAIN_MAX_ATTEMPTS)))
    return sorted(runs, key=lambda r: _recorded(dict(r.tags)).last_trigger_time, reverse=True)


def policy_cursor(runs: list[dg.DagsterRun], stored: Cursor | None) -> Cursor:
    """The newest of `stored` (None: lost or unreadable) and the cursors recorded on the latest runs carrying a trigger:
    a lost cursor never repeats a run, and neither caller repeats the other's trigger."""
    return max([_recorded(dict(r.tags)) for r in runs] + ([stored] if stored else []), key=lambda c: c.last_trigger_time, default=Cursor())


def decisions_by_run(instance: dg.DagsterInstance, names: ModelNames) -> dict[str, object]:
    """The decision each of the newest few evaluation_report materializations recorded, by the run that made it (one
    indexed query); None where a person's pin or move kept the challenger out."""
    evaluations = instance.fetch_materializations(names.asset(EVALUATION_REPORT), limit=2 * RECORD_SIZE).records
    decisions: dict[str, object] = {}
    for record in reversed(evaluations):  # newest last: a retried evaluation's latest decision wins
        meta = {} if record.asset_materialization is None else record.asset_materialization.metadata
        if DECISION_META in meta:  # kept out by a person's pin or move: no verdict on the retraining, unknown to the policy
            decisions[record.run_id] = None if KEPT_BY_PERSON in meta and meta[KEPT_BY_PERSON].value is True else meta[DECISION_META].value
    return decisions


def _by_trigger(runs: list[dg.DagsterRun]) -> list[list[dg.DagsterRun]]:
    """`runs` (newest trigger first) by the trigger they carry: its run and Dagster's retries of it, which share its
    tags, the newest run first."""
    groups: list[list[dg.DagsterRun]] = []
    for run in runs:
        if groups and groups[-1][0].tags.get(TRIGGERED_AT_TAG) == run.tags.get(TRIGGERED_AT_TAG):
            groups[-1].append(run)
        else:
            groups.append([run])
    return groups


def _failed_undecided(group: list[dg.DagsterRun], decisions: dict[str, object]) -> bool:
    """A trigger's runs ended failed before an evaluation_report decided, their run retries spent, and not left failed on
    purpose (what retrying cannot mend, as too few labels): what it saw is not used up."""
    last = group[0]
    return (last.status == dg.DagsterRunStatus.FAILURE and last.tags.get(WILL_RETRY_TAG) != "true"
            and not any(r.tags.get(RETRY_ON_FAILURE_TAG) == "false" or r.run_id in decisions for r in group))


def _before_chain(groups: list[list[dg.DagsterRun]], earlier: int, decisions: dict[str, object]) -> list[dg.DagsterRun]:
    """The runs of `groups` (newest first) but the `earlier` newest groups that failed before deciding: a chain's earlier
    attempts, whichever decided runs (a person's retraining) came between them (the second diff review)."""
    kept: list[dg.DagsterRun] = []
    for group in groups:
        if earlier and _failed_undecided(group, decisions):
            earlier -= 1
        else:
            kept.extend(group)
    return kept


@dataclass(frozen=True)
class FailedTrigger:
    """The newest trigger, whose runs failed before its evaluation_report decided: a transient outage longer than the
    run retries would otherwise cost a retraining until N more labels came. The policy decides on what it saw again
    after a back-off that doubles with each such failure in a row, up to AGAIN_MAX_ATTEMPTS failures."""

    newest: dg.DagsterRun  # its last run
    attempt: int  # how many triggers in a row failed so, this one included
    ended_at: float
    base: Cursor  # the policy's cursor before the first of them

    @property
    def due_at(self) -> float:
        return self.ended_at + again_after(self.attempt - 1)

    @property
    def spent(self) -> bool:
        return self.attempt >= AGAIN_MAX_ATTEMPTS


def failed_trigger(instance: dg.DagsterInstance, runs: list[dg.DagsterRun], decisions: dict[str, object]) -> FailedTrigger | None:
    """The newest trigger of `runs`, if it failed before deciding. A run canceled or succeeded used up its trigger; one
    started by hand carries a trigger only once it decided. Its attempt and base cursor are read from the tags a
    decision made again records (AGAIN_TAG, AGAIN_BASE_TAG), else counted from the runs before it."""
    groups = _by_trigger(runs)
    if not groups or not _failed_undecided(groups[0], decisions):
        return None
    newest = groups[0][0]
    attempt = int(newest.tags.get(AGAIN_TAG, "0")) + 1 if newest.tags.get(AGAIN_TAG, "").isdigit() else 1
    again_base = newest.tags.get(AGAIN_BASE_TAG) if AGAIN_TAG in newest.tags else None
    recorded, unreadable = Cursor.from_json(again_base)
    # An unreadable tag counts from the runs before the chain's first failure (its attempts before this one, which the
    # attempt says), as a first failure does: an empty cursor took every label as new (the review).
    base = recorded if again_base and not unreadable else policy_cursor(_before_chain(groups[1:], attempt - 1, decisions), None)
    record = instance.get_run_record_by_id(newest.run_id)
    ended_at = (record.end_time if record is not None else None) or _recorded(dict(newest.tags)).last_trigger_time
    return FailedTrigger(newest, attempt, ended_at, base)


def policy_record(instance: dg.DagsterInstance, names: ModelNames, runs: list[dg.DagsterRun],
                  decisions: dict[str, object] | None = None) -> tuple[RetrainOutcome, ...]:
    """What became of each of `runs` the policy triggered (not those started by hand): the decision of the evaluation_report
    it materialized, among the newest few; a run still running, failed before its evaluation or evaluated long ago has an
    unknown outcome."""
    decisions = decisions_by_run(instance, names) if decisions is None else decisions
    # One outcome per trigger (its run and Dagster's retries of it), none for one that failed before deciding: decided
    # again, it is that run's; a run retry or an outage took slots of the record, pushing out the decisions the bar
    # learns from (the diff review). A person's retraining says nothing of the policy's alarms.
    triggered = [g for g in _by_trigger(runs) if g[0].tags.get(REASON_TAG) != BY_HAND and not _failed_undecided(g, decisions)]
    return tuple(RetrainOutcome.recorded(g[0].tags.get(REASON_TAG), next((decisions[r.run_id] for r in g if r.run_id in decisions), None),
                                         g[0].tags.get(LABEL_WATERMARK_TAG), g[0].tags.get(TRIGGERED_AT_TAG))
                 for g in triggered[:RECORD_SIZE])


@dataclass(frozen=True)
class Verdict:
    trigger: Trigger | None
    cursor: Cursor  # the policy's cursor after this evaluation
    why: str
    tags: dict[str, str]  # what the run carrying the trigger records (empty without a trigger)


def evaluate(instance: dg.DagsterInstance, model: ModelContext, names: ModelNames, record: ChampionRecord | None, stored: Cursor | None,
             deciding_run: str | None = None, now: float | None = None) -> Verdict:
    """`decide` on what the instance, the event log and the registry hold now; nothing while the champion is pinned."""
    settings = model.settings
    if record is not None and record.pinned:
        return Verdict(None, stored or Cursor(), f"champion v{record.version} is pinned ({record.pin_reason}): no retraining until "
                                                  f"`mlplatform champion unpin --model {model.name}`", {})
    version, cutoff, since, registered = (None, None, 0.0, 0.0) if record is None else (record.version, record.label_seq_cutoff, record.since, record.registered_at)
    drift = drift_state(instance, names, version, deciding_run)
    (estimate, estimate_note), (quality, quality_note) = (reading_state(instance, names, source, version) for source in READING_SOURCES)
    runs = trigger_runs(instance, model.name)
    cursor = policy_cursor(runs, stored)
    now = time.time() if now is None else now
    decisions = decisions_by_run(instance, names)
    record = policy_record(instance, names, runs, decisions)
    failed = failed_trigger(instance, runs, decisions)
    what = spent = ""
    if failed is not None and cursor.last_trigger_time <= _recorded(dict(failed.newest.tags)).last_trigger_time + 0.001:  # no newer trigger since
        what = f"the latest trigger's run {failed.newest.run_id[:8]} ({failed.newest.tags.get(REASON_TAG, 'unknown reason')}) failed before it decided"
        if failed.spent:
            spent, failed = (f"; {what}, the {failed.attempt}th time in a row, which uses up what it saw: `mlplatform materialize --model "
                             f"{model.name}` (or the {names.retrain_job} job) retrains on it now"), None
        elif now < failed.due_at:
            return Verdict(None, cursor, f"{what}: the policy decides on what it saw again in {failed.due_at - now:.0f} s "
                                         f"(`mlplatform materialize --model {model.name}` retrains now)", {})
        else:
            cursor = failed.base
    else:
        failed = None
    trigger, next_cursor, why = decide(
        Observation(model.event_log.counts().label_watermark, cutoff, now, *drift, estimate=estimate, estimate_note=estimate_note,
                    quality=quality, quality_note=quality_note, record=record, champion_since=since, champion_registered_at=registered),
        cursor,
        settings.policy_config(),
    )
    tags = {} if trigger is None else {**trigger.tags, **retrain_run_tags(model.name), POLICY_TRIGGER_TAG: model.name, TRIGGERED_AT_TAG: f"{now:.3f}"}
    if trigger is not None and failed is not None:  # its run key is new: Dagster runs a sensor's run key once
        trigger = dataclasses.replace(trigger, run_key=f"{trigger.run_key}-again{failed.attempt}")
        tags.update({AGAIN_TAG: str(failed.attempt), AGAIN_BASE_TAG: failed.base.to_json()})
        why = f"{why}; again, after {what}"
    return Verdict(trigger, next_cursor, why if trigger is not None else why + (spent or _withdrawn(instance, runs, names)), tags)


def _withdrawn(instance: dg.DagsterInstance, runs: list[dg.DagsterRun], names: ModelNames) -> str:
    """What a skip adds when the newest trigger's run was canceled before its evaluation_report decided anything: a
    person's Terminate uses up what the trigger saw, as a decision does (the drift sensor's requests likewise), and
    nothing else said why the sensor then waits for N more labels (the operator probe: the 4,200 labels of a terminated
    retraining never trained). A run canceled after its decision (awaiting shadow evidence, kept by a person) decided."""
    newest = runs[0] if runs else None
    if newest is None or newest.status != dg.DagsterRunStatus.CANCELED or newest.tags.get(REASON_TAG) == BY_HAND:
        return ""
    made = instance.get_records_for_run(newest.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    if any(r.event_log_entry.dagster_event is not None and r.event_log_entry.dagster_event.asset_key == names.asset(EVALUATION_REPORT) for r in made):
        return ""
    return (f"; the latest trigger's run {newest.run_id[:8]} ({newest.tags.get(REASON_TAG, 'unknown reason')}) was canceled before it decided, "
            f"which uses up what it saw: `mlplatform materialize --model {names.model}` (or the {names.retrain_job} job) retrains on it now")


def by_hand_tags(instance: dg.DagsterInstance, names: ModelNames, now: float) -> dict[str, str]:
    """What a retraining a person started records (with the label watermark its window reaches, and POLICY_TRIGGER_TAG once
    its evaluation decided: one that failed before consumes nothing): the latest drift report and performance readings
    as it started, consumed as a trigger consumes them, whichever champion they are about (one the policy could not use
    stays unused). The dev probe: a retraining from the UI, rejected, was followed at once by the sensor's drift
    retraining on the same labels. Instance reads only: MLflow may be down while `features` runs."""
    tags = {REASON_TAG: BY_HAND, TRIGGERED_AT_TAG: f"{now:.3f}"}
    for asset, tag in ((DRIFT_REPORT, DRIFT_REPORT_TAG), *((source.asset, source.watch.consumed_tag) for source in READING_SOURCES)):
        found = latest(instance, names.asset(asset))
        if found is not None:
            tags[tag] = found.storage_id
    return tags


UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
              dg.DagsterRunStatus.CANCELING]


def retraining_elsewhere(instance: dg.DagsterInstance, model: str, run_id: str) -> str | None:
    """Another unfinished retraining run of the model, if any: one retraining per model at a time, as the run queue keeps it.
    One never started whose command is gone is canceled first (`end_if_left_behind`): it would hold every later
    retraining back. A started one is left to run monitoring and the stack's start: a launcher may be starting it now."""
    from mlplatform.orchestration.warm_runs import end_if_left_behind

    runs = instance.get_runs(filters=dg.RunsFilter(tags={RETRAIN_TAG: model}, statuses=UNFINISHED), limit=RECENT_TRIGGER_RUNS)
    return next((r.run_id for r in runs if r.run_id != run_id and not end_if_left_behind(instance, r, False, started_too=False)), None)


def build_retraining_trigger(names: ModelNames, retry: dg.RetryPolicy) -> dg.AssetsDefinition:
    """The step between a drift report and the retraining it calls for; features waits for it and is skipped without it."""
    model_name = names.model
    key = names.asset(RETRAINING_TRIGGER)

    @dg.asset(
        key=key,
        deps=[names.asset(DRIFT_REPORT)],
        group_name=names.group,
        kinds={"python"},
        retry_policy=retry,
        op_tags=CRITICAL_STEP,
        output_required=False,
        description="In a drift report run: the retraining policy on the run's own report (the same decision the retraining "
        "sensor makes, one run per trigger). Materialized, with the trigger in its metadata and the run's tags, when the "
        "report's drift calls for a retraining: features → trained_model → evaluation_report follow in the same run; otherwise "
        "an observation says why and they are skipped. In any other run (materialized by hand) it lets the retraining proceed.",
    )
    def retraining_trigger(context: dg.AssetExecutionContext, platform: PlatformResource) -> Iterator[dg.MaterializeResult]:
        model = platform.for_step(model_name)
        if context.run.tags.get(LAUNCHED_BY_TAG) != names.drift_sensor:
            yield dg.MaterializeResult(metadata={REASON_META: "requested by hand: not a drift report run"})
            return
        verdict = evaluate(context.instance, model, names, model.registry.champion_record(), None, deciding_run=context.run.run_id)
        trigger, report = verdict.trigger, latest(context.instance, names.asset(DRIFT_REPORT))
        own = (report is not None and report.run_id == context.run.run_id and trigger is not None and trigger.reason == DRIFT
               and verdict.tags.get(DRIFT_REPORT_TAG) == report.storage_id)
        busy = retraining_elsewhere(context.instance, model_name, context.run.run_id) if own else None
        if trigger is not None and own and busy is None:
            context.instance.add_run_tags(context.run.run_id, verdict.tags)
            context.log.info(verdict.why)
            yield dg.MaterializeResult(metadata={REASON_META: verdict.why, "trigger": trigger.reason, "drift_report": verdict.tags[DRIFT_REPORT_TAG],
                                                 "new_labelled": trigger.new_labelled, LABEL_WATERMARK: trigger.label_watermark})
            return
        why = (verdict.why if trigger is None else f"{verdict.why}, a trigger about no drift report of this run: left to the retraining sensor" if not own
               else f"{verdict.why}, but retraining run {busy} is unfinished: the retraining sensor acts on this report once this run ends")
        context.log.info(f"no retraining in this run: {why}")
        context.log_event(dg.AssetObservation(asset_key=key, metadata={REASON_META: f"no retraining: {why}"}))

    return retraining_trigger
