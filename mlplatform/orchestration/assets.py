"""Software-defined assets of one model's retraining loop. Each reads its inputs, calls the pipeline, reports metadata.

Built per model by `build_assets` (the RetrainingLoop component calls it); keys are prefixed by the model.
`features` hands its snapshot folder and `trained_model` its version to the next step through the
run-scoped IO manager, so each step uses what its own run produced.
"""

import html
import time
from datetime import timedelta
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pandas as pd

from mlplatform.domain.keys import (CHAMPION_VERSION, CHANGE_WINDOW, DAGSTER_RUN_TAG, CHOSEN_WINDOW, DECISION_THRESHOLD_PARAM, JUDGED_ROWS, REFIT, REFIT_ROWS, WINDOW_SCORES, EVIDENTLY_PROJECT_URL, EVIDENTLY_SNAPSHOT_URL, EVIDENTLY_WORKSPACE_ERROR, MLFLOW_VERSION, MODEL_TAG,
                                   REPORT_PATH, REPORT_URL, RUN_TAG_PREFIX, SNAPSHOT, FITTED_ROWS, TRAINED_WINDOW, LANDED_FILES, INGESTED, DUPLICATES,
                                   QUARANTINED, LABELS_APPLIED, ROWS_READ, REJECTED_FILES, SKIPPED_ENTRIES, SKIPPED_ENTRIES_TABLE, UNTIMED_FILES, KEPT_BY_PERSON,
                                   CHALLENGER_VERSION, DECISION_META, REASON_META, HISTORY_BACKDATED, HISTORY_HORIZON, IGNORED_COLUMNS, LABEL_WATERMARK, LABEL_WATERMARK_TAG, POLICY_TRIGGER_TAG, REASON_TAG, RETRAIN_TAG, mlflow_tag)
from mlplatform.domain.evaluation import NO_CHANGE_MIN_ROWS, primary_metric
from mlplatform.domain.policy import BY_HAND
from mlplatform.domain.retry_budget import RetryBudget
from mlplatform.domain.training import TrainingError
from mlplatform.domain.validation import LABEL
from mlplatform.orchestration.failures import final_failure, leave_failed
from mlplatform.orchestration.instance import retrain_run_tags
from mlplatform.orchestration.interrupts import uninterrupted
from mlplatform.orchestration.names import (CRITICAL_STEP, DRIFT_REPORT, ESTIMATED_PERFORMANCE, EVALUATION_REPORT, FEATURES, LIVE_QUALITY,
                                            QUALITY_FLOOR_CHECK, RAW_EVENTS, RETRAINING_TRIGGER, TRAINED_MODEL, ModelNames)
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.orchestration.trigger import by_hand_tags, retraining_elsewhere
from mlplatform.pipeline.landing import LandingPolicy, ingest_pending
from mlplatform.pipeline.retraining import (Evaluation, EvidenceError, FeatureSnapshot, apply_decision, build_feature_snapshot, evaluate_challenger, prune_snapshots,
                                            record_evaluation, train_challenger)
from mlplatform.settings import SettingsError
from mlplatform.stores.eventlog import now_us
from mlplatform.stores.evidently_workspace import WorkspaceEntry
from mlplatform.stores.registry import Registry
from mlplatform.settings import Settings
from mlplatform.stores.reports import mlflow_run_url, mlflow_version_url, report_url


def external_retry_policy(budget: RetryBudget) -> dg.RetryPolicy:
    """Every asset that talks to MLflow or the event log: retried with backoff, all within the settings' budget."""
    return dg.RetryPolicy(max_retries=budget.step_retries, delay=budget.step_delay_seconds, backoff=dg.Backoff.EXPONENTIAL,
                          jitter=dg.Jitter.PLUS_MINUS)


def freshness_policies(settings: Settings) -> dict[str, dg.FreshnessPolicy]:
    """The assets whose age tells the operator something (a stale model, a monitor that stopped): FAIL after the model's
    window without a materialization, WARN after half of it. The drift sensor requests estimated_performance with each
    drift report, so both share the drift window."""
    hours = {TRAINED_MODEL: settings.freshness_model_hours, DRIFT_REPORT: settings.freshness_drift_hours,
             ESTIMATED_PERFORMANCE: settings.freshness_drift_hours, LIVE_QUALITY: settings.freshness_live_quality_hours}
    return {asset: dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=h), warn_window=timedelta(hours=h) / 2) for asset, h in hours.items()}


def by_hand_start(context: dg.AssetExecutionContext, names: ModelNames) -> dict[str, str] | None:
    """In a retraining a person started (no trigger on its run), the evidence it sees as it starts (`by_hand_tags`), to be
    consumed once it decided; None in a triggered one. Started from the UI's asset graph, its run has no retraining tag, so
    the queue did not keep it apart: it takes the tag here (the sensor then waits for it), or fails if another retraining of
    the model is unfinished (two on the same labels, their evaluations racing for @champion)."""
    run = context.instance.get_run_by_id(context.run.run_id) or context.run  # read again: a drift report run's trigger is added by a step
    if run.tags.get(REASON_TAG, BY_HAND) != BY_HAND:
        return None  # a trigger's run; a re-execution of a by-hand run (the UI copies its tags) records what it sees itself
    if RETRAIN_TAG not in run.tags:
        busy = retraining_elsewhere(context.instance, names.model, run.run_id)
        if busy is not None:
            raise final_failure(context.instance, run.run_id, f"features: retraining run {busy} of {names.model} is unfinished; the champion is "
                                f"unchanged. Materialize again once it ends, or launch the {names.retrain_job} job, which queues behind it")
        context.instance.add_run_tags(run.run_id, retrain_run_tags(names.model))
    return by_hand_tags(context.instance, names, time.time())


def _ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether Dagster run `run_id` ended, or is gone (retention deleted it): an MLflow run of its still RUNNING was abandoned."""
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, object] | None:
    """Values of the latest materialization's metadata, or None if the asset was never materialized."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def value_snapshot_metadata(context: dg.AssetExecutionContext, settings: Settings, entry: WorkspaceEntry) -> dict[str, object]:
    """Links to the model's project and to the snapshot just added (none when the data had nothing new) in `evidently
    ui`, or why the workspace was not updated, which is also logged as a warning: the asset's own record stands."""
    if entry.error is not None:
        context.log.warning(entry.error)
        return {EVIDENTLY_WORKSPACE_ERROR: entry.error}
    links = {EVIDENTLY_PROJECT_URL: entry.project_url(settings), EVIDENTLY_SNAPSHOT_URL: entry.snapshot_url(settings)}
    return {k: dg.MetadataValue.url(v) for k, v in links.items() if v is not None}


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_"
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns)
    body = "\n".join("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False))
    return head + "\n" + body


def champion_timeline(registry: Registry, last: int = 10) -> str:
    """The latest moves of `@champion` as a markdown table: which version served from when, who moved it and why."""
    rows = [{"from (UTC)": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.at)), "version": f"v{c.version}" + (" (pinned)" if c.pinned else ""),
             "by": c.by, "why": c.reason} for c in registry.timeline()[-last:]]
    return markdown_table(pd.DataFrame(rows))


def _evaluation_html(title: str, table: str, metadata: dict[str, object]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in metadata.items())
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><table>{rows}</table><h2>Metrics</h2><pre>{html.escape(table)}</pre></body></html>"
    )


def next_step_here(context: dg.AssetExecutionContext, settings: Settings) -> str | None:
    """The run whose next step a signal held by this step is deferred to (`uninterrupted`), when that step runs in this
    process (the in-process executor); None with Celery, whose next step runs elsewhere and whose worker's process goes
    on to other runs' steps: the signal is raised as the block ends, the step failing as it did before."""
    return context.run.run_id if settings.celery_broker_url is None else None


def build_assets(names: ModelNames, retry: dg.RetryPolicy, freshness: dg.FreshnessPolicy) -> list[dg.AssetsDefinition]:
    """raw_events → features → trained_model → evaluation_report for one model; `freshness` is trained_model's."""
    model_name = names.model

    @dg.asset(
        key=names.asset(RAW_EVENTS),
        group_name=names.group,
        kinds={"python", "sqlite"},
        retry_policy=retry,
        description="Every labelled (or not yet labelled) event: landing files are ingested exactly once, "
        "invalid rows quarantined with their reason, unreadable files moved aside to landing/rejected.",
    )
    def raw_events(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        model = platform.for_step(model_name)
        log = model.event_log
        started = now_us()
        report = ingest_pending(model.settings.landing_dir, model.spec, log, LandingPolicy.from_settings(model.settings))
        counts = log.counts()
        files = pd.DataFrame(
            [{"file": f.name, "rows": f.rows, "ingested": f.ingested, "duplicates": f.duplicates, "quarantined": f.quarantined,
              "late_labels": f.labels_applied, "note": f.note}
             for f in report.files]
        )
        for f in report.rejected:
            context.log.warning(f"{f.name} moved to landing/rejected: {f.rejected}")
        for s in report.skipped:
            context.log.info(f"{s.name} left in landing: {s.reason}")
        for f in report.files:
            if f.untimed:
                context.log.warning(f"{f.name}: {f.untimed}")
        extra = sorted({c for f in report.files for c in f.extra_columns})
        return dg.MaterializeResult(
            metadata={
                LANDED_FILES: len(report.files),
                INGESTED: report.total("ingested"),
                DUPLICATES: report.total("duplicates"),
                QUARANTINED: report.total("quarantined"),
                LABELS_APPLIED: report.total("labels_applied"),
                ROWS_READ: report.total("rows"),
                REJECTED_FILES: len(report.rejected),
                SKIPPED_ENTRIES: len(report.skipped),
                UNTIMED_FILES: sum(bool(f.untimed) for f in report.files),
                "total": counts.total,
                "labelled": counts.labelled,
                "quarantined_total": counts.quarantined,
                LABEL_WATERMARK: counts.label_watermark,
                IGNORED_COLUMNS: ", ".join(extra) or "none",
                "file_report": dg.MetadataValue.md(markdown_table(files)),
                "quarantine_reasons": dg.MetadataValue.md(markdown_table(log.quarantine_reasons(since_us=started))),
                SKIPPED_ENTRIES_TABLE: dg.MetadataValue.md(markdown_table(pd.DataFrame([{"entry": s.name, "reason": s.reason} for s in report.skipped]))),
                "event_log": log.location,
                "landing_dir": dg.MetadataValue.path(str(model.settings.landing_dir)),
            }
        )

    @dg.asset(
        key=names.asset(FEATURES),
        deps=[names.asset(RAW_EVENTS), names.asset(RETRAINING_TRIGGER)],
        group_name=names.group,
        kinds={"pandas", "parquet"},
        retry_policy=retry,
        io_manager_key="handover",
        op_tags=CRITICAL_STEP,
        description="The latest labelled window (time-ordered), split into a training part and a later hold-out; "
        "the feature transformer is fitted here and travels inside the logged model. In a drift report run it follows "
        "retraining_trigger, and is skipped (with what follows) when that calls for no retraining.",
    )
    def features(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.Output[str]:
        model = platform.for_step(model_name)
        spec = model.spec
        folder = model.settings.work_dir / spec.name / context.run.run_id
        seen = by_hand_start(context, names)
        try:
            snapshot = build_feature_snapshot(model.settings, spec, model.event_log, folder)
        except TrainingError as exc:
            raise final_failure(context.instance, context.run.run_id, f"features: {exc}; the champion is unchanged") from exc
        if seen is not None:
            context.instance.add_run_tags(context.run.run_id, {**seen, LABEL_WATERMARK_TAG: str(snapshot.window.label_seq_cutoff)})
        pruned = prune_snapshots(folder, model.settings.feature_snapshots_keep)
        horizon: dict[str, str] = {}
        if spec.history is not None:
            for reach in snapshot.reach:
                horizon[reach.key] = reach.said(spec.history.warmup_events)
                if reach.beyond:
                    context.log.warning(f"history horizon: {horizon[reach.key]}")
        late = snapshot.backdated
        if late is not None and late.served_rows:
            context.log.warning(f"history of served rows: {late.said()}")
        empty = snapshot.history_missing_in_every_row(spec)
        if empty:
            context.log.warning(f"history columns missing in every one of the {snapshot.window.train_rows} training rows: {', '.join(empty)} "
                                "(no earlier event of the key, or no label known before the row's time, within warmup_events): the model learns nothing from them")
        w = snapshot.window
        train_part = snapshot.train
        balance = train_part[LABEL].value_counts(normalize=True).round(4).to_dict() if spec.is_classification else {
            "mean": round(float(train_part[LABEL].mean()), 4), "std": round(float(train_part[LABEL].std()), 4)}
        return dg.Output(
            str(folder),
            metadata={
                "rows": w.rows,
                "train_rows": w.train_rows,
                "holdout_rows": w.holdout_rows,
                "window_start": w.start,
                "train_end": w.train_end,
                "window_end": w.end,
                "first_event_id": w.first_event_id,
                "last_event_id": w.last_event_id,
                "label_seq_cutoff": w.label_seq_cutoff,
                "train_label_balance": dg.MetadataValue.json({str(k): v for k, v in balance.items()}),  # of the train_rows, not the hold-out
                "model_columns": dg.MetadataValue.json(snapshot.transformer.output_columns),
                "categories": dg.MetadataValue.json({k: len(v) for k, v in snapshot.transformer.categories.items()}),
                SNAPSHOT: dg.MetadataValue.path(str(folder)),
                "snapshots_pruned": pruned,
                **({HISTORY_HORIZON: dg.MetadataValue.json(horizon)} if horizon else {}),
                **({HISTORY_BACKDATED: late.said()} if late is not None and late.served_rows else {}),
                **({"history_missing_in_every_row": ", ".join(empty)} if empty else {}),
            },
        )

    @dg.asset(
        key=names.asset(TRAINED_MODEL),
        ins={"snapshot_folder": dg.AssetIn(names.asset(FEATURES))},
        group_name=names.group,
        kinds={"lightgbm", "mlflow"},
        retry_policy=retry,
        freshness_policy=freshness,
        io_manager_key="handover",
        op_tags=CRITICAL_STEP,
        description="LightGBM with early stopping and tuning within a budget, logged to MLflow as a self-contained "
        "pyfunc (raw record in, prediction out) and registered as a new version with alias `challenger`.",
    )
    def trained_model(context: dg.AssetExecutionContext, platform: PlatformResource, snapshot_folder: str) -> dg.Output[int]:
        model = platform.for_step(model_name)
        registry = model.registry
        snapshot = FeatureSnapshot.load(Path(snapshot_folder))
        run = context.instance.get_run_by_id(context.run.run_id)  # read again: a drift report run's retraining_trigger added its trigger's tags
        run_tags = (run or context.run).tags
        trigger = {mlflow_tag(f"trigger.{k.removeprefix(RUN_TAG_PREFIX)}"): v for k, v in run_tags.items() if k.startswith(RUN_TAG_PREFIX) and k != MODEL_TAG}
        settings = model.settings
        for left in registry.end_abandoned_runs(lambda run_id: run_id != context.run.run_id and _ended(context.instance, run_id)):
            context.log.info(f"MLflow run {left} marked FAILED: its Dagster run ended while it trained (a worker killed, or a store down)")
        context.log.info(f"training on {len(snapshot.train)} rows, {len(snapshot.holdout)} held out: {settings.tuning_trials} trial(s) within "
                         f"{settings.tuning_seconds:g} s, candidate windows {list(settings.window_candidates)}")
        try:
            with uninterrupted(defer=next_step_here(context, settings)) as checkpoint:  # a stop lands between LightGBM's boosting rounds, or before the next step
                challenger = train_challenger(settings, model.spec, registry, snapshot, {DAGSTER_RUN_TAG: context.run.run_id, **trigger}, checkpoint)
        except (TrainingError, SettingsError) as exc:  # a window without a model, or a Dask scheduler that does not answer
            raise final_failure(context.instance, context.run.run_id, f"trained_model: {exc}; the champion is unchanged") from exc
        result = challenger.result
        return dg.Output(
            challenger.version,
            metadata={
                MLFLOW_VERSION: challenger.version,
                "mlflow_run_id": challenger.run_id,
                "model_uri": f"models:/{registry.name}/{challenger.version}",
                "mlflow_model_version": dg.MetadataValue.url(mlflow_version_url(model.settings, registry.name, challenger.version)),
                "best_iteration": result.best_iteration,
                "validation_loss": result.validation_loss,
                **{k: float(v) for k, v in challenger.validation_metrics.items()},
                "training_seconds": round(result.seconds, 3),
                "tuning_trials": result.trials,
                FITTED_ROWS: result.train_rows,
                TRAINED_WINDOW: dg.MetadataValue.json(asdict(challenger.window)),
                CHOSEN_WINDOW: challenger.fit.choice.window,
                CHANGE_WINDOW: "none" if challenger.fit.since_change is None else challenger.fit.since_change,
                WINDOW_SCORES: dg.MetadataValue.json([asdict(c) for c in challenger.fit.choice.candidates]),
                REFIT: challenger.fit.refit_rows > 0,
                REFIT_ROWS: challenger.fit.refit_rows,
                "params": dg.MetadataValue.json({k: v for k, v in result.params.items()}),
                **({DECISION_THRESHOLD_PARAM: result.predictor.threshold} if result.predictor.task == "binary" else {}),
                "feature_importance": dg.MetadataValue.md(markdown_table(result.importance.head(15).round(2))),
                "label_seq_cutoff": snapshot.window.label_seq_cutoff,
                SNAPSHOT: dg.MetadataValue.path(snapshot_folder),
            },
        )

    @dg.asset(
        key=names.asset(EVALUATION_REPORT),
        ins={"snapshot_folder": dg.AssetIn(names.asset(FEATURES)), "challenger_version": dg.AssetIn(names.asset(TRAINED_MODEL))},
        group_name=names.group,
        kinds={"mlflow"},
        retry_policy=retry,
        op_tags=CRITICAL_STEP,
        check_specs=[dg.AssetCheckSpec(QUALITY_FLOOR_CHECK, asset=names.asset(EVALUATION_REPORT), blocking=True,
                                       description="The challenger's primary metric meets the quality floor; promotion is refused otherwise.")],
        description="Challenger vs champion on the same later hold-out window (and on the live labelled events both scored, "
        "with the shadow challenger on); the challenger becomes `@champion` only if it passes the quality floor and beats "
        "the champion by the configured margin (or there is none), the champion is not pinned and, with "
        "promotion_requires_shadow_win, it also won in shadow (until its evidence is in it waits as `@challenger`).",
    )
    def evaluation_report(context: dg.AssetExecutionContext, platform: PlatformResource, snapshot_folder: str,
                          challenger_version: int) -> dg.MaterializeResult:
        model = platform.for_step(model_name)
        settings, spec, registry = model.settings, model.spec, model.registry
        snapshot = FeatureSnapshot.load(Path(snapshot_folder))
        try:
            evaluation = evaluate_challenger(settings, spec, registry, snapshot, challenger_version, model.event_log)
        except EvidenceError as exc:
            raise final_failure(context.instance, context.run.run_id, f"evaluation_report: {exc}; the champion is unchanged") from exc

        def decided(evaluation: Evaluation) -> dg.MaterializeResult:
            """The decision applied, and its record."""
            evaluation = apply_decision(registry, evaluation, context.run.run_id)
            run = context.instance.get_run_by_id(context.run.run_id)
            if run is not None and run.tags.get(REASON_TAG) == BY_HAND and POLICY_TRIGGER_TAG not in run.tags:
                context.instance.add_run_tags(run.run_id, {POLICY_TRIGGER_TAG: model_name})  # decided: what it saw is consumed now
            # MLflow's evaluation (plots, per-segment quality) records the decision and does not inform it: made after the alias
            # moves, so serving switches seconds sooner (bench_reaction.py). A retry after a failure here finds the challenger
            # already champion, decides nothing again (its recorded decision stands) and records the evaluation then.
            mlflow_metrics = record_evaluation(spec, registry, snapshot, evaluation)
            d = evaluation.decision
            verdict = evaluation.verdict
            shadow = evaluation.shadow
            context.log.info(f"challenger v{challenger_version} {verdict}: {d.reason}")
            baseline = evaluation.no_change
            if baseline is not None and not baseline.beaten:
                context.log.warning(f"challenger v{challenger_version}: {baseline.said()}")
            summary: dict[str, object] = {
                DECISION_META: verdict,
                REASON_META: d.reason,
                "metric": d.metric,
                CHALLENGER_VERSION: challenger_version,
                "champion_version_before": evaluation.champion_version or 0,
                CHAMPION_VERSION: evaluation.champion_after,
                "challenger_score": d.challenger,
                "champion_score": d.champion if d.champion is not None else float("nan"),
                "improvement": d.improvement if d.improvement is not None else float("nan"),
                "margin": d.margin,
                "quality_floor": d.floor,
                "holdout_rows": evaluation.holdout_rows,
                JUDGED_ROWS: evaluation.judged_rows,
                "champion_label_seq_cutoff": evaluation.champion_label_seq_cutoff,
                "shadow_events": 0 if shadow is None else shadow.events,
                "shadow_required": settings.promotion_requires_shadow_win,
                KEPT_BY_PERSON: evaluation.kept_by_person,
                "no_change_baseline": f"none: the spec's history declares no lag of the label, or fewer than {NO_CHANGE_MIN_ROWS} judged rows have one" if baseline is None else baseline.said(),
                "no_change_score": float("nan") if baseline is None else baseline.baseline,
            }
            report_dir = settings.reports_dir / "evaluation"
            report_dir.mkdir(parents=True, exist_ok=True)
            # One report per evaluation: a version judged again (a pin released, the asset run again) gets a report of its own, and
            # the earlier materialization's link still shows the decision it recorded.
            report_path = report_dir / f"{spec.name}-v{challenger_version}-{context.run.run_id[:8]}.html"
            report_path.write_text(_evaluation_html(f"{spec.name}: challenger v{challenger_version} {verdict}", evaluation.markdown(), summary), encoding="utf-8")
            registry.log_artifact(challenger_version, report_path, "evaluation")
            floored = primary_metric(spec)[0]  # the floor's metric, whichever decided (log loss breaks a ROC AUC tie)
            floored_value = evaluation.challenger_metrics.get(floored, float("nan"))
            if not evaluation.floor_passed:  # the blocking check fails the run: its retry judged the same challenger again, and the
                leave_failed(context.instance, context.run.run_id)  # policy counted the rejection twice (the new-user probe)
            check = dg.AssetCheckResult(
                check_name=QUALITY_FLOOR_CHECK,
                passed=evaluation.floor_passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"{floored} {floored_value:.4f} vs floor {d.floor:.4f}" + (f"; {evaluation.floor_note}" if evaluation.floor_note else ""),
                metadata={"value": floored_value, "floor": d.floor, "metric": floored},
            )
            return dg.MaterializeResult(
                metadata={
                    **summary,
                    "report": dg.MetadataValue.md(evaluation.markdown()),
                    "challenger_metrics": dg.MetadataValue.json(evaluation.challenger_metrics),
                    "champion_metrics": dg.MetadataValue.json(evaluation.champion_metrics or {}),
                    "shadow_challenger_metrics": dg.MetadataValue.json({} if shadow is None else shadow.challenger_metrics),
                    "shadow_champion_metrics": dg.MetadataValue.json({} if shadow is None else shadow.champion_metrics),
                    "mlflow_evaluation_metrics": dg.MetadataValue.json({k: round(v, 6) for k, v in mlflow_metrics.items()}),
                    REPORT_PATH: dg.MetadataValue.path(str(report_path)),
                    REPORT_URL: dg.MetadataValue.url(report_url(settings, report_path)),
                    "mlflow_model_version": dg.MetadataValue.url(mlflow_version_url(settings, registry.name, challenger_version)),
                    "mlflow_run": dg.MetadataValue.url(mlflow_run_url(settings, registry.experiment_id, registry.get_version(challenger_version).run_id)),
                    "champion_model_version": dg.MetadataValue.url(mlflow_version_url(settings, registry.name, evaluation.champion_after))
                    if evaluation.champion_after else "none",
                    "champion_timeline": dg.MetadataValue.md(champion_timeline(registry)),
                },
                check_results=[check],
            )

        # The decision's tags, the alias and the timeline, then its record (MLflow's evaluation, the report, this
        # materialization): a signal meanwhile takes effect once the step has ended, so a stopped run never leaves a decision
        # made in part, nor one made without its record.
        with uninterrupted(defer=next_step_here(context, settings)):
            return decided(evaluation)

    return [raw_events, features, trained_model, evaluation_report]
