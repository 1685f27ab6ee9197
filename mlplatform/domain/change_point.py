"""Where the champion's errors jumped: the start of the events a challenger should learn a changed concept from.

After a concept change the rows before it teach the old concept; a training window that starts at the change learns
the new one from fewer rows. The window candidates (`window_choice`) are fixed sizes that rarely start there, so the
change is located on the rows the champion never trained on: the split of its per-event losses where the mean after
is the most significantly above the mean before. Only a shift well beyond what the best of many splits of a stationary
stream reaches is reported; the hold-out then decides whether the window since the change trains the better model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlplatform.domain.predictor import PREDICTION, PROBABILITY, Predictor

MIN_SEGMENT = 100  # events on each side of a split: fewer and one unlucky run of errors looks like a change
SHIFT_Z = 5.0  # the best split's z; on a stationary stream the best of thousands of splits stays well below it


def event_losses(model: Predictor, labels: pd.Series, predicted: pd.DataFrame) -> np.ndarray:
    """One loss per event of `model`'s predictions: for classes, the squared distance of the probability it gave the
    true class from 1 (binary: the Brier score), 1 for a class it does not know; for numbers, the absolute error. Not
    the 0/1 error: a model that never predicts a rare class errs on each of its events before a change and after it
    alike (the new-user probe: a 1:50 class), while the probabilities it gives them move."""
    if model.task == "regression":
        return np.abs(predicted[PREDICTION].astype("float64").to_numpy() - labels.astype("float64").to_numpy())
    codes = model.label_codes(labels)
    known = ~np.isnan(codes)
    if model.task == "binary":
        positive = predicted[PROBABILITY].to_numpy(dtype="float64")
        true_probability = np.where(codes == 1.0, positive, 1.0 - positive)
    else:
        matrix = predicted[[f"proba_{c}" for c in model.classes or []]].to_numpy(dtype="float64")
        true_probability = matrix[np.arange(len(codes)), np.where(known, codes, 0).astype(int)]
    return np.where(known, (1.0 - true_probability) ** 2, 1.0)


def loss_shift(losses: np.ndarray, min_segment: int = MIN_SEGMENT, threshold: float = SHIFT_Z) -> int | None:
    """The index of the first event after the most significant rise of the mean loss (oldest first), or None when no
    split with `min_segment` events on each side reaches `threshold`: the z of mean after minus mean before, with the
    whole sequence's spread (so a clean step has a spread too, and a shift only makes the test stricter)."""
    values = np.asarray(losses, dtype="float64")
    if not np.isfinite(values).all():
        raise ValueError(f"losses must be finite numbers: {int((~np.isfinite(values)).sum())} of {len(values)} are not")
    n = len(values)
    if n < 2 * min_segment:
        return None
    spread = float(values.std())  # the whole sequence's: under no change, every split's two sides share it
    if spread == 0.0:
        return None
    split = np.arange(min_segment, n - min_segment + 1)  # events before the split
    before_sum = np.cumsum(values)[split - 1]
    before_mean, after_mean = before_sum / split, (values.sum() - before_sum) / (n - split)
    z = (after_mean - before_mean) / (spread * np.sqrt(1.0 / split + 1.0 / (n - split)))
    best = int(np.argmax(z))
    return int(split[best]) if z[best] >= threshold else None
