"""Sensors of one model: retraining (counts, the champion and the latest drift verdict in, at most one run per
trigger out) and drift reports every M events.

Both ticks read O(1) counters of the event log, the registry's `@champion` record and the latest
materialization metadata only: no Evidently, no scans, so a tick costs the same with 10k or 10M events in
the log (benchmarks/bench_sensor_tick.py). The registry is the one truth about the champion: move the alias
by hand (a rollback) and the next tick counts new labels from that version's cut-off.
"""

import time

import dagster as dg

from mlplatform.domain.keys import (AWAITING_SHADOW, CHAMPION_VERSION, DATASET_DRIFT, DECISION, DRIFT_REPORT_TAG, DRIFT_SHARE, ESTIMATE_TAG, ESTIMATED_METRIC,
                                   LABEL_WATERMARK_TAG, LAUNCHED_BY_TAG, MLFLOW_VERSION, REASON_TAG, RECENT_ESTIMATE, RECENT_EVENTS, RECENT_LOWER, RECENT_UPPER,
                                   REFERENCE, SHADOW_EVIDENCE, SKIP_REASON, SKIPPED, TRIGGERED_AT_TAG)
from mlplatform.domain.policy import Cursor, EstimatedPerformance, Observation, PolicyConfig, decide
from mlplatform.orchestration.instance import retrain_run_tags
from mlplatform.orchestration.names import DRIFT_REPORT, ESTIMATED_PERFORMANCE, EVALUATION_REPORT, RETRAINING, TRAINED_MODEL, ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.root import ModelContext
from mlplatform.stores.registry import CHALLENGER, ChampionRecord


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[str, dict[str, object]] | None:
    """Storage id and metadata values of the asset's latest materialization: one indexed query, the cheapest read there is."""
    records = instance.fetch_materializations(key, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    return str(records[0].storage_id), {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def drift_state(instance: dg.DagsterInstance, key: dg.AssetKey, champion_version: int | None) -> tuple[bool | None, float | None, str | None, str]:
    """Drift verdict, share, report id and, without a usable verdict, why: only a real report about the current champion counts."""
    latest = _latest(instance, key)
    if latest is None:
        return None, None, None, "no drift report yet"
    report_id, meta = latest
    if meta.get(SKIPPED, True):
        return None, None, report_id, f"latest drift report was skipped: {meta.get(SKIP_REASON, 'no reason recorded')}"
    about = int(str(meta.get(CHAMPION_VERSION, 0)))
    if about != champion_version:
        return None, None, report_id, f"latest drift report is about v{about}, not the champion v{champion_version}: waiting for a new one"
    return bool(meta[DATASET_DRIFT]), float(str(meta[DRIFT_SHARE])), report_id, ""


def estimate_state(instance: dg.DagsterInstance, key: dg.AssetKey, champion_version: int | None) -> tuple[EstimatedPerformance | None, str]:
    """The latest performance estimate and, without a usable one, why: only an estimate about the current champion counts."""
    latest = _latest(instance, key)
    if latest is None:
        return None, "no performance estimate yet"
    report_id, meta = latest
    if meta.get(SKIPPED, True):
        return None, f"latest performance estimate was skipped: {meta.get(SKIP_REASON, 'no reason recorded')}"
    about = int(str(meta.get(CHAMPION_VERSION, 0)))
    if about != champion_version:
        return None, f"latest performance estimate is about v{about}, not the champion v{champion_version}: waiting for a new one"
    if RECENT_ESTIMATE not in meta:
        return None, f"no recent performance estimate: {meta.get('recent_note', 'no reason recorded')}"
    return EstimatedPerformance(report_id, str(meta[ESTIMATED_METRIC]), float(str(meta[RECENT_ESTIMATE])), float(str(meta[RECENT_LOWER])),
                                float(str(meta[RECENT_UPPER])), float(str(meta[REFERENCE])), int(str(meta[RECENT_EVENTS]))), ""


def _recover_cursor(instance: dg.DagsterInstance, sensor_name: str) -> Cursor:
    """Rebuild the cursor from the newest run this sensor launched, so a lost cursor never repeats a run."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: sensor_name}), limit=1)
    if not runs:
        return Cursor()
    tags = runs[0].tags
    return Cursor(
        last_trigger_seq=int(tags.get(LABEL_WATERMARK_TAG, 0)),
        last_trigger_time=float(tags.get(TRIGGERED_AT_TAG, 0)),
        last_drift_report=tags.get(DRIFT_REPORT_TAG),
        last_estimate=tags.get(ESTIMATE_TAG),
    )


def shadow_ready(instance: dg.DagsterInstance, model: ModelContext, names: ModelNames, record: ChampionRecord | None) -> tuple[int, int] | None:
    """(challenger version, shared labelled events) when `@challenger` awaits its shadow evidence and now has enough of it,
    and is still the latest trained_model (an evaluation-only run evaluates that one); else None. Read only with
    promotion_requires_shadow_win: one alias read and one count over the challenger's shadow rows."""
    settings = model.settings
    if not settings.promotion_requires_shadow_win or record is None:
        return None
    challenger = model.registry.version_by_alias(CHALLENGER)
    if challenger is None or challenger.tags.get(DECISION) != AWAITING_SHADOW or int(challenger.version) == record.version:
        return None
    events = model.event_log.shadow_labelled(challenger.version, record.version)
    latest = _latest(instance, names.asset(TRAINED_MODEL))
    if events < settings.shadow_min_events or latest is None or str(latest[1].get(MLFLOW_VERSION)) != str(challenger.version):
        return None
    return int(challenger.version), events


def _champion(record: ChampionRecord | None) -> tuple[int | None, int | None]:
    return (None, None) if record is None else (record.version, record.label_seq_cutoff)


def build_sensors(names: ModelNames) -> list[dg.SensorDefinition]:
    model_name = names.model
    retraining = names.assets(*RETRAINING)
    drift_key = names.asset(DRIFT_REPORT)
    estimate_key = names.asset(ESTIMATED_PERFORMANCE)

    # A tick reads counters only (~60 ms, flat in the log's size: bench_sensor_tick.py), so ticking every 5 s is cheap and
    # keeps the wait for the next tick a small part of the reaction time (bench_reaction.py).
    @dg.sensor(
        name=names.retraining_sensor,
        asset_selection=retraining,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        description=f"Retrains {model_name} (features → trained_model → evaluation_report) when N new labelled events arrived "
        "since the champion's cut-off, when the latest drift report says drift and enough new labels exist, or when the "
        "champion's estimated performance dropped (estimated_drop, no labels needed); never while the champion is pinned. With "
        "promotion_requires_shadow_win, it requests evaluation_report again once a challenger awaiting its shadow evidence has it.",
    )
    def retraining_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        model = platform.model(model_name)
        settings, registry = model.settings, model.registry
        record = registry.champion_record()
        if record is not None and not record.recorded:
            registry.note_outside_move(record, by=names.retraining_sensor)
            context.log.info(f"@champion was moved outside mlplatform to v{record.version}: recorded in the champion timeline")
        if record is not None and record.pinned:
            return dg.SensorResult(skip_reason=f"champion v{record.version} is pinned ({record.pin_reason}): no retraining until "
                                               f"`mlplatform champion unpin --model {model_name}`", cursor=context.cursor)
        ready = shadow_ready(context.instance, model, names, record)
        if ready is not None and record is not None:
            version, shared = ready
            context.log.info(f"challenger v{version} has its shadow evidence ({shared} live labelled events): evaluating it again")
            # Its own launched_by: the cursor is recovered from the newest retraining this sensor launched, which this is not.
            tags = {**retrain_run_tags(model_name), REASON_TAG: SHADOW_EVIDENCE, LAUNCHED_BY_TAG: f"{names.retraining_sensor}/{SHADOW_EVIDENCE}"}
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"shadow-evaluation-v{version}-vs-v{record.version}",
                                                               asset_selection=[names.asset(EVALUATION_REPORT)], tags=tags)], cursor=context.cursor)
        counts = model.event_log.counts()
        champion_version, champion_cutoff = _champion(record)
        drift = drift_state(context.instance, drift_key, champion_version)
        estimate, estimate_note = estimate_state(context.instance, estimate_key, champion_version)
        cursor, was_reset = Cursor.from_json(context.cursor)
        if was_reset or not context.cursor:
            cursor = _recover_cursor(context.instance, names.retraining_sensor)
        now = time.time()
        trigger, next_cursor, why = decide(
            Observation(counts.label_watermark, champion_cutoff, now, *drift, estimate=estimate, estimate_note=estimate_note),
            cursor,
            PolicyConfig(settings.retrain_every_n, settings.min_new_labelled_for_drift, settings.retrain_cooldown_seconds,
                         settings.estimated_drop_margin if settings.retrain_on_estimated_drop else None, settings.estimated_drop_events),
        )
        if trigger is None:
            return dg.SensorResult(skip_reason=why, cursor=next_cursor.to_json())
        tags = {**trigger.tags, **retrain_run_tags(model_name), LAUNCHED_BY_TAG: names.retraining_sensor, TRIGGERED_AT_TAG: f"{now:.3f}"}
        context.log.info(why)
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=trigger.run_key, tags=tags)], cursor=next_cursor.to_json())

    # Its tick reads one counter and the alias: every 5 s costs nothing, reports are still requested only every M events,
    # and the wait for this tick is part of every drift reaction (bench_reaction.py).
    @dg.sensor(
        name=names.drift_sensor,
        asset_selection=[drift_key, estimate_key],
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=5,
        description=f"Requests a new {model_name} drift_report and estimated_performance every `drift_every_n_events` new events "
        "(served or ingested), once there is a champion.",
    )
    def drift_report_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        model = platform.model(model_name)
        every = model.settings.drift_every_n_events
        total = model.event_log.counts().total
        record = model.registry.champion_record()
        if record is None:
            return dg.SensorResult(skip_reason="no champion yet: drift is measured against the champion's training window")
        last = _events_at_last_request(context.cursor)
        if last is not None and total - last < every:
            return dg.SensorResult(skip_reason=f"{total - last} new events since the last drift report request; {every} needed")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"drift-report-v{record.version}-{total}", tags={LAUNCHED_BY_TAG: names.drift_sensor})],
            cursor=str(total),
        )

    return [retraining_sensor, drift_report_sensor]


def _events_at_last_request(cursor: str | None) -> int | None:
    """The event total the previous report was requested at; None when the cursor is absent or unreadable."""
    try:
        return int(cursor) if cursor else None
    except ValueError:
        return None
