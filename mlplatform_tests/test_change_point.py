"""Locating a concept change in the champion's per-event losses: found where the errors rose, never on a stationary stream."""

import numpy as np
import pandas as pd
import pytest

from mlplatform.domain.change_point import MIN_SEGMENT, event_losses, loss_shift
from mlplatform.domain.predictor import PREDICTION, PROBABILITY, Predictor


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


def _model(task: str, classes: list[str] | None = None, positive: str | None = None) -> Predictor:
    """What event_losses reads of a model: its task and classes (its booster scored `predicted` already)."""
    return Predictor(booster=None, transformer=None, task=task, classes=classes, positive_class=positive)  # type: ignore[arg-type]


def test_losses_are_the_true_class_probabilitys_distance_from_1_and_distances_for_numbers() -> None:
    binary = _model("binary", ["no", "yes"], "yes")
    predicted = pd.DataFrame({PREDICTION: ["yes", "yes", "no", "no"], PROBABILITY: [0.8, 0.8, 0.1, 0.5]})
    assert np.allclose(event_losses(binary, pd.Series(["yes", "no", "no", "maybe"]), predicted), [0.04, 0.64, 0.01, 1.0]), "a class it does not know: 1"
    multiclass = _model("multiclass", ["a", "b", "c"])
    proba = pd.DataFrame({PREDICTION: ["a", "c"], PROBABILITY: [0.5, 0.6], "proba_a": [0.5, 0.1], "proba_b": [0.3, 0.3], "proba_c": [0.2, 0.6]})
    assert np.allclose(event_losses(multiclass, pd.Series(["b", "c"]), proba), [0.49, 0.16])
    regression = _model("regression")
    assert event_losses(regression, pd.Series([1.0, 5.0]), pd.DataFrame({PREDICTION: [3.0, 5.0]})).tolist() == [2.0, 0.0]


@pytest.mark.parametrize("seed", range(3))
def test_a_change_on_a_rare_class_the_model_never_predicts_is_located(seed: int) -> None:
    """The new-user probe: a 1:50 class the champion never predicts (every probability under 0.5). Its 0/1 errors are its
    positives, 2 % before the change and after it, so no change showed; the probabilities it gives them moved."""
    rng = np.random.default_rng(seed)
    before, after = 3000, 2000
    labels = np.where(rng.random(before + after) < 0.02, "yes", "no")
    positive = labels == "yes"
    changed = np.arange(before + after) >= before
    probability = np.where(positive != changed, rng.uniform(0.2, 0.45, before + after), rng.uniform(0.0, 0.05, before + after))
    probability = np.where(changed & ~positive, rng.uniform(0.1, 0.45, before + after), probability)
    predicted = pd.DataFrame({PREDICTION: "no", PROBABILITY: probability})
    zero_one = (predicted[PREDICTION].to_numpy() != labels).astype("float64")
    assert loss_shift(zero_one) is None
    at = loss_shift(event_losses(_model("binary", ["no", "yes"], "yes"), pd.Series(labels), predicted))
    assert at is not None and abs(at - before) <= 40, at
