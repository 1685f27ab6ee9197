"""Live quality: how the champion does on the predictions it actually served, once their labels arrived.

A sliding window of the latest labelled served predictions of one model version, scored with the same
`evaluation.score` as the hold-out, and compared with floors (precision and recall for classification,
an RMSE ceiling for regression). The hold-out says how good a model was on the past; this says how good
it is now. The realized reading puts the two side by side for the quality_drop trigger: the watched metric
on the latest `quality_drop_events` labelled served predictions, with the 95 % band of a sample that size,
against the champion's own hold-out reference. Unlike an estimate, it sees a concept change.

A champion that served too few (a stream landed as files alone) is scored instead on the latest labelled events it
never learnt from, whose labels came after its training snapshot, predicted now (`Unserved`): before, such a stream had
no realized quality, so no live floor and no quality_drop (the new-user probe).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

import numpy as np

from mlplatform.domain.estimation import WATCHED_METRIC, Z95
from mlplatform.domain.evaluation import score
from mlplatform.domain.policy import PerformanceReading
from mlplatform.domain.keys import CHAMPION_VERSION, QUALITY_EVENTS, QUALITY_LOWER, QUALITY_METRIC, QUALITY_UPPER, QUALITY_VALUE, REFERENCE
from mlplatform.stores.eventlog import EventStore
from mlplatform.domain.predictor import PREDICTION, PROBABILITY, Predictor
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec, Task
from mlplatform.domain.validation import EVENT_TIME, LABEL


SERVED = "labelled served predictions"
UNSERVED = "labelled events it never trained on (labels after its training cut-off, predicted now: it served too few)"


@dataclass(frozen=True)
class Bound:
    """A floor (`minimum`) or a ceiling on one metric."""

    metric: str
    value: float
    minimum: bool
    chosen: bool = True  # set for this model (its loop:, an MLPLATFORM_* variable), not the setting's default

    def breached_by(self, observed: float) -> bool:
        return not math.isnan(observed) and (observed < self.value if self.minimum else observed > self.value)

    @property
    def kind(self) -> str:
        return "floor" if self.minimum else "ceiling"

    def describe(self, observed: float) -> str:
        return f"live {self.metric} {observed:.4f} {'<' if self.minimum else '>'} {self.kind} {self.value:.4f}"


@dataclass(frozen=True)
class LiveQuality:
    model_version: int
    events: int
    metrics: dict[str, float]
    bounds: list[Bound]
    breaches: list[str]
    first_event_time: int | None
    last_event_time: int | None
    enough: bool
    scored_on: str = SERVED
    waived: tuple[Bound, ...] = ()  # default floors its own hold-out never met: not checked (`waive_unmet_defaults`)

    @property
    def below_floor(self) -> bool:
        return self.enough and bool(self.breaches)

    def verdict(self, min_events: int, holdout: Mapping[str, float] | None = None) -> str:
        """The floors breached, "within floors", or why there is no verdict: too few events (fewer than `min_events`), or
        no floor set (a regression model without MLPLATFORM_LIVE_MAX_RMSE read "within floors" though nothing was checked).
        A floor the version's own `holdout` metrics were beyond too is said to be one it never met, with the setting to
        change: the 0.5 defaults on a 12-class model's macro averages read as a fall from the first reading (the yeast probe)."""
        if not self.enough:
            return f"v{self.model_version}: {self.events} {self.scored_on}, fewer than {min_events}: no verdict"
        waived = waived_note(self.model_version, self.waived, holdout or {})
        if not self.bounds:
            return unfloored("live", self.metrics, bool(self.waived)) + waived
        unchecked = [b.metric for b in self.bounds if b.metric not in self.metrics]
        undefined = f" ({', '.join(unchecked)} undefined on these events, no positive predicted or labelled: not checked)" if unchecked else ""
        breached = [b for b in self.bounds if b.metric in self.metrics and b.breached_by(self.metrics[b.metric])]
        return ("; ".join(self.breaches) or "within floors") + never_met(self.model_version, breached, holdout or {}) + undefined + waived


def never_met(version: int, breached: list[Bound], holdout: Mapping[str, float]) -> str:
    """Of the `breached` bounds, those the version's own `holdout` metrics were beyond too, said as floors it never met,
    with the setting to change ("" when none): the live and the estimated verdicts say it alike."""
    never = [b for b in breached if b.metric in holdout and b.breached_by(holdout[b.metric])]
    if not never:
        return ""
    return (f" (v{version}'s own hold-out {', '.join(f'{b.metric} {holdout[b.metric]:.4f}' for b in never)} was beyond "
            f"{'it' if len(never) == 1 else 'them'} too: a floor this model never met, no drop; set the model's own in its defs.yaml, "
            f"loop: {{{', '.join(f'{LOOP_KEYS.get(b.metric, b.metric)}: <value>' for b in never)}}})")


def unfloored(kind: str, metrics: Mapping[str, float], waived: bool = False) -> str:
    """The verdict on `kind` ("live", "estimated") metrics when no floor applies to them (none set, or the `waived`
    defaults alone): not "within floors", and their values (`materialize --select live_quality` printed the names
    alone: the history probe)."""
    return f"no floor is {'checked' if waived else 'set'} for the {kind} {', '.join(f'{name} {metrics[name]:.4g}' for name in sorted(metrics))}: not checked"


LOOP_KEYS = {"precision": "live_min_precision", "recall": "live_min_recall", "rmse": "live_max_rmse", "roc_auc": "quality_floor"}  # each bound's setting


def bounds(settings: Settings, spec: DatasetSpec) -> list[Bound]:
    """The configured floors that apply to this task, each marked chosen when set for the model rather than defaulted."""
    configured = ((("precision", "live_min_precision"), ("recall", "live_min_recall")) if spec.is_classification else (("rmse", "live_max_rmse"),))
    return [Bound(metric, value, minimum=spec.is_classification, chosen=setting in settings.model_fields_set)
            for metric, setting in configured if (value := getattr(settings, setting)) is not None]


def waive_unmet_defaults(limits: list[Bound], holdout: Mapping[str, float]) -> tuple[list[Bound], tuple[Bound, ...]]:
    """`limits` split into those checked and the default ones (not chosen) the version's own `holdout` metrics were
    beyond too, which are not: the 0.5 defaults against a 12-class model's macro averages, or a rare positive class
    at threshold 0.5, failed every reading from the first and kept an alert firing on a model that never changed (the
    yeast probe). A floor set for the model is checked whatever its hold-out did (`never_met` says so)."""
    waived = tuple(b for b in limits if not b.chosen and b.metric in holdout and b.breached_by(holdout[b.metric]))
    return [b for b in limits if b not in waived], waived


def waived_note(version: int, waived: Sequence[Bound], holdout: Mapping[str, float]) -> str:
    """What a verdict adds for the `waived` default floors ("" when none): which, why, and the setting that checks one."""
    if not waived:
        return ""
    one = len(waived) == 1
    limits = ", ".join(f"{b.metric} {'>=' if b.minimum else '<='} {b.value:g}" for b in waived)
    held = ", ".join(f"{b.metric} {holdout[b.metric]:.4f}" for b in waived)
    settings = ", ".join(f"{LOOP_KEYS[b.metric]}: <value>" for b in waived)
    return (f" (default {'floor' if one else 'floors'} {limits} not checked: v{version}'s own hold-out {held} never met "
            f"{'it' if one else 'them'}; to check {'one' if one else 'them'}, set the model's own in its defs.yaml, loop: {{{settings}}})")


@dataclass(frozen=True)
class ServedVersion:
    """A model version whose served predictions are scored, and the class its served probability is of (None: not binary).

    A binary model serves the probability of the positive class it was trained with. After the spec's `positive_class`
    is flipped, that is the probability of the spec's other class until a retraining: read as it is, AUC came out
    inverted (0.1 for a model at 0.9) and a quality_drop fired on a model that had not changed."""

    version: int
    probability_of: str | None


@dataclass(frozen=True)
class Unserved:
    """Where the champion is scored when it served fewer than `live_quality_min_events` labelled predictions: the events
    whose labels came after `cutoff` (its training snapshot's label watermark), which it never learnt from."""

    cutoff: int  # 0 or less: unknown (a version logged without its window's cut-off), so never scored so
    predictor: Callable[[], Predictor | None]  # the champion, loaded only when needed; None when its files cannot be loaded


def _scored(settings: Settings, spec: DatasetSpec, log: EventStore, served: ServedVersion, limit: int,
            unserved: Unserved | None) -> tuple[pd.Series, pd.DataFrame, pd.Series, str]:
    """The latest `limit` labels the version is scored on, what it predicted for them, their event times and what they
    are: its served predictions, or, when it served too few and more labelled events came after its cut-off, those
    predicted now. Which of the two is decided on the served count alone, whatever `limit` (the quality_drop reading's
    may be below the floor's minimum: it then took the unserved events beside a live reading of the served ones). A
    model reading history features, or one whose files cannot be loaded, is never scored so."""
    wide = max(limit, settings.live_quality_min_events)
    window = log.served_window(wide, served.version)
    served_count = len(window)
    window = window.tail(limit).reset_index(drop=True)
    as_served = window[LABEL], served_predictions(spec, window, served.probability_of), window[EVENT_TIME], SERVED
    if unserved is None or served_count >= settings.live_quality_min_events or unserved.cutoff <= 0:
        return as_served
    later = log.labels_since(unserved.cutoff, wide, newest=True)
    if len(later) <= served_count:
        return as_served
    later = later.tail(limit).reset_index(drop=True)
    predictor = unserved.predictor()
    if predictor is None or set(predictor.transformer.input_columns) - set(later.columns):
        return as_served
    return later[LABEL], served_predictions(spec, predictor.predict(later), served.probability_of), later[EVENT_TIME], UNSERVED


def served_predictions(spec: DatasetSpec, window: pd.DataFrame, probability_of: str | None) -> pd.DataFrame:
    """What was served for each event of a served window, as `evaluation.score` reads a prediction: the probability of the
    spec's positive class, whichever of the two classes `probability_of` the served version's probability is. A regression
    model's predictions, made now for unserved events, have none (the new-user probe: live_quality failed on every
    regression stream landed as files, KeyError 'probability')."""
    probability = window[PROBABILITY] if PROBABILITY in window.columns else pd.Series(np.nan, index=window.index)
    if spec.task is Task.binary and probability_of not in (None, spec.positive_class) and probability_of in (spec.classes or []):
        probability = 1.0 - probability.astype("float64")
    predicted = pd.DataFrame({PREDICTION: window[PREDICTION], PROBABILITY: probability})
    if not spec.is_classification:
        predicted[PREDICTION] = predicted[PREDICTION].astype("float64")
    return predicted


@dataclass(frozen=True)
class RealizedReading:
    """The champion's watched metric (AUC, multiclass accuracy, MAE) realized on labelled served predictions, with the
    95 % band of a sample that size, beside its realized value on its own hold-out (the reference an estimate uses too)."""

    metric: str
    value: float
    lower: float
    upper: float
    reference: float
    events: int

    def as_reading(self, report_id: str) -> PerformanceReading:
        """The reading the retraining policy decides on, named by what made it."""
        return PerformanceReading(report_id, self.metric, self.value, self.lower, self.upper, self.reference, self.events)

    def metadata(self, champion_version: int) -> dict[str, object]:
        """The live_quality metadata the retraining sensor reads (trigger.READING_SOURCES)."""
        return {CHAMPION_VERSION: champion_version, QUALITY_METRIC: self.metric, QUALITY_VALUE: self.value, QUALITY_LOWER: self.lower,
                QUALITY_UPPER: self.upper, REFERENCE: self.reference, QUALITY_EVENTS: self.events}


def sampling_error(spec: DatasetSpec, metric: str, value: float, labels: pd.Series, predicted: pd.DataFrame) -> float:
    """The standard error of `metric` on a sample of this size: binomial for accuracy, Hanley & McNeil (1982) for AUC,
    the spread of the absolute errors for MAE."""
    n = len(labels)
    if metric == "roc_auc":
        positives = int((labels == spec.positive_class).sum())
        negatives = n - positives
        q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
        variance = (value * (1 - value) + (positives - 1) * (q1 - value**2) + (negatives - 1) * (q2 - value**2)) / (positives * negatives)
        return math.sqrt(max(variance, 0.0))
    if metric == "accuracy":
        return math.sqrt(value * (1 - value) / n)
    errors = np.abs(labels.astype("float64").to_numpy() - predicted[PREDICTION].astype("float64").to_numpy())
    return float(errors.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf


def realized_reading(spec: DatasetSpec, labels: pd.Series, predicted: pd.DataFrame, reference: dict[str, float],
                     scored_on: str = SERVED) -> RealizedReading | str:
    """The watched metric of `predicted` (what was served) against `labels`, beside `reference` (the champion's realized
    metrics on its hold-out); without a value, a sentence that says why."""
    metric = WATCHED_METRIC[spec.task.value]
    if metric not in reference:
        return f"the champion has no hold-out reference for {metric} (logged without a performance estimator: retrain to get one)"
    if len(labels) < 2:
        return f"{len(labels)} {scored_on} of the champion"
    value = score(spec, labels, predicted).get(metric, math.nan)
    if math.isnan(value):
        return f"{metric} is undefined on the champion's {len(labels)} {scored_on} (one class only)"
    spread = Z95 * sampling_error(spec, metric, value, labels.reset_index(drop=True), predicted.reset_index(drop=True))
    bounded = metric in ("roc_auc", "accuracy")
    lower, upper = value - spread, value + spread
    return RealizedReading(metric, value, max(lower, 0.0) if bounded else lower, min(upper, 1.0) if bounded else upper, reference[metric], len(labels))


def measure_reading(settings: Settings, spec: DatasetSpec, log: EventStore, served: ServedVersion, reference: dict[str, float],
                    unserved: Unserved | None = None) -> RealizedReading | str:
    """`realized_reading` of the `served` version on its latest `quality_drop_events` labelled served predictions (or,
    with `unserved`, the events `_scored` takes instead)."""
    labels, predicted, _, scored_on = _scored(settings, spec, log, served, settings.quality_drop_events, unserved)
    return realized_reading(spec, labels, predicted, reference, scored_on)


def measure(settings: Settings, spec: DatasetSpec, log: EventStore, served: ServedVersion, unserved: Unserved | None = None,
            holdout: Mapping[str, float] | None = None) -> LiveQuality:
    """Score the `served` version on its latest `live_quality_window` labelled served predictions (or, with `unserved`,
    the events `_scored` takes instead), against its floors less the defaults its `holdout` metrics never met."""
    labels, predicted, times, scored_on = _scored(settings, spec, log, served, settings.live_quality_window, unserved)
    limits, waived = waive_unmet_defaults(bounds(settings, spec), holdout or {})
    enough = len(labels) >= settings.live_quality_min_events
    metrics: dict[str, float] = {}
    if len(labels):
        metrics = {k: v for k, v in score(spec, labels, predicted).items() if not math.isnan(v)}
    breaches = [b.describe(metrics[b.metric]) for b in limits if b.metric in metrics and b.breached_by(metrics[b.metric])]
    return LiveQuality(
        model_version=served.version,
        events=len(labels),
        metrics=metrics,
        bounds=limits,
        breaches=breaches if enough else [],
        first_event_time=int(times.min()) if len(times) else None,
        last_event_time=int(times.max()) if len(times) else None,
        enough=enough,
        scored_on=scored_on,
        waived=waived,
    )
