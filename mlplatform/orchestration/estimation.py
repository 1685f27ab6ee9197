"""The estimated_performance asset and its two checks: how the champion does on its latest events before their labels
come back, and whether the estimate can be trusted where they have.

Kept current by `drift_report_sensor` (orchestration/sensors.py) every `drift_every_n_events` new events; the
retraining sensor reads its latest metadata for the estimated_drop trigger.
"""

from collections.abc import Mapping, Sequence

import dagster as dg
import numpy as np
import pandas as pd

from mlplatform.domain.estimation import Estimate
from mlplatform.domain.evaluation import metric_text
from mlplatform.domain.keys import (CHAMPION_VERSION, ESTIMATED_CHUNK, ESTIMATED_METRIC, FLOOR_VERDICT, RECENT_ESTIMATE, RECENT_ESTIMATED_PREFIX, RECENT_EVENTS,
                                   RECENT_LABELLED, RECENT_LABELLED_FIELDS, RECENT_LOWER, RECENT_NOTE, RECENT_UPPER, REALIZED_CHUNK, REFERENCE, SKIP_REASON, SKIPPED, TRAINING_ROWS_LEFT_OUT, TRUST_VERDICT)
from mlplatform.domain.timeformat import iso_text, iso_time
from mlplatform.orchestration.assets import markdown_table, value_snapshot_metadata
from mlplatform.orchestration.names import ESTIMATE_FLOOR_CHECK, ESTIMATE_TRUST_CHECK, ESTIMATED_PERFORMANCE, RAW_EVENTS, ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.pipeline.estimation import ChunkResult, EstimationReport, EstimationSkipped, estimate_floors, estimate_performance
from mlplatform.pipeline.live_quality import Bound, never_met, unfloored, waived_note
from mlplatform.root import ModelContext
from mlplatform.stores.evidently_workspace import ESTIMATED_KIND, ValuePoint, WorkspaceEntry, add_value_snapshots

CONCEPT_CHANGE = ("where labels came back, realized performance fell below the estimate's band: P(y|x) has probably changed "
                  "(concept change), which an estimate from the inputs cannot see; trust realized performance and live_quality")
BETTER_THAN_ESTIMATED = ("where labels came back, realized performance is better than the estimate's band: the estimate is off "
                         "(labels easier to predict than on the hold-out, or its calibration no longer holds), not a fall; "
                         "trust realized performance and live_quality")
FELL_AT_THE_THRESHOLD = ("where labels came back, realized performance is better than the estimate's band on the watched metric, "
                         "but other metrics fell below theirs: the champion still ranks the events, but its answers at the decision "
                         "threshold got worse (its probabilities moved); trust realized performance and live_quality")


def trust_verdict(result: EstimationReport) -> str:
    """What the trust check says: realized performance inside the estimate's band, outside it on which side and what that
    means, or why nothing could be compared."""
    untrusted, compared = result.untrusted, result.compared
    if untrusted and result.only_better and (fallen := result.fallen_elsewhere):
        text = f"{FELL_AT_THE_THRESHOLD}: {'; '.join(untrusted + fallen)}"
    elif untrusted:
        text = f"{BETTER_THAN_ESTIMATED if result.only_better else CONCEPT_CHANGE}: {'; '.join(untrusted)}"
    elif compared:
        text = f"realized performance inside the estimate's band on the {compared} chunk{'s' * (compared > 1)} where labels came back"
    else:
        text = f"nothing to check the estimate against yet: {result.uncompared}"
    return text + (f"; {result.left_out_note}" if result.left_out else "")


def _band(estimate: Estimate | None, metric: str) -> str:
    if estimate is None or metric not in estimate.metrics:
        return "" if estimate is None else estimate.note
    return f"{metric_text(metric, estimate.metrics[metric])} ({metric_text(metric, estimate.lower[metric])}-{metric_text(metric, estimate.upper[metric])})"


def _span(chunk: ChunkResult) -> str:
    """A chunk's events, for the headline numbers (the estimation probe: an estimate of today's events beside a realized
    value of last week's read as a badly wrong estimate)."""
    return f"{iso_time(chunk.first_event_time)} to {iso_time(chunk.last_event_time)} ({chunk.estimate.events} events)"


def chunk_table(report: EstimationReport) -> str:
    m = report.metric
    first, last = iso_text(np.array([c.first_event_time for c in report.chunks])), iso_text(np.array([c.last_event_time for c in report.chunks]))
    rows = [{"first event": first[i], "last event": last[i], "events": c.estimate.events,
             f"estimated {m} (95 % band)": _band(c.estimate, m), "labelled": c.labelled,
             f"estimated {m} on the labelled": _band(c.labelled_estimate, m) if c.realized else "",
             f"realized {m}": metric_text(m, c.realized[m]) if m in c.realized else "",
             "flag": "realized outside the band" if c.outside_band(m) else ""} for i, c in enumerate(report.chunks)]
    return markdown_table(pd.DataFrame(rows))


def floor_verdict(recent: Estimate, floors: list[Bound], version: int, holdout: Mapping[str, float],
                  waived: Sequence[Bound] = ()) -> tuple[list[str], str]:
    """The floors the recent estimate breaches, and the verdict saying them (with those the `version`'s own `holdout`
    missed too: `never_met`, and the `waived` defaults it never met: `waived_note`), or the floors of metrics undefined
    on its events, which it could not check (the estimation probe: AUC of events all scored as one class read 'within
    floors')."""
    breached = [b for b in floors if b.metric in recent.metrics and b.breached_by(recent.metrics[b.metric])]
    breaches = [b.describe(recent.metrics[b.metric]).replace("live ", "estimated ") for b in breached]
    if not recent.metrics:
        return breaches, f"no estimate: {recent.note}"
    if not floors:  # a regression model with no RMSE floor set: "within floors" said a check that never ran (the estimation probe)
        return breaches, unfloored("estimated", recent.metrics, bool(waived)) + waived_note(version, waived, holdout)
    unchecked = sorted({b.metric for b in floors if b.metric not in recent.metrics})
    text = ("; ".join(breaches) or "estimate within floors") + never_met(version, breached, holdout)
    if unchecked:
        text += f" ({', '.join(unchecked)} undefined on these {recent.events} events: {'its floor' if len(unchecked) == 1 else 'their floors'} not checked)"
    return breaches, text + waived_note(version, waived, holdout)


def report_metadata(report: EstimationReport) -> dict[str, object]:
    """Numbers first (the Dagster UI plots numeric metadata over materializations): the newest chunk's estimate and
    band, the newest labelled chunk's realized value beside its estimate, the recent estimate the sensor reads."""
    m = report.metric
    meta: dict[str, object] = {SKIPPED: False, CHAMPION_VERSION: report.champion_version, "method": report.method, ESTIMATED_METRIC: m,
                               REFERENCE: report.reference.get(m, float("nan"))}
    newest = next((c for c in reversed(report.chunks) if c.estimate.metrics), None)
    if newest is not None:
        e = newest.estimate
        meta.update({f"estimated_{k}": v for k, v in e.metrics.items()})
        meta.update({f"estimated_{k}_{side}": band[k] for k in e.metrics if k == m for side, band in (("lower", e.lower), ("upper", e.upper))})
        meta[ESTIMATED_CHUNK] = _span(newest)
    labelled = next((c for c in reversed(report.chunks) if c.realized and c.labelled_estimate is not None), None)
    if labelled is not None and labelled.labelled_estimate is not None:
        meta.update({f"realized_{k}": v for k, v in labelled.realized.items()})
        meta[f"estimated_{m}_on_labelled"] = labelled.labelled_estimate.metrics.get(m, float("nan"))
        meta[REALIZED_CHUNK] = _span(labelled)
    recent = report.recent.estimate
    if m in recent.metrics:
        meta.update({RECENT_ESTIMATE: recent.metrics[m], RECENT_LOWER: recent.lower[m], RECENT_UPPER: recent.upper[m]})
    else:  # estimated, but not the watched metric (the estimation probe: every event scored as one class left it empty)
        note = recent.note or f"{m} is undefined on the latest {recent.events} events"
        meta[RECENT_NOTE] = f"{note} ({report.training_rows_note})" if report.training_rows else note
    meta[RECENT_LABELLED] = report.recent.labelled
    if (part := report.recent.labelled_part(m)) is not None:
        meta.update(zip(RECENT_LABELLED_FIELDS, (part.estimate, part.lower, part.upper, part.realized)))
    if report.left_out:
        meta["realized_left_out"] = report.left_out_note
    if report.training_rows:
        meta[TRAINING_ROWS_LEFT_OUT] = report.training_rows_note
    meta.update({RECENT_EVENTS: recent.events, "chunks": len(report.chunks), "untrusted_chunks": len(report.untrusted),
                 "reference_metrics": dg.MetadataValue.json(report.reference), "chunk_table": dg.MetadataValue.md(chunk_table(report))})
    return meta


def add_estimate_snapshots(model: ModelContext, report: EstimationReport, floors: list[Bound]) -> WorkspaceEntry:
    """Each estimated chunk newer than the project's newest estimate as a snapshot at its newest event's time: the
    watched metric with its band (and realized where labels came back), the floored metrics beside their floors."""
    m, points = report.metric, []
    for c in report.chunks:
        e = c.estimate
        if m not in e.metrics:
            continue
        values = {f"estimated_{m}": e.metrics[m], f"estimated_{m}_lower": e.lower[m], f"estimated_{m}_upper": e.upper[m]}
        values |= {f"realized_{m}": c.realized[m]} if m in c.realized else {}
        values |= {k: v for b in floors if b.metric in e.metrics for k, v in ((f"estimated_{b.metric}", e.metrics[b.metric]), (f"{b.metric}_{b.kind}", b.value))}
        points.append(ValuePoint(f"{model.name}-estimate-v{report.champion_version}-{iso_time(c.last_event_time)}", c.last_event_time, values))
    assert model.settings.evidently_workspace_dir is not None  # resolved by Settings
    return add_value_snapshots(model.settings.evidently_workspace_dir, model.name, ESTIMATED_KIND, report.champion_version, points,
                               "Estimated performance vs floor", model.settings.drift_reports_keep)


def build_estimated_performance(names: ModelNames, retry: dg.RetryPolicy, freshness: dg.FreshnessPolicy) -> dg.AssetsDefinition:
    model_name = names.model
    key = names.asset(ESTIMATED_PERFORMANCE)

    @dg.asset(
        key=key,
        deps=[names.asset(RAW_EVENTS)],
        group_name=names.group,
        kinds={"python", "lightgbm"},
        retry_policy=retry,
        freshness_policy=freshness,
        check_specs=[
            dg.AssetCheckSpec(ESTIMATE_FLOOR_CHECK, asset=key, description="The champion's estimated performance on its latest events meets the floors."),
            dg.AssetCheckSpec(ESTIMATE_TRUST_CHECK, asset=key, description="Where labels came back, realized performance stays inside the estimate's "
                              "band; outside it the estimate is not to be trusted: below it, P(y|x) has probably changed; above it, the estimate is off."),
        ],
        description="The champion's performance on the latest chunks of events it never trained on (served or ingested, labelled "
        "after its cut-off or not at all), estimated "
        "without labels by the estimator it was logged with (CBPE for classification, DLE for regression), with the 95 % band "
        "of a chunk that size, and realized beside it where labels came back. Blind to concept change (P(y|x) shifting). "
        "Each new chunk is added to the model's Evidently project, beside the floors (`evidently ui`).",
    )
    def estimated_performance(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        model = platform.for_step(model_name)
        settings, spec, registry = model.settings, model.spec, model.registry
        champion = registry.champion_record()
        predictor = None if champion is None else registry.load_predictor(champion.version)
        result = estimate_performance(settings, spec, model.event_log, predictor, None if champion is None else champion.version,
                                      0 if champion is None else champion.label_seq_cutoff)
        if isinstance(result, EstimationSkipped):
            context.log.info(f"estimated performance skipped: {result.reason}")
            return dg.MaterializeResult(
                metadata={SKIPPED: True, SKIP_REASON: result.reason, CHAMPION_VERSION: result.champion_version or 0},
                check_results=[dg.AssetCheckResult(check_name=name, passed=True, severity=dg.AssetCheckSeverity.WARN, description=f"no estimate: {result.reason}")
                               for name in (ESTIMATE_FLOOR_CHECK, ESTIMATE_TRUST_CHECK)],
            )
        recent, (floors, waived) = result.recent.estimate, estimate_floors(settings, spec, result.reference)
        breaches, floor_text = floor_verdict(recent, floors, result.champion_version, result.reference, waived)
        untrusted, trust_text = result.untrusted, trust_verdict(result)
        context.log.info(f"{floor_text}; {trust_text}")
        return dg.MaterializeResult(
            metadata={**report_metadata(result), FLOOR_VERDICT: floor_text, TRUST_VERDICT: trust_text,
                      **value_snapshot_metadata(context, settings, add_estimate_snapshots(model, result, floors))},
            check_results=[
                dg.AssetCheckResult(check_name=ESTIMATE_FLOOR_CHECK, passed=not breaches, severity=dg.AssetCheckSeverity.WARN,
                                    description=floor_text, metadata={RECENT_EVENTS: recent.events, **{f"{RECENT_ESTIMATED_PREFIX}{k}": v for k, v in recent.metrics.items()}}),
                dg.AssetCheckResult(check_name=ESTIMATE_TRUST_CHECK, passed=not untrusted, severity=dg.AssetCheckSeverity.WARN,
                                    description=trust_text, metadata={"untrusted_chunks": len(untrusted)}),
            ],
        )

    return estimated_performance
