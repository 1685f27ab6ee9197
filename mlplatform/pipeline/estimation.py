"""The champion's performance on its latest events, estimated without labels and, where labels came back, realized beside.

The latest `estimation_chunks` chunks of `estimation_chunk_events` events (served or ingested, labelled or not),
oldest first; the newest `estimated_drop_events` events as one more estimate, which the retraining sensor reads.
Where realized performance leaves the band the estimate gave for the same labelled events, the estimate is not
to be trusted: P(y|x) has probably changed, which no estimate from the inputs alone can see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlplatform.domain.estimation import HIGHER_IS_BETTER, WATCHED_METRIC, Estimate, Estimator
from mlplatform.domain.evaluation import DEFAULT_FLOOR, class_counts, metric_text, named_counts, primary_metric
from mlplatform.domain.policy import LabelledPart
from mlplatform.domain.predictor import Predictor
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_TIME, LABEL
from mlplatform.pipeline.live_quality import Bound, bounds, waive_unmet_defaults
from mlplatform.pipeline.retraining import unseen_after, with_history
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventStore



@dataclass(frozen=True)
class EstimationSkipped:
    """No estimate could be made; `reason` says why in a sentence."""

    reason: str
    champion_version: int | None = None


@dataclass(frozen=True)
class ChunkResult:
    first_event_time: int
    last_event_time: int
    estimate: Estimate  # over every event of the chunk
    labelled: int
    labelled_estimate: Estimate | None  # over its labelled events only: what realized is compared with
    realized: dict[str, float]

    def labelled_part(self, metric: str) -> LabelledPart | None:
        """Its labelled events' estimate and realized value of `metric`, where both are defined: what the trust check
        compares, and what the retraining sensor lets supersede the estimate."""
        e = self.labelled_estimate
        if e is None or metric not in e.metrics or metric not in self.realized:
            return None
        return LabelledPart(self.labelled, e.metrics[metric], e.lower[metric], e.upper[metric], self.realized[metric])

    def outside_band(self, metric: str) -> bool:
        """Realized performance left the band the estimate gave for the same labelled events, as the verdicts print them
        (`metric_text`): a near-perfect classifier's band collapsed to 0.9998-1.0000, and "realized 0.9998 below" it read as a
        concept change (the River probe)."""
        part = self.labelled_part(metric)
        if part is None:
            return False
        lower, realized, upper = (float(metric_text(metric, v).replace(",", "")) for v in (part.lower, part.realized, part.upper))
        return not lower <= realized <= upper

    def better_than_band(self, metric: str) -> bool:
        """Outside the band on the good side: above it, or below it for an error (mae)."""
        e = self.labelled_estimate
        return self.outside_band(metric) and e is not None and (self.realized[metric] > e.upper[metric]) == HIGHER_IS_BETTER[metric]


@dataclass(frozen=True)
class EstimationReport:
    champion_version: int
    method: str
    metric: str  # the watched one (what the retraining trigger and the trust flag look at)
    reference: dict[str, float]
    chunks: list[ChunkResult]
    recent: ChunkResult  # the newest `estimated_drop_events`, which the retraining sensor reads
    left_out: dict[str, int] = field(default_factory=dict)  # class → labelled events of classes the champion does not predict
    read: int = 0  # the latest events by event time read for the chunks and the recent estimate
    training_rows: int = 0  # of those, the champion's own training rows, left out

    @property
    def training_rows_note(self) -> str:
        """Why a reading holds fewer events than it reads (the estimation probe: 293 of 3000 unlabelled events went
        unestimated with no word, and a back-fill dated before the champion's window gave 'only 0 events')."""
        if not self.training_rows:
            return ""
        return (f"{self.training_rows} of the latest {self.read} events by event time were champion v{self.champion_version}'s training rows "
                "(its scores there are in-sample) and are left out; events dated before them are not read")

    @property
    def left_out_note(self) -> str:
        """Why some labelled events count in no realized metric: a class the spec gained after the champion was trained."""
        if not self.left_out:
            return ""
        return (f"{sum(self.left_out.values())} labelled events of classes champion v{self.champion_version} does not predict ({named_counts(self.left_out)}) "
                "are left out of the realized metrics; a retraining under the current spec learns them")

    @property
    def compared(self) -> int:
        """The chunks where realized performance could be set beside the estimate (labels after the champion's cut-off)."""
        return sum(1 for c in self.chunks if c.labelled_part(self.metric) is not None)

    @property
    def uncompared(self) -> str:
        """Why no chunk was compared (`compared` is 0): no labels after the champion's cut-off, too few in each chunk, or
        the watched metric undefined on them (the estimation probe: 2279 labels of one class read "no chunk has labels")."""
        labelled = [c for c in self.chunks if c.labelled]
        if not labelled:
            return "no chunk has labels from after the champion's cut-off"
        count = sum(c.labelled for c in labelled)
        estimated = [c for c in labelled if c.labelled_estimate is not None and c.labelled_estimate.metrics]
        if not estimated:
            return f"the {count} labelled events after the champion's cut-off are too few in each chunk for an estimate"
        if not any(self.metric in c.labelled_estimate.metrics for c in estimated if c.labelled_estimate is not None):
            return f"the estimated {self.metric} is undefined on the {count} labelled events after the champion's cut-off (all scored as one class)"
        return f"realized {self.metric} is undefined on the {count} labels after the champion's cut-off (all of one class)"

    @property
    def untrusted(self) -> list[str]:
        """One sentence per chunk whose realized performance left the estimate's band, saying on which side."""
        out = []
        for c in self.chunks:
            if c.outside_band(self.metric) and c.labelled_estimate is not None:
                e, m = c.labelled_estimate, self.metric
                side = "above" if c.realized[m] > e.upper[m] else "below"
                out.append(f"realized {m} {metric_text(m, c.realized[m])} {side} the estimate's band {metric_text(m, e.lower[m])}-{metric_text(m, e.upper[m])} on {c.labelled} labelled "
                           f"events ({'better' if c.better_than_band(m) else 'worse'} than estimated)")
        return out

    @property
    def fallen_elsewhere(self) -> list[str]:
        """The other metrics that fell below their estimate's band on a chunk where the watched one came out better: a
        shift that kept the champion's ranking (ROC AUC) moved its answers at the threshold (the new-user probe: realized
        precision 0.12 against an estimated 0.82, on a chunk the trust verdict called "not a fall")."""
        out: list[str] = []
        if self.metric != "roc_auc":  # a ranking kept while the answers at a threshold moved: binary models alone
            return out
        for c in self.chunks:
            e = c.labelled_estimate
            if e is None or not c.better_than_band(self.metric):
                continue
            out += [f"realized {k} {metric_text(k, c.realized[k])} below the estimate's band {metric_text(k, e.lower[k])}-{metric_text(k, e.upper[k])} on {c.labelled} labelled events"
                    for k in sorted(c.realized) if k != self.metric and HIGHER_IS_BETTER.get(k) and k in e.lower and k in e.upper
                    and c.outside_band(k) and not c.better_than_band(k)]
        return out

    @property
    def only_better(self) -> bool:
        """Every chunk outside the band is on the good side: the estimate is off, but performance did not fall."""
        return all(c.better_than_band(self.metric) for c in self.chunks if c.outside_band(self.metric))


def _chunk(estimator: Estimator, features: pd.DataFrame, scores: np.ndarray, y: np.ndarray, times: pd.Series, rows: np.ndarray,
           min_events: int) -> ChunkResult:
    """The events at `rows` estimated, and their labelled ones (`y` not NaN) estimated again and realized beside."""
    part = rows[~np.isnan(y[rows])]
    labelled_estimate, realized = None, {}
    if len(part):
        labelled_estimate = estimator.estimate(features.iloc[part], scores[part], min_events)
        if labelled_estimate.metrics:
            realized = estimator.realized(scores[part], y[part])
    return ChunkResult(int(times.iloc[rows[0]]), int(times.iloc[rows[-1]]), estimator.estimate(features.iloc[rows], scores[rows], min_events),
                       len(part), labelled_estimate, realized)


def estimate_chunks(predictor: Predictor, estimator: Estimator, events: pd.DataFrame, y: np.ndarray, chunk_events: int, chunks: int,
                    min_events: int, recent_events: int) -> tuple[list[ChunkResult], ChunkResult]:
    """The latest `chunks` chunks of `chunk_events` of `events` (those the champion never trained on) aligned on the newest
    event (the oldest may be short), oldest first, each estimated, and realized where `y` (the labels as
    `Predictor.label_codes`) is known; and the newest `recent_events` as one more chunk, whose labels supersede its
    estimate where they came back (the retraining sensor's estimated_drop). The model scores the events once for both."""
    if events.empty:
        return [], ChunkResult(0, 0, predictor.estimate(events, min_events), 0, None, {})
    events = events.reset_index(drop=True)
    features, scores = predictor.features_and_scores(events)
    times, n = events[EVENT_TIME], len(events)
    ends = range(n, max(0, n - chunks * chunk_events), -chunk_events)
    out = [_chunk(estimator, features, scores, y, times, np.arange(max(0, n - chunks * chunk_events, end - chunk_events), end), min_events)
           for end in ends]
    return out[::-1], _chunk(estimator, features, scores, y, times, np.arange(max(0, n - recent_events), n), min_events)


def estimate_performance(settings: Settings, spec: DatasetSpec, log: EventStore, predictor: Predictor | None,
                         champion_version: int | None, label_seq_cutoff: int) -> EstimationReport | EstimationSkipped:
    """The champion's estimated (and where possible realized, on labels after its `label_seq_cutoff`) performance on the
    latest events."""
    if predictor is None or champion_version is None:
        return EstimationSkipped("no champion yet: there is no model whose performance to estimate")
    if predictor.estimator is None:
        return EstimationSkipped(f"champion v{champion_version}: {predictor.no_estimator}", champion_version)
    estimator = predictor.estimator
    wanted = max(settings.estimation_chunks * settings.estimation_chunk_events, settings.estimated_drop_events)
    # A model with history features is scored on the latest events with those columns as known now, as at training.
    events = with_history(log, spec, log.events_between(limit=wanted), log.counts().label_watermark)
    if events.empty:
        return EstimationSkipped("the event log holds no events yet", champion_version)
    # Every reading leaves out the events the champion trained on (labelled up to its cut-off, a refit's hold-out
    # included): right after a promotion the latest events were its own training rows, where its scores are in-sample.
    # An estimate on them against its hold-out reference triggered a retraining on the very same data, and the chunks
    # plotted a confident model that the next events then seemed to lose.
    unseen = events[unseen_after(events, label_seq_cutoff)]
    y = predictor.label_codes(unseen[LABEL])
    span = settings.estimation_chunks * settings.estimation_chunk_events
    chunks, recent = estimate_chunks(predictor, estimator, unseen, y, settings.estimation_chunk_events, settings.estimation_chunks,
                                     settings.estimation_min_events, settings.estimated_drop_events)
    return EstimationReport(champion_version, estimator.method, WATCHED_METRIC[spec.task.value], estimator.reference, chunks, recent,
                            class_counts(unseen[LABEL].iloc[-span:][np.isnan(y[-span:])]),  # missing labels are NaN in y too, and not counted
                            read=len(events), training_rows=len(events) - len(unseen))


def estimate_floors(settings: Settings, spec: DatasetSpec, holdout: Mapping[str, float]) -> tuple[list[Bound], tuple[Bound, ...]]:
    """The floors an estimate is held to: the live ones (precision, recall or RMSE) and the quality floor when it is
    about an estimable metric (AUC for binary, RMSE for regression when configured); and the default ones the version's
    own `holdout` never met, which are not (`waive_unmet_defaults`)."""
    out = bounds(settings, spec)
    metric, higher = primary_metric(spec)
    set_floor = settings.floor_of(metric)
    floor = set_floor if set_floor is not None else DEFAULT_FLOOR[spec.task]
    if metric in ("roc_auc", "rmse") and math.isfinite(floor) and all(b.metric != metric for b in out):
        out.append(Bound(metric, floor, minimum=higher, chosen=set_floor is not None))
    return waive_unmet_defaults(out, holdout)
