"""How sure a champion/challenger comparison is: the 95 % interval of the challenger's gain on the judged hold-out rows,
by resampling those rows with replacement and scoring both models on each resample (paired: the same rows for both).

A fixed margin carries no uncertainty: on the estimation probe's 250-row hold-out a challenger was promoted on +0.0033
ROC AUC while worse on accuracy, F1 and log loss, a gain well within the noise of 250 rows. The interval is said with
every decision against a champion, and `promotion_requires_significance` promotes only when it lies above 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlplatform.domain.estimation import auc_of
from mlplatform.domain.evaluation import gain
from mlplatform.domain.predictor import PREDICTION, PROBABILITY
from mlplatform.domain.spec import DatasetSpec, Task

RESAMPLES = 200
EPSILON = 1e-15  # probabilities clipped as evaluation.score's log loss clips them


def _scorer(spec: DatasetSpec, metric: str, y_true: pd.Series, predicted: pd.DataFrame) -> Callable[[np.ndarray], float] | None:
    """`metric` of `predicted` with each row counted as often as a resample draws it (`w`), as evaluation.score computes
    it; None for a metric this cannot resample."""
    if metric == "rmse":
        squared = (y_true.astype("float64").to_numpy() - predicted[PREDICTION].astype("float64").to_numpy()) ** 2
        return lambda w: float(np.sqrt((w * squared).sum() / w.sum()))
    if spec.task is Task.binary and metric in ("roc_auc", "log_loss"):
        positive = (y_true.astype(str) == spec.positive_class).to_numpy(dtype="float64")
        p = predicted[PROBABILITY].astype("float64").to_numpy()
        if metric == "roc_auc":  # the scores sorted once, each resample an O(n) count: sorting each of 400 took 4.9 s at 200k rows (the review)
            auc = auc_of(p)
            return lambda w: auc(w * positive, w * (1 - positive))
        clipped = np.clip(p, EPSILON, 1 - EPSILON)
        loss = -(positive * np.log(clipped) + (1 - positive) * np.log(1 - clipped))
        return lambda w: float((w * loss).sum() / w.sum())
    if spec.task is Task.multiclass and metric == "log_loss":
        # A class the model has no column for scores 0, as evaluation.score reads it (a class the spec gained after training):
        # without it no interval was drawn, and promotion_requires_significance promoted unchecked (the review).
        columns = [predicted[f"proba_{c}"].astype("float64").to_numpy() if f"proba_{c}" in predicted else np.zeros(len(predicted)) for c in spec.classes or []]
        matrix = np.column_stack(columns) if columns else np.zeros((len(predicted), 0))
        index = {c: i for i, c in enumerate(spec.classes or [])}
        truth = y_true.astype(str).map(index)
        known = truth.notna().to_numpy()
        loss = np.zeros(len(truth))
        loss[known] = -np.log(np.clip(matrix[np.flatnonzero(known), truth[known].astype("int64").to_numpy()], EPSILON, 1.0))
        return lambda w: float((w * loss * known).sum() / max((w * known).sum(), 1))
    return None


def improvement_interval(spec: DatasetSpec, metric: str, higher_is_better: bool, y_true: pd.Series, challenger: pd.DataFrame,
                         champion: pd.DataFrame, seed: int = 7) -> tuple[float, float] | None:
    """The 2.5th and 97.5th percentiles of the challenger's gain over the champion across RESAMPLES paired resamples of
    the judged rows, in the decision's terms (`Decision.improvement`: a difference of the metric, or of an RMSE the share
    of the champion's); None where the metric cannot be resampled or is undefined on most resamples (one class only).
    One resample at a time, as counts per row: memory of the order of the rows, whatever their number."""
    y_true, challenger, champion = y_true.reset_index(drop=True), challenger.reset_index(drop=True), champion.reset_index(drop=True)
    ours, theirs = _scorer(spec, metric, y_true, challenger), _scorer(spec, metric, y_true, champion)
    n = len(y_true)
    if ours is None or theirs is None or n < 2:
        return None
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(RESAMPLES):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype("float64")
        gains.append(gain(metric, higher_is_better, ours(w), theirs(w)))
    finite = np.asarray(gains)[np.isfinite(gains)]
    if len(finite) < RESAMPLES / 2:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def interval_said(metric: str, interval: tuple[float, float], rows: int) -> str:
    """The interval as a decision's reason says it, and whether a gain is within noise."""
    low, high = interval
    shown = (lambda v: f"{v:+.2%}") if metric == "rmse" else (lambda v: f"{v:+.4f}")
    standing = "within noise" if low <= 0 <= high else "above noise" if low > 0 else "below noise"
    return f"the gain's 95 % interval over {RESAMPLES} resamples of these {rows} rows: {shown(low)} to {shown(high)}, {standing}"
