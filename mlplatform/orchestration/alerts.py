"""Someone is told: live quality of each champion, and the sensors that turn what happens into Alertmanager alerts.

- `<model>/live_quality` (asset) scores the champion on its labelled served predictions (a snapshot in the model's
  Evidently project when the window is new); its WARN check `live_quality_floor` fails below the configured floors. Its
  realized reading against the champion's hold-out reference is what the retraining sensor's quality_drop reads.
- `<model>_alerts_sensor` reads new materializations of that model's drift_report, evaluation_report and
  live_quality and fires or resolves the matching alert; every tick it also delivers what the outbox still holds.
- `run_failure_alerts` fires when any run of this code location fails, naming its model; `run_success_alerts`
  resolves that job's failure alert when one of its runs succeeds.
Sending never raises: a down Alertmanager shows up as a log line and a pending count, not a failed run.
"""

import functools
import json

import dagster as dg

from mlplatform.domain.keys import (AWAITING_SHADOW, CHAMPION_VERSION, CHALLENGER_VERSION, DATASET_DRIFT, DECISION_META, DRIFT_SHARE, DRIFTED_COLUMN_NAMES, MODEL_TAG,
                                   LIVE_EVENTS, LIVE_SCORED_ON, LIVE_VERDICT, LIVE_VERSION, PROMOTED, QUALITY_NOTE, REASON_META, REPORT_URL, SKIP_REASON, SKIPPED,
                                   PARENT_RUN_ID_TAG, WILL_RETRY_TAG)
from mlplatform.domain.evaluation import primary_metric
from mlplatform.domain.timeformat import iso_time
from mlplatform.orchestration.assets import value_snapshot_metadata
from mlplatform.orchestration.errors import root_cause
from mlplatform.orchestration.names import DRIFT_REPORT, EVALUATION_REPORT, LIVE_QUALITY, LIVE_QUALITY_CHECK, RAW_EVENTS, RETRAINING, ModelNames, model_of_asset
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.orchestration.warm_runs import stopped_in_flight
from mlplatform.pipeline.live_quality import LiveQuality, ServedVersion, Unserved, measure, measure_reading
from mlplatform.pipeline.retraining import loaded_champion
from mlplatform.root import ModelContext
from mlplatform.stores.evidently_workspace import LIVE_QUALITY_KIND, ValuePoint, WorkspaceEntry, add_value_snapshots
from mlplatform.stores.alerting import (FAILURE_LABEL, RELOAD_LOAD, Alerter, AlertName, Delivery, drift_alert, live_quality_alert, promotion_refused_alert,
                                        run_failed_alert)

BATCH = 100


def add_live_snapshot(model: ModelContext, quality: LiveQuality) -> WorkspaceEntry:
    """A score with a verdict as a snapshot in the model's Evidently project: the floored metrics (and the primary one)
    beside their floors, at the time of the window's newest event."""
    if not quality.enough or quality.last_event_time is None:
        return WorkspaceEntry()
    shown = {b.metric for b in quality.bounds} | {primary_metric(model.spec)[0]}
    values = {f"live_{k}": v for k, v in quality.metrics.items() if k in shown} | {f"{b.metric}_{b.kind}": b.value for b in quality.bounds}
    point = ValuePoint(f"{model.name}-live-v{quality.model_version}-{iso_time(quality.last_event_time)}", quality.last_event_time, values)
    assert model.settings.evidently_workspace_dir is not None  # resolved by Settings
    return add_value_snapshots(model.settings.evidently_workspace_dir, model.name, LIVE_QUALITY_KIND, quality.model_version, [point],
                               "Live quality vs floor", model.settings.drift_reports_keep)


def build_live_quality(names: ModelNames, retry: dg.RetryPolicy, freshness: dg.FreshnessPolicy) -> tuple[dg.AssetsDefinition, dg.ScheduleDefinition]:
    """The model's live_quality asset and the schedule that re-scores it every five minutes (drift report runs re-score
    it too, every `drift_every_n_events` events)."""
    model_name = names.model
    key = names.asset(LIVE_QUALITY)

    @dg.asset(
        key=key,
        deps=[names.asset(RAW_EVENTS)],
        group_name=names.group,
        kinds={"python", "sqlite"},
        retry_policy=retry,
        freshness_policy=freshness,
        check_specs=[dg.AssetCheckSpec(LIVE_QUALITY_CHECK, asset=key,
                                       description="The champion's live precision/recall (or RMSE) on labelled served predictions meets its floor.")],
        description="The champion scored on its latest labelled served predictions (a sliding window of "
        "`live_quality_window` events; a champion that served too few, on the latest labelled events whose labels came after "
        "its training cut-off, predicted now): how good the model is now, not on the past hold-out. A score over a new window is "
        "added to the model's Evidently project, beside its floors (`evidently ui`). `quality_value` (with its 95 % band) is the "
        "watched metric on the latest `quality_drop_events` of them beside the champion's hold-out `reference`: the retraining "
        "sensor's quality_drop reading.",
    )
    def live_quality(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        model = platform.for_step(model_name)
        settings = model.settings
        champion = model.registry.champion_record()
        if champion is None:
            return dg.MaterializeResult(
                metadata={LIVE_VERSION: 0, LIVE_EVENTS: 0, LIVE_VERDICT: "no champion yet"},
                check_results=[dg.AssetCheckResult(check_name=LIVE_QUALITY_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN, description="no champion yet")],
            )
        served = ServedVersion(champion.version, model.registry.probability_of(champion.version))
        # Loaded once for both readings, and only if needed; a champion whose files are gone gives no such reading.
        unserved = Unserved(champion.label_seq_cutoff, functools.cache(lambda: loaded_champion(model.registry, champion.version)[0]))
        holdout = model.registry.holdout_reference(champion.version)
        quality = measure(settings, model.spec, model.event_log, served, unserved, holdout)
        reading = measure_reading(settings, model.spec, model.event_log, served, holdout, unserved)
        verdict = quality.verdict(settings.live_quality_min_events, holdout)
        context.log.info(verdict)
        floors = {b.metric: (">= " if b.minimum else "<= ") + str(b.value) for b in quality.bounds}
        return dg.MaterializeResult(
            metadata={
                LIVE_VERSION: quality.model_version,
                LIVE_EVENTS: quality.events,
                LIVE_SCORED_ON: quality.scored_on,
                **quality.metrics,
                "enough_events": quality.enough,
                "below_floor": quality.below_floor,
                LIVE_VERDICT: verdict,
                "floors": dg.MetadataValue.json(floors),
                "window_start": quality.first_event_time or 0,
                "window_end": quality.last_event_time or 0,
                **({CHAMPION_VERSION: champion.version, QUALITY_NOTE: reading} if isinstance(reading, str) else reading.metadata(champion.version)),
                **value_snapshot_metadata(context, settings, add_live_snapshot(model, quality)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=LIVE_QUALITY_CHECK,
                    passed=not quality.below_floor,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=verdict,
                    metadata={"events": quality.events, **quality.metrics},
                )
            ],
        )

    schedule = dg.ScheduleDefinition(
        name=names.live_quality_schedule,
        target=dg.AssetSelection.assets(key),
        cron_schedule="*/5 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Re-scores the {model_name} champion on its latest labelled served predictions every five minutes (a drift "
        "report run re-scores it too).",
    )
    return live_quality, schedule


class AlertNotRecorded(RuntimeError):
    """The alerts outbox could not be written: the sensor stops before the record, so its next tick tries it again
    (before, it moved past it and the alert, or its end, was lost for good: the review)."""


def _recorded(delivery: Delivery, said: str) -> str:
    if not delivery.recorded:
        sent = "; sent to Alertmanager once as it is (nothing refreshes or resolves it)" if delivery.sent else ""
        raise AlertNotRecorded(f"{said}, but not recorded in the alerts outbox: {delivery.error}{sent}")
    return said


def _on_materialization(model: ModelContext, names: ModelNames, alerter: Alerter, record: dg.EventLogRecord) -> str:
    """Fire or resolve the alert this materialization calls for; returns what was done, for the tick's log (raises
    AlertNotRecorded when the outbox cannot be written)."""
    materialization = record.asset_materialization
    assert materialization is not None
    meta = {k: v.value for k, v in materialization.metadata.items()}
    key, run_id, settings, dataset = materialization.asset_key, record.run_id, model.settings, model.name
    if key == names.asset(DRIFT_REPORT):
        if meta.get(SKIPPED, True):
            return f"drift report skipped ({meta.get(SKIP_REASON, 'no reason')})"
        if not meta[DATASET_DRIFT]:
            return _recorded(alerter.resolve(AlertName.DRIFT, dataset, deliver=False), "no drift: resolved")
        return _recorded(alerter.fire(drift_alert(settings, dataset, int(str(meta[CHAMPION_VERSION])), float(str(meta[DRIFT_SHARE])),
                                                  str(meta[DRIFTED_COLUMN_NAMES]), str(meta[REPORT_URL]), run_id), deliver=False), "drift: fired")
    if key == names.asset(EVALUATION_REPORT):
        if meta.get(DECISION_META) == PROMOTED:
            return _recorded(alerter.resolve(AlertName.PROMOTION_REFUSED, dataset, deliver=False), "promoted: resolved")
        if meta.get(DECISION_META) == AWAITING_SHADOW:  # it won on the hold-out: no refusal yet (it fired 'was not promoted': the review)
            return "awaiting shadow evidence: nothing to alert on yet"
        champion = int(str(meta.get(CHAMPION_VERSION, 0))) or None
        return _recorded(alerter.fire(promotion_refused_alert(settings, dataset, int(str(meta[CHALLENGER_VERSION])), champion, str(meta.get(REASON_META, "")),
                                                              str(meta.get(REPORT_URL, "")), run_id), deliver=False), "promotion refused: fired")
    if meta.get("below_floor"):
        return _recorded(alerter.fire(live_quality_alert(settings, dataset, str(meta[LIVE_VERSION]), str(meta[LIVE_VERDICT]).split("; "),
                                                         int(str(meta[LIVE_EVENTS])), run_id), deliver=False), "live quality below floor: fired")
    if meta.get("enough_events"):
        return _recorded(alerter.resolve(AlertName.LIVE_QUALITY, dataset, deliver=False), "live quality within floors: resolved")
    return "live quality without a verdict"


# Alerts about one champion: a version that no longer serves will not be measured again, so they are resolved.
CHAMPION_ALERTS = (AlertName.DRIFT, AlertName.LIVE_QUALITY)


def _about_the_champion(model: ModelContext, alerter: Alerter) -> str:
    """Resolve drift and live quality alerts about versions that are no longer champion (promoted past, rolled back);
    returns what was done, for the tick's log."""
    try:
        champion = model.registry.champion_record()
    except Exception as exc:  # the registry unreachable: the next tick tries again, this one still delivers
        return f"champion unknown ({type(exc).__name__}: {exc}): alerts about older champions left as they are"
    if champion is None:
        return "no champion"
    stale = alerter.resolve_other_versions(CHAMPION_ALERTS, model.name, str(champion.version))
    # A version that would not load is moot once another is champion (so ends the alert of a serving process gone for
    # good on another host, whose liveness is unknown here); a failure to read the champion alias is not, whatever it serves.
    stale += alerter.resolve_other_versions((AlertName.SERVING_RELOAD_FAILED,), model.name, str(champion.version), **{FAILURE_LABEL: RELOAD_LOAD})
    return f"resolved {stale} drift, live quality or serving reload alert(s) about versions other than the champion v{champion.version}" if stale else f"champion v{champion.version}"


def build_alerts_sensor(names: ModelNames) -> dg.SensorDefinition:
    model_name = names.model
    watched = names.assets(DRIFT_REPORT, EVALUATION_REPORT, LIVE_QUALITY)

    @dg.sensor(
        name=names.alerts_sensor,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=f"Alerts on {model_name}'s drift, refused promotions and live quality below its floor (resolved when the next "
        "materialization says the condition cleared), and re-delivers alerts Alertmanager has not received yet.",
    )
    def alerts_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        model = platform.model(model_name)
        alerter = model.alerter
        if not alerter.enabled:
            return dg.SensorResult(skip_reason="alerting is off: set MLPLATFORM_ALERTMANAGER_URL", cursor=context.cursor)
        cursor: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        done = []
        for key in watched:
            name = key.to_user_string()
            if name in cursor:
                records = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor[name]), limit=BATCH, ascending=True).records
            else:  # first tick: only the current state matters, not the history
                records = context.instance.fetch_materializations(key, limit=1).records
            for record in records:
                try:
                    done.append(f"{name}: {_on_materialization(model, names, alerter, record)}")
                except AlertNotRecorded as exc:  # this record and those after it wait for the next tick
                    done.append(f"{name}: {exc}; tried again next tick")
                    break
                except (KeyError, ValueError, TypeError) as exc:  # metadata it cannot read now will not read later: passed, said
                    done.append(f"{name}: materialization {record.storage_id} not read, no alert from it ({type(exc).__name__}: {exc})")
                cursor[name] = record.storage_id
            else:  # a first tick stopped by the outbox stays a first tick: from 0, the next would replay the whole history
                cursor.setdefault(name, 0)
        done.append(_about_the_champion(model, alerter))
        delivery = alerter.deliver()
        done.append(f"delivered {delivery.sent}, pending {delivery.pending}" + (f" ({delivery.error})" if delivery.error else ""))
        return dg.SensorResult(skip_reason="; ".join(done), cursor=json.dumps(cursor))

    return alerts_sensor


def what_ran(run: dg.DagsterRun, model: str | None, retraining: bool) -> str:
    """What a run did, as its failure alert's `job` label and as the success that resolves it. Sensors and `materialize`
    run every selection as Dagster's one asset job (__ASSET_JOB), so a landing run's success resolved a failed
    retraining's alert while retraining stayed broken (the review). A run that failed in a retraining step, or
    materialized one (`retraining`), is the model's retrain job, whatever job ran it; another asset-job run is named by
    what it selected beside the retraining, which a drift run selects whether or not it retrains (the diff review: every
    drift run was a retraining, and one that did not retrain resolved a failed retraining's alert); any other by its job."""
    if retraining and model is not None:
        return ModelNames(model).retrain_job
    selected = sorted(name for key in run.asset_selection or () if (name := key.path[-1]) not in RETRAINING)
    if run.job_name.startswith("__") and selected:
        return f"assets {', '.join(selected)}"
    return run.job_name


def _assets_of_steps(instance: dg.DagsterInstance, run_id: str, status: str) -> set[str]:
    """The assets (the name after the model's prefix, `adult__trained_model`) of the run's steps in `status`."""
    return {s.step_key.rsplit("__", 1)[-1] for s in instance.get_run_step_stats(run_id) if s.status is not None and s.status.value == status}


def promoted_in(instance: dg.DagsterInstance, run_id: str, names: ModelNames) -> int | None:
    """The version the run's evaluation_report promoted, if it did; without a decision of its own (a run retry resumes
    after the steps that succeeded), the newest decision of the runs it re-executes. A run that promoted and failed in
    a later step (estimated_performance, the dashboard) said "the champion is unchanged" (the review), and so did its
    retry; a re-execution of all its steps that rejected said it made the first run's version champion (diff reviews)."""
    run, seen = instance.get_run_by_id(run_id), set()
    while run is not None and run.run_id not in seen:  # the run, then the run it re-executes, and so on: the newest decision
        seen.add(run.run_id)
        made = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in reversed(made):
            event = record.event_log_entry.dagster_event
            materialization = event.event_specific_data.materialization if event is not None and event.asset_key == names.asset(EVALUATION_REPORT) else None  # type: ignore[union-attr]
            meta = {} if materialization is None else materialization.metadata
            if DECISION_META in meta:
                return int(str(meta[CHALLENGER_VERSION].value)) if meta[DECISION_META].value == PROMOTED else None
        parent = run.parent_run_id or run.tags.get(PARENT_RUN_ID_TAG)
        run = instance.get_run_by_id(parent) if parent else None
    return None


def _model_of_run(platform: PlatformResource, run: dg.DagsterRun) -> ModelContext | None:
    """The model a run belongs to: its model tag (jobs and sensor runs) or the prefix of the assets it materializes (UI runs)."""
    name = run.tags.get(MODEL_TAG) or next((m for m in map(model_of_asset, run.asset_selection or ()) if m), None)
    models = platform.platform().models
    return next((m for m in models.values() if name in (m.name, m.key)), None)


def _champion_version(context: dg.RunFailureSensorContext, model: ModelContext) -> int | None:
    """The champion's version for the alert's label, or None when MLflow cannot be read: the run may have failed
    because MLflow is down, and that is exactly when the alert must still go out."""
    try:
        record = model.registry.champion_record()
    except Exception as exc:  # whatever an unreachable store raises (MLflow, SQLAlchemy, OS errors)
        context.log.warning(f"alerting without the champion's version: MLflow cannot be read: {exc}")
        return None
    return None if record is None else record.version


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when a run of this code location fails (retraining, ingestion, any materialization), naming its model.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, platform: PlatformResource) -> None:
    run = context.dagster_run
    model = _model_of_run(platform, run)
    settings = model.settings if model is not None else platform.platform().settings
    champion = _champion_version(context, model) if model is not None else None
    steps = [f"{e.step_key}: {root_cause(e.event_specific_data.error)}"  # type: ignore[union-attr]
             for e in context.get_step_failure_events() if e.event_specific_data and e.event_specific_data.error]  # type: ignore[union-attr]
    error = ("; ".join(steps) or context.failure_event.message or "run failed")[:1000]
    # The steps that failed, and those a killed worker (memory, max_runtime, a stop) left in progress, with no failure event.
    failed = _assets_of_steps(context.instance, run.run_id, "FAILURE") | _assets_of_steps(context.instance, run.run_id, "IN_PROGRESS")
    selected = {key.path[-1] for key in run.asset_selection or ()}
    retraining = bool(failed & set(RETRAINING)) if failed else bool(selected) and selected <= set(RETRAINING)
    alert = run_failed_alert(settings, model.name if model else "unknown model", champion, what_ran(run, model.name if model else None, retraining), run.run_id, error,
                             will_retry=run.tags.get(WILL_RETRY_TAG) == "true", stack_stopped=stopped_in_flight(run),
                             promoted=None if model is None else promoted_in(context.instance, run.run_id, ModelNames(model.name)))
    delivery = Alerter.from_settings(settings).fire(alert)
    _recorded(delivery, f"run {run.run_id} failed: alert {alert.name}")  # raised: the tick fails, saying so (Dagster does not hand the run over again)
    context.log.info(f"run {run.run_id} failed: alert {alert.name} delivered {delivery.sent}, pending {delivery.pending}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="run_success_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Resolves a run-failure alert when a run that does the same (`what_ran`: a retraining, a landing, a job) succeeds.",
)
def run_success_alerts(context: dg.RunStatusSensorContext, platform: PlatformResource) -> None:
    model = _model_of_run(platform, context.dagster_run)
    settings = model.settings if model is not None else platform.platform().settings
    run, name = context.dagster_run, model.name if model else None
    alerter = Alerter.from_settings(settings)
    for retraining in {False, bool(_assets_of_steps(context.instance, run.run_id, "SUCCESS") & set(RETRAINING))}:  # a drift run that retrained ends both kinds of failure
        resolved = alerter.resolve(AlertName.RUN_FAILED, name or "unknown model", job=what_ran(run, name, retraining))
        _recorded(resolved, f"run {run.run_id} succeeded: its run-failure alert resolved")


run_alert_sensors = [run_failure_alerts, run_success_alerts]
