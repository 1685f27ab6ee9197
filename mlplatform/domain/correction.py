"""An online residual correction on top of the champion, learned from feedback labels one at a time.

Why: a batch model only changes at the next retraining, and between two retrainings the stream keeps
moving. A tiny linear model on the champion's own score z (log-odds, or the predicted value) — per term an
offset and a slope on z, the terms being a bias and each categorical value — is updated from every
label as it arrives (normalised LMS); a slope lets a segment whose relation flipped invert the score,
so the served prediction follows a drift within hundreds of events while LightGBM and the registry stay
the source of the model. It is reset whenever a new champion is promoted: its errors are not the old one's.
A record answers only where it has been the better of the two on the labels of its terms (an exponentially weighted
squared error per term, half-life GATE_HALF_LIFE of the term's labels, summed over the record's terms), else the
champion's own score: on a stationary regression stream its updates chased noise and served an RMSE 25 % above the
champion's (the River probe); per term, so that a flipped segment of 2 % of the stream is still corrected while the
rest, where the correction only adds noise, is not (one record for the whole stream shut it off everywhere: the review).

The pieces (`terms`/`keys`, `link`/`scores`, `correct`, `learn`) are what the prediction service calls per
request and per /feedback label; `apply` is the benchmark's test-then-train loop over the same pieces, so the
adaptation benchmark measures exactly what `MLPLATFORM_SERVE_ONLINE_CORRECTION` serves.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mlplatform.domain.features import normalise_category
from mlplatform.domain.predictor import PREDICTION, PROBABILITY
from mlplatform.domain.spec import DatasetSpec, Task
from mlplatform.domain.threshold import DEFAULT_THRESHOLD

BIAS = "__bias__"
EPS = 1e-6
MAX_EXPONENT = 700.0  # math.exp overflows just above 709; the probability is 0 to double precision long before
GATE_HALF_LIFE = 200  # labels: how fast the record of corrected against uncorrected errors forgets
_GATE_DECAY = 0.5 ** (1 / GATE_HALF_LIFE)


class ResidualCorrector:
    """Per-term offset and slope on the champion's link-scale score z: z' = z + Σ (offset_t + slope_t · z).

    Binary and regression tasks; the terms of a record are a bias and its `column=value` categoricals.
    `correct` and `learn` may be called from different threads (requests on the event loop, labels in a
    thread pool): one lock keeps every update whole and every prediction on one state of the weights.
    """

    def __init__(self, spec: DatasetSpec, learning_rate: float = 0.5) -> None:
        if spec.task is Task.multiclass:
            raise ValueError("the residual correction supports binary and regression tasks, not multiclass")
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError(f"learning rate must be in (0, 1], got {learning_rate}")
        self.spec = spec
        self.learning_rate = learning_rate
        self._regression = spec.task is Task.regression
        self._prefixes = [(name, f"{name}=") for name in spec.categorical_features]
        self._lock = threading.Lock()
        self.offsets: dict[str, float] = {}
        self.slopes: dict[str, float] = {}
        self.updates = 0
        self.errors: dict[str, tuple[float, float]] = {}  # per term: weighted squared errors, corrected and the champion's own

    def reset(self) -> None:
        with self._lock:
            self.offsets, self.slopes, self.errors = {}, {}, {}

    def answering(self, terms: Sequence[str]) -> bool:
        """Whether the correction answers a record of these terms: it has erred less than the champion's own score on
        the recent labels of its terms (summed: a term without labels yet weighs nothing)."""
        corrected = raw = 0.0
        for t in terms:
            c, r = self.errors.get(t, (0.0, 0.0))
            corrected, raw = corrected + c, raw + r
        return corrected <= raw

    @property
    def learned_terms(self) -> int:
        """Terms that have a weight: the bias and every categorical value seen with a label."""
        return len(self.offsets)

    def terms(self, record: Mapping[str, str | None]) -> list[str]:
        """The active terms of one record whose categoricals are already normalised text (None for missing), as serving cleans them.

        A plain loop over precomputed `column=` prefixes: this runs on every single-row request.
        """
        out = [BIAS]
        for name, prefix in self._prefixes:
            value = record.get(name)
            if value is not None:
                out.append(prefix + value)
        return out

    def keys(self, raw: pd.DataFrame) -> list[list[str]]:
        """The active terms of each record of a frame: its categoricals normalised as training does, then `terms`."""
        names = self.spec.categorical_features
        columns = [[None if pd.isna(v) else v for v in normalise_category(raw[name]).tolist()] if name in raw else [None] * len(raw) for name in names]
        return [self.terms(dict(zip(names, values))) for values in zip(*columns)] if names else [[BIAS] for _ in range(len(raw))]

    def link(self, value: float) -> float:
        """The champion's output on the scale the correction is linear in: the value, or the log-odds of the probability."""
        if self._regression:
            return value
        p = min(max(value, EPS), 1 - EPS)
        return math.log(p / (1 - p))

    def scores(self, predicted: pd.DataFrame) -> list[float]:
        """z of each row of a predictions frame (`Predictor.predict`'s output)."""
        return [self.link(v) for v in predicted[PREDICTION if self._regression else PROBABILITY].astype("float64").tolist()]

    def _inverse(self, z: float) -> float:
        return z if self._regression else 1.0 / (1.0 + math.exp(min(-z, MAX_EXPONENT)))

    def _target(self, label: object) -> float:
        return float(label) if self._regression else float(label == self.spec.positive_class)  # type: ignore[arg-type]

    def _corrected(self, z: float, terms: Sequence[str]) -> float:
        offsets, slopes = self.offsets, self.slopes
        shift = 0.0
        for t in terms:
            shift += offsets.get(t, 0.0) + slopes.get(t, 0.0) * z
        return self._inverse(z + shift)

    def correct(self, z: float, terms: Sequence[str]) -> float:
        """The prediction (regression) or positive-class probability (binary) answered for score z: corrected while
        the correction is `answering`, else the champion's own."""
        with self._lock:
            return self._corrected(z, terms) if self.answering(terms) else self._inverse(z)

    def learn(self, z: float, terms: Sequence[str], label: object) -> float:
        """One label updates the weights of its terms and the record of both errors; returns what `correct` answered
        before it (test-then-train)."""
        with self._lock:
            value, raw, target = self._corrected(z, terms), self._inverse(z), self._target(label)
            answered = value if self.answering(terms) else raw
            corrected_error, raw_error = (target - value) ** 2, (target - raw) ** 2
            for t in terms:
                c, r = self.errors.get(t, (0.0, 0.0))
                self.errors[t] = (_GATE_DECAY * c + corrected_error, _GATE_DECAY * r + raw_error)
            step = self.learning_rate * (target - value) / (len(terms) * (1.0 + z * z))
            for t in terms:
                self.offsets[t] = self.offsets.get(t, 0.0) + step
                self.slopes[t] = self.slopes.get(t, 0.0) + step * z
            self.updates += 1
        return answered

    def apply(self, raw: pd.DataFrame, predicted: pd.DataFrame, labels: pd.Series | None = None, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
        """Corrected predictions for `raw`, in order; with `labels`, each label updates the weights right after its
        own prediction (test-then-train, as labels arriving through /feedback would). Binary: the positive class at and
        above `threshold`, the model's."""
        known = [None] * len(raw) if labels is None else labels.tolist()
        out = [
            self.correct(z, terms) if label is None or pd.isna(label) else self.learn(z, terms, label)
            for z, terms, label in zip(self.scores(predicted), self.keys(raw), known)
        ]
        values = np.asarray(out, dtype="float64")
        if self._regression:
            return pd.DataFrame({PREDICTION: values}, index=raw.index)
        prediction = np.where(values >= threshold, self.spec.positive_class, self.spec.negative_class)
        return pd.DataFrame({PREDICTION: prediction, PROBABILITY: values}, index=raw.index)
