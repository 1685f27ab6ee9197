"""The challenger's training window chosen by evidence: one model per candidate window, the best on the hold-out kept.

After a drift the newest events describe the stream better than the whole window; on a stationary stream more data
wins. Which one holds now is measured on the hold-out the promotion rule already uses (the newest events, never trained
on), so no later label is looked at.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
import numpy as np
import pandas as pd

from mlplatform.domain.evaluation import outranks, primary_metric, score
from mlplatform.domain.features import FeatureTransformer
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.training import FitMaker, TrainingConfig, TrainingResult, train, tuned_params
from mlplatform.domain.validation import LABEL

# Recency weights of a training part of n rows (oldest first), or None for equal weights.
Weights = Callable[[int], "np.ndarray | None"]


@dataclass(frozen=True)
class Candidate:
    """One candidate window: its size (events, hold-out included, as training_window counts them), the training rows it
    gave, and its hold-out score (None where the metric is undefined on the hold-out), or why it was not fitted."""

    window: int
    train_rows: int
    holdout_score: float | None
    skipped: str | None = None


@dataclass(frozen=True)
class WindowChoice:
    result: TrainingResult
    window: int
    metric: str
    candidates: tuple[Candidate, ...]

    def metrics(self) -> dict[str, float]:
        """Each fitted candidate's hold-out score, as MLflow metrics: `window_<size>_holdout_<metric>`."""
        return {f"window_{c.window}_holdout_{self.metric}": c.holdout_score for c in self.candidates if c.holdout_score is not None}


def train_best_window(
    train_part: pd.DataFrame,
    holdout: pd.DataFrame,
    spec: DatasetSpec,
    config: TrainingConfig,
    candidates: tuple[int, ...],
    transformer: FeatureTransformer | None = None,
    weights: Weights | None = None,
    fit_maker: FitMaker | None = None,
) -> WindowChoice:
    """Fit one model per candidate window (the newest `size - len(holdout)` rows of `train_part`) and keep the best on
    `holdout` (`outranks`: of two binary models tied on ROC AUC, the one whose probabilities fit); a tie keeps the larger window.

    Tuning runs on the largest window only (its full trial budget); every smaller one is a single fit with the tuned
    parameters, so k candidates cost trials + k - 1 fits. A candidate with fewer than `config.min_rows` training rows, or
    with the same rows as a larger one, is recorded as skipped.
    """
    train_part = train_part[train_part[LABEL].notna()].reset_index(drop=True)
    metric, higher = primary_metric(spec)
    fitted: list[tuple[Candidate, TrainingResult]] = []
    scores: dict[int, dict[str, float]] = {}  # each fitted window's hold-out metrics, which `outranks` compares
    skipped: list[Candidate] = []
    used: dict[int, int] = {}
    for size in sorted(candidates, reverse=True):
        rows = min(len(train_part), max(0, size - len(holdout)))
        if fitted and rows in used:
            skipped.append(Candidate(size, rows, None, f"the same {rows} rows as window {used[rows]}"))
            continue
        if fitted and rows < config.min_rows:
            skipped.append(Candidate(size, rows, None, f"{rows} training rows, fewer than {config.min_rows}"))
            continue
        part = train_part.iloc[len(train_part) - rows :].reset_index(drop=True)
        tuned = fitted[0][1] if fitted else None
        result = train(part, spec, config if tuned is None else replace(config, trials=1), transformer=transformer,
                       weights=None if weights is None else weights(len(part)), fit_maker=fit_maker, first_params=None if tuned is None else tuned_params(tuned))
        scores[size] = score(spec, holdout[LABEL], result.predictor.predict(holdout))
        value = scores[size].get(metric, math.nan)
        used[rows] = size
        fitted.append((Candidate(size, rows, None if math.isnan(value) else value), result))
    best = fitted[0]  # a metric undefined on the hold-out (one class only) is undefined for all: the largest window stays
    for candidate, result in fitted[1:]:
        if outranks(metric, higher, scores[candidate.window], scores[best[0].window]):
            best = (candidate, result)
    ordered = tuple(sorted([c for c, _ in fitted] + skipped, key=lambda c: -c.window))
    return WindowChoice(best[1], best[0].window, metric, ordered)
