"""Locating a concept change in the champion's per-event losses: found where the errors rose, never on a stationary stream."""

import numpy as np
import pandas as pd
import pytest

from mlplatform.domain.change_point import MIN_SEGMENT, event_losses, loss_shift
from mlplatform.domain.predictor import PREDICTION
from mlplatform.domain.spec import parse_spec


def _errors(rates: list[tuple[int, float]], seed: int = 0) -> np.ndarray:
    """0/1 losses: `n` events at error rate `rate` per segment, oldest first."""
    rng = np.random.default_rng(seed)
    return np.concatenate([(rng.random(n) < rate).astype("float64") for n, rate in rates])


@pytest.mark.parametrize("seed", range(5))
def test_a_rise_in_errors_is_located_near_where_it_started(seed: int) -> None:
    at = loss_shift(_errors([(1500, 0.15), (600, 0.45)], seed))
    assert at is not None and abs(at - 1500) <= 40, at


@pytest.mark.parametrize("seed", range(20))
def test_a_stationary_stream_has_no_change(seed: int) -> None:
    assert loss_shift(_errors([(3000, 0.15)], seed)) is None
    assert loss_shift(np.random.default_rng(seed).gamma(2.0, 10.0, 3000)) is None  # skewed regression errors too


def test_only_a_rise_counts_and_each_side_needs_enough_events() -> None:
    assert loss_shift(_errors([(1500, 0.45), (600, 0.15)])) is None  # the champion got better: nothing to relearn
    assert loss_shift(_errors([(1500, 0.0), (30, 1.0)])) == 1500 - MIN_SEGMENT + 30  # a rise in the newest events: a window of MIN_SEGMENT
    assert loss_shift(_errors([(1500, 0.0), (MIN_SEGMENT, 1.0)])) == 1500  # constant on each side: no spread, an obvious step
    assert loss_shift(np.zeros(2 * MIN_SEGMENT - 1)) is None and loss_shift(np.array([])) is None
    assert loss_shift(np.zeros(5000)) is None  # never wrong: no spread, no change


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_losses_are_refused(bad: float) -> None:
    losses = _errors([(1000, 0.2)])
    losses[10] = bad
    with pytest.raises(ValueError, match="losses must be finite numbers: 1 of 1000 are not"):
        loss_shift(losses)


def test_losses_are_errors_for_classes_and_distances_for_numbers() -> None:
    binary = parse_spec({"name": "b", "task": "binary", "label": "y", "positive_class": "yes", "classes": ["no", "yes"], "features": {"x": "numeric"}})
    labels = pd.Series(["yes", "no", "no"])
    assert event_losses(binary, labels, pd.DataFrame({PREDICTION: ["yes", "yes", "no"]})).tolist() == [0.0, 1.0, 0.0]
    regression = parse_spec({"name": "r", "task": "regression", "label": "y", "features": {"x": "numeric"}})
    assert event_losses(regression, pd.Series([1.0, 5.0]), pd.DataFrame({PREDICTION: [3.0, 5.0]})).tolist() == [2.0, 0.0]
