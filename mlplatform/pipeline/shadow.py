"""Shadow comparison: challenger and champion on the same live labelled events, both scored at serving time.

Serving (with `serve_shadow_challenger`) logs `@challenger`'s prediction of every event the champion answered;
once labels come back, those events are a second, live test beside the hold-out: the same events, the champion's
served answer against the challenger's shadow one. `promotion_requires_shadow_win` makes a hold-out winner wait
for this evidence (at least `shadow_min_events`) and win here too before it is promoted; the wait is bounded by
`shadow_max_wait_seconds` (no serving process scoring shadows, or too little traffic): then the hold-out alone decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mlplatform.domain.evaluation import Decision, decide, live_metric, score
from mlplatform.domain.predictor import PREDICTION, PROBABILITY
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import LABEL
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventStore

SHADOW_WINDOW_MAX = 50_000  # latest shared labelled events read for one comparison: bounded memory on any log


@dataclass(frozen=True)
class ShadowComparison:
    challenger_version: int
    champion_version: int
    events: int  # labelled events both scored (all of them, not only the window read)
    needed: int
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    decision: Decision | None  # None while the evidence is short, or says nothing (`undefined`)
    undefined: str | None = None  # the live metric, when it cannot be computed on the events (one class only)

    @property
    def enough(self) -> bool:
        return self.decision is not None

    def summary(self) -> str:
        if self.undefined is not None:
            return f"{self.undefined} is undefined on the {self.events} live labelled events scored by both (one class only, say)"
        if self.decision is None:
            return f"{self.events} of {self.needed} live labelled events scored by both so far"
        return f"on {self.events} live labelled events: {self.decision.reason}"


def _metrics(spec: DatasetSpec, labels: pd.Series, predictions: pd.Series, probabilities: pd.Series) -> dict[str, float]:
    if labels.empty:
        return {}
    predicted = pd.DataFrame({PREDICTION: predictions if spec.is_classification else predictions.astype("float64"), PROBABILITY: probabilities})
    return {k: v for k, v in score(spec, labels, predicted).items() if not math.isnan(v)}


def compare_on_live(settings: Settings, spec: DatasetSpec, events: EventStore, challenger_version: int, champion_version: int) -> ShadowComparison:
    """Score both versions on the latest labelled events the champion served and the challenger scored in shadow, and
    decide by the promotion margin (no floor: the hold-out applies it) once there are `shadow_min_events` of them."""
    total = events.shadow_labelled(challenger_version, champion_version)
    window = events.shadow_window(SHADOW_WINDOW_MAX, challenger_version, champion_version)
    challenger = _metrics(spec, window[LABEL], window["shadow_prediction"], window["shadow_probability"])
    champion = _metrics(spec, window[LABEL], window[PREDICTION], window[PROBABILITY])
    metric, higher = live_metric(spec)
    decision, undefined = None, None
    if total >= settings.shadow_min_events:
        if metric in challenger and metric in champion:
            decision = decide(spec, challenger, champion, settings.promotion_margin, -math.inf if higher else math.inf, on=(metric, higher))
        else:  # before, a NaN for both read as the challenger's loss ('misses the quality floor (≥ -inf)'): the review
            undefined = metric
    return ShadowComparison(challenger_version, champion_version, total, settings.shadow_min_events, challenger, champion, decision, undefined)


def shadow_wait_left(settings: Settings, registered_ms: int, now: float) -> float:
    """Seconds a challenger registered at `registered_ms` (MLflow's epoch milliseconds) may still wait for its shadow
    evidence at `now`; at most 0 once shadow_max_wait_seconds have passed, when the hold-out decides alone."""
    return registered_ms / 1000 + settings.shadow_max_wait_seconds - now
