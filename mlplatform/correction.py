"""An online residual correction on top of the champion, learned from feedback labels one at a time.

Why: a batch model only changes at the next retraining, and between two retrainings the stream keeps
moving. A tiny linear model on the champion's own score z (log-odds, or the predicted value) — per term an
offset and a slope on z, the terms being a bias and each categorical value — is updated from every
label as it arrives (normalised LMS); a slope lets a segment whose relation flipped invert the score,
so the served prediction follows a drift within hundreds of events while LightGBM and the registry stay
the source of the model. It is reset whenever a new champion is promoted: its errors are not the old one's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlplatform.features import normalise_category
from mlplatform.predictor import PREDICTION, PROBABILITY
from mlplatform.spec import DatasetSpec, Task

BIAS = "__bias__"
EPS = 1e-6


class ResidualCorrector:
    """Per-term offset and slope on the champion's link-scale score z: z' = z + Σ (offset_t + slope_t · z).

    Binary and regression tasks; the terms of a record are a bias and its `column=value` categoricals.
    """

    def __init__(self, spec: DatasetSpec, learning_rate: float = 0.5) -> None:
        if spec.task is Task.multiclass:
            raise ValueError("the residual correction supports binary and regression tasks, not multiclass")
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError(f"learning rate must be in (0, 1], got {learning_rate}")
        self.spec = spec
        self.learning_rate = learning_rate
        self.offsets: dict[str, float] = {}
        self.slopes: dict[str, float] = {}
        self.updates = 0

    def reset(self) -> None:
        self.offsets, self.slopes = {}, {}

    def keys(self, raw: pd.DataFrame) -> list[list[str]]:
        """The active terms of each record: the bias and `column=value` for each present categorical."""
        columns = [(name, normalise_category(raw[name]) if name in raw else pd.Series(pd.NA, index=raw.index)) for name in self.spec.categorical_features]
        out = [[BIAS] for _ in range(len(raw))]
        for name, values in columns:
            for i, value in enumerate(values):
                if not pd.isna(value):
                    out[i].append(f"{name}={value}")
        return out

    def _link(self, predicted: pd.DataFrame) -> np.ndarray:
        if self.spec.task is Task.regression:
            return predicted[PREDICTION].astype("float64").to_numpy()
        p = predicted[PROBABILITY].astype("float64").clip(EPS, 1 - EPS).to_numpy()
        return np.log(p / (1 - p))

    def _inverse(self, z: float) -> float:
        return z if self.spec.task is Task.regression else 1.0 / (1.0 + np.exp(-z))

    def _target(self, label: object) -> float:
        return float(label) if self.spec.task is Task.regression else float(label == self.spec.positive_class)  # type: ignore[arg-type]

    def apply(self, raw: pd.DataFrame, predicted: pd.DataFrame, labels: pd.Series | None = None) -> pd.DataFrame:
        """Corrected predictions for `raw`, in order; with `labels`, each label updates the weights right after its
        own prediction (test-then-train, as labels arriving through /feedback would)."""
        z = self._link(predicted)
        keys = self.keys(raw)
        known = None if labels is None else labels.reset_index(drop=True)
        out = np.empty(len(raw), dtype="float64")
        for i, terms in enumerate(keys):
            zi = z[i]
            value = self._inverse(zi + sum(self.offsets.get(t, 0.0) + self.slopes.get(t, 0.0) * zi for t in terms))
            out[i] = value
            if known is not None and not pd.isna(known.iloc[i]):
                step = self.learning_rate * (self._target(known.iloc[i]) - value) / (len(terms) * (1.0 + zi * zi))
                for t in terms:
                    self.offsets[t] = self.offsets.get(t, 0.0) + step
                    self.slopes[t] = self.slopes.get(t, 0.0) + step * zi
                self.updates += 1
        if self.spec.task is Task.regression:
            return pd.DataFrame({PREDICTION: out}, index=raw.index)
        prediction = np.where(out >= 0.5, self.spec.positive_class, self.spec.negative_class)
        return pd.DataFrame({PREDICTION: prediction, PROBABILITY: out}, index=raw.index)
