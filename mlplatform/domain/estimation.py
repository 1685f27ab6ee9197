"""Performance without labels: estimate a model's metrics on events whose labels have not come back.

Fitted with each challenger on its hold-out and shipped inside the logged model, like the feature transformer.

- Classification, CBPE (confidence-based performance estimation): the booster's probabilities are calibrated
  on the hold-out (isotonic, one-vs-rest); a calibrated probability is the chance that the event belongs to the
  class, so summing them gives the expected confusion matrix of a chunk, and from it accuracy, precision,
  recall, F1 and (weighting every event as a fractional positive and negative) ROC AUC.
- Regression, DLE (direct loss estimation): two small LightGBM models learn the absolute and the squared error
  from the features and the prediction; their means over a chunk are the expected MAE and MSE.

The band is the sampling error of a chunk of that size: labels drawn from the calibrated probabilities
(classification) or the spread of the estimated losses (regression). Both methods assume P(y|x) is what it
was on the hold-out: a concept change (same inputs, different labels) is invisible to them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from mlplatform.domain.threshold import DEFAULT_THRESHOLD

if TYPE_CHECKING:  # LightGBM and scikit-learn load when an estimator is fitted or read, not with the code location
    import lightgbm as lgb

CBPE = "cbpe"
DLE = "dle"
HIGHER_IS_BETTER = {"accuracy": True, "precision": True, "recall": True, "f1": True, "roc_auc": True, "mae": False, "rmse": False}
# The estimated metric the retraining trigger watches: AUC for binary; multiclass log loss needs per-class labels, so accuracy.
WATCHED_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "mae"}
Z95 = 1.959964
DRAWS = 200  # simulated label sets per chunk for the classification band: ±0.001 on a 1.96-sigma band
SPREAD_ROWS = 20_000  # larger chunks: the spread is measured on this many events and scaled by √(m/n), bounding memory
RESAMPLES = 20  # hold-out bootstrap resamples whose calibrations measure the calibration's own error in the band


class EstimationError(ValueError):
    """The hold-out cannot give an estimator (too few rows, labels that do not match the scores)."""


@dataclass(frozen=True)
class Estimate:
    """Estimated metrics of one chunk with their 95 % band; empty with `note` saying why when there is no estimate."""

    events: int
    metrics: dict[str, float] = field(default_factory=dict)
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def inside(self, metric: str, value: float) -> bool:
        """Whether `value` lies inside this estimate's band for `metric`."""
        return self.lower[metric] <= value <= self.upper[metric]


def too_few(events: int, min_events: int) -> Estimate | None:
    """The refusal for a chunk smaller than `min_events`, or None when it is large enough."""
    if events >= min_events:
        return None
    return Estimate(events, note=f"only {events} events in the chunk; at least {min_events} are needed for an estimate")


class Estimator(Protocol):
    method: str
    task: str
    reference: dict[str, float]
    holdout_rows: int

    def estimate(self, features: pd.DataFrame, scores: np.ndarray, min_events: int) -> Estimate: ...

    def realized(self, scores: np.ndarray, y: np.ndarray) -> dict[str, float]: ...

    def to_dict(self) -> dict[str, Any]: ...


# ---- classification (CBPE) ----------------------------------------------------------------------------------


def score_matrix(task: str, scores: np.ndarray, n_classes: int) -> np.ndarray:
    """The booster's output as one probability column per class: binary is [negative, positive]."""
    scores = np.asarray(scores, dtype="float64")
    if task == "binary":
        return np.column_stack([1.0 - scores, scores])
    return scores.reshape(-1, n_classes)


def _predicted(task: str, matrix: np.ndarray, threshold: float) -> np.ndarray:
    """The predicted class index, read exactly as Predictor.read_scores reads it (binary: at the model's threshold)."""
    return (matrix[:, 1] >= threshold).astype("int64") if task == "binary" else matrix.argmax(axis=1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (sklearn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype="float64"), where=den > 0)


def confusion_metrics(confusion: np.ndarray, positive: int | None) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall and F1 of confusion matrices [..., true, predicted]: of the positive class for
    binary, otherwise macro-averaged over the classes that occur (predicted, or labelled at least once: an expected
    count of half an event or more), as evaluation.score averages over those labelled or predicted. Over every class,
    one absent from a chunk counted as 0: a model right on every event of a chunk without the rare class estimated and
    realized 0.62 precision, where the hold-out and live quality said 0.93."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    predicted, actual = confusion.sum(axis=-2), confusion.sum(axis=-1)
    per_class = {"precision": _ratio(tp, predicted), "recall": _ratio(tp, actual), "f1": _ratio(2 * tp, predicted + actual)}
    out = {"accuracy": _ratio(tp.sum(axis=-1), confusion.sum(axis=(-2, -1)))}
    occurring = (predicted > 0) | (actual >= 0.5)
    if positive is not None:  # undefined where evaluation.score leaves them out: no positive predicted, none labelled (an
        # expected count under half an event, as `occurring` reads one), neither
        none_labelled = actual[..., positive] < 0.5
        undefined = {"precision": predicted[..., positive] == 0, "recall": none_labelled, "f1": (predicted[..., positive] == 0) & none_labelled}
        return {**out, **{name: np.where(undefined[name], np.nan, values[..., positive]) for name, values in per_class.items()}}
    for name, values in per_class.items():
        out[name] = _ratio((values * occurring).sum(axis=-1), occurring.sum(axis=-1).astype("float64"))
    return out


def auc_of(score: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    """ROC AUC of `score` for per-event positive and negative weights (ties count half), the scores sorted once: the
    paired bootstrap scores 400 weightings of the same scores. NaN when one side is empty."""
    groups, inverse = np.unique(score, return_inverse=True)

    def auc(positive_weight: np.ndarray, negative_weight: np.ndarray) -> float:
        pos = np.bincount(inverse, weights=positive_weight, minlength=len(groups))
        neg = np.bincount(inverse, weights=negative_weight, minlength=len(groups))
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos <= 1e-12 or total_neg <= 1e-12:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))

    return auc


def weighted_auc(score: np.ndarray, positive_weight: np.ndarray) -> float:
    """ROC AUC with every event counted as `w` positive and `1 - w` negative (ties count half).

    With 0/1 weights this is the ordinary AUC; with calibrated probabilities, the expected one. NaN when one side is empty.
    """
    return auc_of(score)(positive_weight, 1.0 - positive_weight)


def _rank_auc(ranks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of many 0/1 label sets (rows of `labels`) against one score, from the score's average ranks."""
    n = labels.shape[-1]
    n_pos = labels.sum(axis=-1).astype("float64")
    rank_sum = labels.astype("float64") @ ranks
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))
    return np.where((n_pos > 0) & (n_pos < n), auc, np.nan)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (scipy's rankdata 'average')."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


@dataclass(frozen=True)
class Calibration:
    """An isotonic map from raw to calibrated probability, kept as its interpolation points (JSON, no pickle)."""

    x: list[float]
    y: list[float]

    @classmethod
    def fit(cls, raw: np.ndarray, hit: np.ndarray) -> "Calibration":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, hit)
        return cls([float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)


@dataclass
class ClassificationEstimator:
    """CBPE: calibrated probabilities → expected confusion matrix and AUC. Its band holds two errors: of the labels, drawn
    from the calibrated probabilities, and of the calibration itself, the spread of the estimates under calibrations fitted
    on bootstrap resamples of the hold-out. With the first alone, an estimator fitted on a small hold-out (80 rows) read
    0.84 AUC on a stream realized at 0.69, its band 0.83-0.86, and estimate_trust called the unchanged stream a concept
    change (the estimation probe)."""

    task: str
    classes: list[str]
    calibrations: dict[int, Calibration]  # class index → calibration; classes absent from the hold-out keep raw scores
    reference: dict[str, float]
    holdout_rows: int
    uncalibrated: list[str] = field(default_factory=list)
    seed: int = 7
    resampled: list[dict[int, Calibration]] = field(default_factory=list)  # fitted on RESAMPLES resamples (none: older estimators)
    method: str = CBPE
    threshold: float = DEFAULT_THRESHOLD  # binary: the model's decision threshold, which the expected confusion matrix reads

    @property
    def positive(self) -> int | None:
        return 1 if self.task == "binary" else None

    def calibrated(self, matrix: np.ndarray, calibrations: dict[int, Calibration] | None = None) -> np.ndarray:
        """Calibrated class probabilities, rows summing to one (`calibrations`: a resample's, else the hold-out's)."""
        calibrations = self.calibrations if calibrations is None else calibrations
        if self.task == "binary":
            cal = calibrations.get(1)
            p = matrix[:, 1] if cal is None else cal.apply(matrix[:, 1])
            return np.column_stack([1.0 - p, p])
        out = matrix.copy()
        for k, cal in calibrations.items():
            out[:, k] = cal.apply(matrix[:, k])
        totals = out.sum(axis=1, keepdims=True)
        return np.where(totals > 0, out / np.where(totals > 0, totals, 1.0), matrix)

    def _auc_columns(self, weights: np.ndarray) -> list[int]:
        """The classes an AUC is averaged over: the positive one (binary), those that occur (multiclass)."""
        return [1] if self.task == "binary" else [k for k in range(len(self.classes)) if weights[:, k].sum() >= 0.5]

    def _auc(self, matrix: np.ndarray, weights: np.ndarray) -> float:
        """Binary: of the positive class. Multiclass: one-vs-rest, averaged over the classes that occur (labelled, or
        expected, at least half an event), as `confusion_metrics` and the realized AUC: a class expected 0.09 times in
        a chunk (AUC 0.88 of its own near-zero scores) counted as much as each of the others, which realized left out."""
        values = [weighted_auc(matrix[:, k], weights[:, k]) for k in self._auc_columns(weights)]
        defined = [v for v in values if not math.isnan(v)]
        return float(np.mean(defined)) if defined else float("nan")

    def estimate(self, features: pd.DataFrame, scores: np.ndarray, min_events: int) -> Estimate:
        matrix = score_matrix(self.task, scores, len(self.classes))
        refused = too_few(len(matrix), min_events)
        if refused is not None:
            return refused
        predicted = _predicted(self.task, matrix, self.threshold)
        proba = self.calibrated(matrix)
        point = self._point(matrix, proba, predicted)
        spread = self._sampling_spread(matrix, proba, predicted)
        if self.resampled:  # on at most SPREAD_ROWS of the chunk's events: the calibration's error does not shrink with more
            rows = np.random.default_rng(self.seed).choice(len(matrix), SPREAD_ROWS, replace=False) if len(matrix) > SPREAD_ROWS else slice(None)
            sample, sample_predicted = matrix[rows], predicted[rows]
            with warnings.catch_warnings():  # a metric undefined under every resample keeps the sampling spread alone
                warnings.simplefilter("ignore", RuntimeWarning)
                points = [self._point(sample, self.calibrated(sample, cals), sample_predicted) for cals in self.resampled]
                calibration = {name: float(np.nanstd([p.get(name, math.nan) for p in points])) for name in point}
            spread = {name: math.hypot(sd, 0.0 if math.isnan(calibration.get(name, math.nan)) else calibration[name]) for name, sd in spread.items()}
        return _banded(len(matrix), point, spread, bounds=(0.0, 1.0))

    def _point(self, matrix: np.ndarray, proba: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        """The metrics expected from calibrated probabilities `proba`: their expected confusion matrix, and AUC."""
        k = len(self.classes)
        expected = np.zeros((k, k))
        for j in range(k):
            expected[:, j] = proba[predicted == j].sum(axis=0)
        point = {name: float(v) for name, v in confusion_metrics(expected, self.positive).items()}
        point["roc_auc"] = self._auc(matrix, proba)
        return point

    def _sampling_spread(self, matrix: np.ndarray, proba: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        """Standard deviation of each metric over label sets drawn from the calibrated probabilities."""
        rng = np.random.default_rng(self.seed)
        if len(proba) > SPREAD_ROWS:  # a metric's sampling spread shrinks as 1/√n: measure it on a sample, then scale
            rows = rng.choice(len(proba), SPREAD_ROWS, replace=False)
            scale = math.sqrt(SPREAD_ROWS / len(proba))
            return {name: sd * scale for name, sd in self._sampling_spread(matrix[rows], proba[rows], predicted[rows]).items()}
        n, k = proba.shape
        cumulative = np.cumsum(proba, axis=1)
        draws = (rng.random((DRAWS, n, 1)) > cumulative[None, :, :-1]).sum(axis=2)  # class index per event and draw
        cells = (np.arange(DRAWS)[:, None] * k * k + draws * k + predicted[None, :]).ravel()
        confusion = np.bincount(cells, minlength=DRAWS * k * k).reshape(DRAWS, k, k).astype("float64")
        values = confusion_metrics(confusion, self.positive)
        aucs = np.column_stack([_rank_auc(_average_ranks(matrix[:, c]), draws == c) for c in self._auc_columns(proba)])
        with warnings.catch_warnings():  # a draw where every class's AUC is undefined is simply left out
            warnings.simplefilter("ignore", RuntimeWarning)
            values["roc_auc"] = np.nanmean(aucs, axis=1)
        return {name: float(np.nanstd(v)) if np.isfinite(v).any() else 0.0 for name, v in values.items()}

    def realized(self, scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The same metrics from real labels (class indices), computed the same way as the estimate."""
        matrix = score_matrix(self.task, scores, len(self.classes))
        k = len(self.classes)
        y = np.asarray(y, dtype="int64")
        confusion = np.bincount(y * k + _predicted(self.task, matrix, self.threshold), minlength=k * k).reshape(k, k).astype("float64")
        out = {name: float(v) for name, v in confusion_metrics(confusion, self.positive).items()}
        out["roc_auc"] = self._auc(matrix, np.eye(k)[y])
        return {name: v for name, v in out.items() if not math.isnan(v)}

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "task": self.task, "classes": self.classes, "reference": self.reference,
                "holdout_rows": self.holdout_rows, "uncalibrated": self.uncalibrated, "seed": self.seed,
                "calibrations": _calibrations_dict(self.calibrations), "resampled": [_calibrations_dict(c) for c in self.resampled],
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassificationEstimator":
        return cls(data["task"], list(data["classes"]), _calibrations_of(data["calibrations"]), dict(data["reference"]), int(data["holdout_rows"]),
                   list(data["uncalibrated"]), int(data["seed"]), [_calibrations_of(c) for c in data.get("resampled", [])],
                   threshold=float(data.get("threshold", DEFAULT_THRESHOLD)))


def _calibrations_dict(calibrations: dict[int, Calibration]) -> dict[str, dict[str, list[float]]]:
    return {str(k): {"x": c.x, "y": c.y} for k, c in calibrations.items()}


def _calibrations_of(data: dict[str, dict[str, list[float]]]) -> dict[int, Calibration]:
    return {int(k): Calibration(v["x"], v["y"]) for k, v in data.items()}


def _calibration(raw: np.ndarray, hit: np.ndarray) -> Calibration | None:
    """The isotonic calibration of one class's raw scores, None where the rows hold that class alone or none of it."""
    return Calibration.fit(raw, hit.astype("float64")) if 0 < hit.sum() < len(hit) else None


def fit_classification(task: str, classes: list[str], scores: np.ndarray, y: np.ndarray, seed: int,
                       threshold: float = DEFAULT_THRESHOLD) -> ClassificationEstimator:
    """Calibrate one-vs-rest on the hold-out; a class the hold-out lacks keeps its raw probability (and is named)."""
    matrix = score_matrix(task, scores, len(classes))
    y = np.asarray(y, dtype="int64")
    columns = [1] if task == "binary" else list(range(len(classes)))
    calibrations: dict[int, Calibration] = {}
    uncalibrated = []
    for k in columns:
        calibration = _calibration(matrix[:, k], y == k)
        if calibration is not None:
            calibrations[k] = calibration
        else:
            uncalibrated.append(classes[k] if task == "multiclass" else "all")
    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(RESAMPLES if calibrations else 0):  # a class a resample lacks (or holds alone) keeps the hold-out's calibration
        rows = rng.integers(0, len(y), len(y))
        resampled.append({k: _calibration(matrix[rows, k], y[rows] == k) or cal for k, cal in calibrations.items()})
    estimator = ClassificationEstimator(task, list(classes), calibrations, {}, len(y), uncalibrated, seed, resampled, threshold=threshold)
    estimator.reference = estimator.realized(scores, y)
    return estimator


# ---- regression (DLE) ---------------------------------------------------------------------------------------

LOSS_PARAMS: dict[str, Any] = {"objective": "regression", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 20,
                               "feature_fraction": 0.9, "lambda_l2": 1.0, "verbosity": -1, "deterministic": True, "num_threads": 1}
LOSS_ROUNDS = 300


def _loss_inputs(features: pd.DataFrame, prediction: np.ndarray) -> pd.DataFrame:
    return features.assign(__prediction=np.asarray(prediction, dtype="float64"))


def _fit_loss_model(inputs: pd.DataFrame, target: np.ndarray, seed: int) -> lgb.Booster:
    """A small LightGBM on the hold-out, stopped early on its latest quarter."""
    import lightgbm as lgb

    cut = max(1, int(len(inputs) * 0.75))
    train_set = lgb.Dataset(inputs.iloc[:cut], target[:cut], free_raw_data=False)
    valid_set = lgb.Dataset(inputs.iloc[cut:], target[cut:], reference=train_set, free_raw_data=False)
    return lgb.train({**LOSS_PARAMS, "seed": seed}, train_set, num_boost_round=LOSS_ROUNDS, valid_sets=[valid_set],
                     callbacks=[lgb.early_stopping(30, verbose=False)])


@dataclass
class RegressionEstimator:
    """DLE: predicted absolute and squared errors; MAE band from their spread, RMSE band from the hold-out's kurtosis. The
    band also holds the error of the level the loss models learnt from the hold-out's rows (its mean's relative standard
    error): with the chunk's sampling error alone, a 106-row hold-out's estimator called every stationary chunk a concept
    change (the third new-user probe: realized MAE 0.43 against a band of 0.27-0.34)."""

    abs_model: lgb.Booster
    sq_model: lgb.Booster
    kurtosis: float  # E[e⁴] / E[e²]² on the hold-out: how wide the squared errors spread
    reference: dict[str, float]
    holdout_rows: int
    task: str = "regression"
    method: str = DLE
    abs_spread: float = 0.0  # the hold-out's std(|e|) / mean(|e|): its MAE's relative spread per row (0: an estimator fitted before it was kept)

    def estimate(self, features: pd.DataFrame, scores: np.ndarray, min_events: int) -> Estimate:
        n = len(features)
        refused = too_few(n, min_events)
        if refused is not None:
            return refused
        inputs = _loss_inputs(features, scores)
        abs_err = np.clip(self.abs_model.predict(inputs, num_threads=1), 0.0, None)
        sq_err = np.clip(self.sq_model.predict(inputs, num_threads=1), 0.0, None)
        mae, mse = float(abs_err.mean()), float(sq_err.mean())
        mse = max(mse, mae**2)  # E[e²] ≥ E[|e|]²: keeps the two estimates consistent
        rmse = math.sqrt(mse)
        mae_sd = math.sqrt(max(0.0, mse - mae**2))
        rmse_sd = math.sqrt(max(0.0, self.kurtosis - 1.0)) * mse / (2 * rmse) if rmse > 0 else 0.0
        learnt = 1 / math.sqrt(max(self.holdout_rows, 1))  # the hold-out mean's standard error, per unit of a row's spread
        spread = {"mae": math.hypot(mae_sd / math.sqrt(n), self.abs_spread * mae * learnt),
                  "rmse": math.hypot(rmse_sd / math.sqrt(n), math.sqrt(max(0.0, self.kurtosis - 1.0)) / 2 * rmse * learnt)}
        return _banded(n, {"mae": mae, "rmse": rmse}, spread, bounds=(0.0, math.inf))

    def realized(self, scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
        error = np.asarray(y, dtype="float64") - np.asarray(scores, dtype="float64")
        return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "task": self.task, "abs_model": self.abs_model.model_to_string(), "sq_model": self.sq_model.model_to_string(),
                "kurtosis": self.kurtosis, "reference": self.reference, "holdout_rows": self.holdout_rows, "abs_spread": self.abs_spread}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RegressionEstimator":
        import lightgbm as lgb

        return cls(lgb.Booster(model_str=data["abs_model"]), lgb.Booster(model_str=data["sq_model"]), float(data["kurtosis"]),
                   dict(data["reference"]), int(data["holdout_rows"]), abs_spread=float(data.get("abs_spread", 0.0)))


def fit_regression(features: pd.DataFrame, prediction: np.ndarray, y: np.ndarray, seed: int) -> RegressionEstimator:
    error = np.asarray(y, dtype="float64") - np.asarray(prediction, dtype="float64")
    inputs = _loss_inputs(features.reset_index(drop=True), prediction)
    mse = float((error**2).mean())
    # Standardised first: a label near ±1e100 (landing's bound) has an error whose fourth power, or mse², no float holds.
    kurtosis = float(((error / math.sqrt(mse)) ** 4).mean()) if mse > 0 else 1.0
    absolute = np.abs(error)
    abs_spread = float(absolute.std() / absolute.mean()) if absolute.mean() > 0 else 0.0
    estimator = RegressionEstimator(_fit_loss_model(inputs, absolute, seed), _fit_loss_model(inputs, error**2, seed), kurtosis, {}, len(error),
                                    abs_spread=abs_spread)
    estimator.reference = estimator.realized(prediction, y)
    return estimator


# ---- shared --------------------------------------------------------------------------------------------------

MIN_HOLDOUT_ROWS = 20


def fit_estimator(task: str, classes: list[str] | None, features: pd.DataFrame, scores: np.ndarray, y: np.ndarray, seed: int,
                  threshold: float = DEFAULT_THRESHOLD) -> Estimator:
    """The task's estimator, fitted on the hold-out's features, the model's raw scores and the encoded labels (and, for a
    binary model, its decision threshold)."""
    if len(y) < MIN_HOLDOUT_ROWS:
        raise EstimationError(f"only {len(y)} hold-out events; at least {MIN_HOLDOUT_ROWS} are needed to fit a performance estimator")
    if task == "regression":
        return fit_regression(features, scores, y, seed)
    return fit_classification(task, list(classes or []), scores, y, seed, threshold)


def load_estimator(data: dict[str, Any]) -> Estimator:
    if data.get("method") == DLE:
        return RegressionEstimator.from_dict(data)
    if data.get("method") == CBPE:
        return ClassificationEstimator.from_dict(data)
    raise EstimationError(f"unknown performance estimator {data.get('method')!r}")


def _banded(events: int, point: dict[str, float], spread: dict[str, float], bounds: tuple[float, float]) -> Estimate:
    """Point estimates with a 95 % band of ±1.96 standard deviations, clipped to the metric's range."""
    defined = {k: v for k, v in point.items() if not math.isnan(v)}
    lower = {k: max(bounds[0], v - Z95 * spread[k]) for k, v in defined.items()}
    upper = {k: min(bounds[1], v + Z95 * spread[k]) for k, v in defined.items()}
    return Estimate(events, defined, lower, upper)


def worse_or_better(metric: str, value: float, reference: float) -> str:
    """`worse_by` as said: "11.8% worse", or "3.2% better" ("-3.2% worse" read as a fall)."""
    worse = worse_by(metric, value, reference)
    if math.isinf(worse):
        return f"{'worse' if worse > 0 else 'better'} than a reference of 0"
    return f"{abs(worse):.1%} {'worse' if worse >= 0 else 'better'}"


def worse_by(metric: str, value: float, reference: float) -> float:
    """How much worse `value` is than `reference`, as a share of the reference (positive: worse). From a reference of
    0 (a regression champion without error on its hold-out) any worse value is infinitely so: it was 0, and no drop
    could ever be found (the review)."""
    delta = (reference - value) if HIGHER_IS_BETTER[metric] else (value - reference)
    if reference == 0:
        return 0.0 if delta == 0 else math.copysign(math.inf, delta)
    return delta / abs(reference)
