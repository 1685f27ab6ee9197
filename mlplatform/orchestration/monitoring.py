"""The drift_report asset and its check: Evidently drift of the live stream against the champion's training window;
and drift_dashboard, the report in the model's Evidently workspace project.

Kept current by `drift_report_sensor` (orchestration/sensors.py) every `drift_every_n_events` new events. Adding a
snapshot to Evidently's local workspace takes seconds (its store reads every snapshot), so it is a step of its own
that runs after the report's verdict is materialized (and after the retraining the verdict may call for), not part of it.
"""

from pathlib import Path

import dagster as dg

from mlplatform.pipeline.drift import FEATURES_ONLY, LIVE_METRICS, ColumnDrift, DriftReport, DriftSkipped, build_drift_report, publish_drift_report
from mlplatform.domain.keys import (CHAMPION_VERSION, DATASET_DRIFT, DRIFT_SHARE, DRIFT_SHARE_THRESHOLD, DRIFT_COLUMNS, DRIFTED_COLUMN_NAMES, DRIFTED_COLUMNS,
                                   EVIDENTLY_PROJECT_URL, EVIDENTLY_SNAPSHOT_URL, EVIDENTLY_WORKSPACE_ERROR, REPORT_PATH, REPORT_URL,
                                   SKIP_REASON, SKIPPED)
from mlplatform.orchestration.assets import latest_metadata, markdown_table
from mlplatform.orchestration.names import CRITICAL_STEP, DRIFT_DASHBOARD, DRIFT_REPORT, RAW_EVENTS, ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.stores.evidently_workspace import WorkspaceEntry
from mlplatform.stores.reports import html_path, mlflow_version_url, report_url
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.timeformat import iso_time

TOP_COLUMNS = 10


def _test_metadata(prefix: str, result: ColumnDrift | None) -> dict[str, object]:
    """Score, verdict and method of prediction or target drift; nothing when it could not be measured."""
    if result is None:
        return {}
    return {f"{prefix}_drift_score": result.score, f"{prefix}_drift": result.drifted, f"{prefix}_drift_method": result.method}


def _workspace_metadata(settings: Settings, entry: WorkspaceEntry) -> dict[str, object]:
    """Links to the model's project and this snapshot in `evidently ui`, or why the workspace was not updated."""
    project, snapshot = entry.project_url(settings), entry.snapshot_url(settings)
    if project is None or snapshot is None:
        return {EVIDENTLY_WORKSPACE_ERROR: entry.error or "not added"}
    return {EVIDENTLY_PROJECT_URL: dg.MetadataValue.url(project), EVIDENTLY_SNAPSHOT_URL: dg.MetadataValue.url(snapshot)}


def report_metadata(settings: Settings, spec: DatasetSpec, report: DriftReport, mlflow_url: str) -> dict[str, object]:
    """Numbers first (the Dagster UI plots numeric metadata over materializations), then links and the table."""
    live = {f"live_{k}": report.live_metrics[k] for k in LIVE_METRICS[spec.task] if k in report.live_metrics}
    return {
        SKIPPED: False,
        CHAMPION_VERSION: report.champion_version,
        DRIFT_SHARE: report.drift_share,
        DRIFTED_COLUMNS: len(report.drifted_columns),
        DATASET_DRIFT: report.dataset_drift,
        DRIFT_COLUMNS: len(report.columns),
        DRIFT_SHARE_THRESHOLD: report.share_threshold,
        DRIFTED_COLUMN_NAMES: ", ".join(report.drifted_columns) or "none",
        **_test_metadata("prediction", report.prediction),
        **_test_metadata("target", report.target),
        **live,
        "live_metrics": dg.MetadataValue.json({k: round(v, 6) for k, v in report.live_metrics.items()}),
        **({"features_only": FEATURES_ONLY} if report.features_only else {}),
        "current_labelled": report.current_labelled,
        "current_until": iso_time(report.current_until_us),
        **report.reference.span(),
        "reference_rows": report.reference_rows,
        "current_rows": report.current_rows,
        "reference_sampled": report.reference_sampled,
        "current_sampled": report.current_sampled,
        "seconds": round(report.seconds, 3),
        "report_bytes": report.report_path.stat().st_size,
        "pruned_files": report.pruned.files,
        "most_drifted": dg.MetadataValue.md(markdown_table(report.table(TOP_COLUMNS))),
        REPORT_PATH: dg.MetadataValue.path(str(report.report_path)),
        REPORT_URL: dg.MetadataValue.url(report_url(settings, report.report_path)),
        "mlflow_model_version": dg.MetadataValue.url(mlflow_url),
    }


def skipped_metadata(skipped: DriftSkipped) -> dict[str, object]:
    return {
        SKIPPED: True,
        SKIP_REASON: skipped.reason,
        CHAMPION_VERSION: skipped.champion_version or 0,
        "current_rows": skipped.current_rows,
    }


def build_monitoring(names: ModelNames, retry: dg.RetryPolicy, freshness: dg.FreshnessPolicy) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The model's drift_report asset, its check and drift_dashboard."""
    model_name = names.model
    key = names.asset(DRIFT_REPORT)

    @dg.asset(
        key=key,
        deps=[names.asset(RAW_EVENTS)],
        group_name=names.group,
        kinds={"evidently"},
        retry_policy=retry,
        freshness_policy=freshness,
        op_tags=CRITICAL_STEP,
        description="Evidently drift of the events since the champion's data window against its training window: "
        "per-column drift, share of drifted columns, prediction drift and, with labels, target drift and live metrics. "
        "Both sides are bounded uniform samples; Evidently's snapshot is kept under reports/drift (its HTML rendered on "
        "demand, the newest `drift_reports_keep` kept; drift_dashboard adds it to the Evidently workspace); the verdicts are logged to MLflow next to the champion version. Without a champion (or with too few new events) it records why it is skipped.",
    )
    def drift_report(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        model = platform.for_step(model_name)
        settings, spec, registry = model.settings, model.spec, model.registry
        result = build_drift_report(settings, spec, model.event_log, registry)
        if isinstance(result, DriftSkipped):
            context.log.info(f"drift report skipped: {result.reason}")
            return dg.MaterializeResult(metadata=skipped_metadata(result))
        registry.log_dict(result.champion_version, result.summary(), f"drift/{html_path(result.report_path).stem}.json")
        context.log.info(f"drift share {result.drift_share:.2f} ({', '.join(result.drifted_columns) or 'no drifted columns'}); report {result.report_path}")
        mlflow_url = mlflow_version_url(settings, registry.name, result.champion_version)
        return dg.MaterializeResult(metadata=report_metadata(settings, spec, result, mlflow_url))

    @dg.asset_check(asset=key, name="drift_check", description="Warns when the latest drift report says the dataset drifted, naming the drifted columns.")
    def drift_check(context: dg.AssetCheckExecutionContext, platform: PlatformResource) -> dg.AssetCheckResult:
        platform.step_platform()
        meta = latest_metadata(context.instance, key) or {}
        if meta.get(SKIPPED, True):
            return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN, description=f"no drift measured: {meta.get(SKIP_REASON, 'no drift report yet')}")
        share, column_names = float(str(meta[DRIFT_SHARE])), str(meta[DRIFTED_COLUMN_NAMES])
        drift = bool(meta[DATASET_DRIFT])
        verdict = "dataset drift" if drift else "no dataset drift"
        return dg.AssetCheckResult(
            passed=not drift,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{verdict}: {share:.0%} of columns drifted (threshold {float(str(meta[DRIFT_SHARE_THRESHOLD])):.0%}); drifted: {column_names}",
            metadata={DRIFT_SHARE: share, DRIFTED_COLUMNS: int(str(meta[DRIFTED_COLUMNS])), DRIFTED_COLUMN_NAMES: column_names},
        )

    @dg.asset(
        key=names.asset(DRIFT_DASHBOARD),
        deps=[key],
        group_name=names.group,
        kinds={"evidently"},
        description="The latest drift report's snapshot in the model's project of the Evidently workspace (drift over time on its "
        "dashboard in `evidently ui`), the newest `drift_reports_keep` kept. Best effort: a workspace that cannot be written "
        "or read leaves the report as it is and says why here; the next report adds itself.",
    )
    def drift_dashboard(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        model = platform.for_step(model_name)
        meta = latest_metadata(context.instance, key) or {}
        if meta.get(SKIPPED, True):
            return dg.MaterializeResult(metadata={SKIPPED: True, SKIP_REASON: f"no drift report to add: {meta.get(SKIP_REASON, 'no drift report yet')}"})
        report_path = Path(str(meta[REPORT_PATH]))
        entry = publish_drift_report(model.settings, model.spec, report_path)
        if entry.error is not None:
            context.log.warning(f"{entry.error}; the report itself is kept at {report_path}")
        return dg.MaterializeResult(metadata={SKIPPED: False, REPORT_PATH: dg.MetadataValue.path(str(report_path)),
                                              **_workspace_metadata(model.settings, entry)})

    return [drift_report, drift_dashboard], [drift_check]
