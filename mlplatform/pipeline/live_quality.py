"""Live quality: how the champion does on the predictions it actually served, once their labels arrived.

A sliding window of the latest labelled served predictions of one model version, scored with the same
`evaluation.score` as the hold-out, and compared with floors (precision and recall for classification,
an RMSE ceiling for regression). The hold-out says how good a model was on the past; this says how good
it is now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mlplatform.domain.evaluation import score
from mlplatform.stores.eventlog import EventStore
from mlplatform.domain.predictor import PREDICTION, PROBABILITY
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_TIME, LABEL


@dataclass(frozen=True)
class Bound:
    """A floor (`minimum`) or a ceiling on one metric."""

    metric: str
    value: float
    minimum: bool

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

    @property
    def below_floor(self) -> bool:
        return self.enough and bool(self.breaches)


def bounds(settings: Settings, spec: DatasetSpec) -> list[Bound]:
    """The configured floors that apply to this task."""
    if not spec.is_classification:
        return [] if settings.live_max_rmse is None else [Bound("rmse", settings.live_max_rmse, minimum=False)]
    configured = (("precision", settings.live_min_precision), ("recall", settings.live_min_recall))
    return [Bound(metric, value, minimum=True) for metric, value in configured if value is not None]


def measure(settings: Settings, spec: DatasetSpec, log: EventStore, model_version: int) -> LiveQuality:
    """Score `model_version` on its latest `live_quality_window` labelled served predictions."""
    window = log.served_window(settings.live_quality_window, model_version)
    limits = bounds(settings, spec)
    enough = len(window) >= settings.live_quality_min_events
    metrics: dict[str, float] = {}
    if len(window):
        predicted = pd.DataFrame({PREDICTION: window[PREDICTION], PROBABILITY: window[PROBABILITY]})
        if not spec.is_classification:
            predicted[PREDICTION] = predicted[PREDICTION].astype("float64")
        metrics = {k: v for k, v in score(spec, window[LABEL], predicted).items() if not math.isnan(v)}
    breaches = [b.describe(metrics[b.metric]) for b in limits if b.metric in metrics and b.breached_by(metrics[b.metric])]
    times = window[EVENT_TIME]
    return LiveQuality(
        model_version=model_version,
        events=len(window),
        metrics=metrics,
        bounds=limits,
        breaches=breaches if enough else [],
        first_event_time=int(times.iloc[0]) if len(times) else None,
        last_event_time=int(times.iloc[-1]) if len(times) else None,
        enough=enough,
    )
