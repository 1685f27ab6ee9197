"""A trained model as one object: raw records in, predictions (and probabilities) out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlplatform.domain.estimation import Estimate, Estimator, load_estimator, too_few
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.features import FeatureTransformer
from mlplatform.domain.threshold import DEFAULT_THRESHOLD

if TYPE_CHECKING:  # LightGBM imports scikit-learn and SciPy: loaded where a booster is read or trained, not with the code location
    import lightgbm as lgb

PREDICTION = "prediction"
PROBABILITY = "probability"
BOOSTER_FILE = "booster.txt"
PIPELINE_FILE = "pipeline.json"
ESTIMATOR_FILE = "estimator.json"
BOOSTER_DIGEST = "booster_sha256"  # in the pipeline file: the booster file as saved, checked before LightGBM reads it
TREES_END = "\nend of trees"  # where a LightGBM model text's trees end: a file cut short before it has no such line
NO_ESTIMATOR = "the model was logged without a performance estimator (before estimation existed): retrain to get one"
ESTIMATOR_NOT_FITTED = "the model was logged without a performance estimator"  # and, from its version's tag, why


class ModelFileDamaged(ValueError):
    """A model file is not the one saved with the model. LightGBM reading a booster file cut short does not raise: it
    kills the process (a segmentation fault), which took down a serving process healthy on another version."""


def _booster_text(path: str | Path, digest: str | None) -> str:
    """The booster file's text, once it is the file saved (`digest`), or, for a model saved before digests were kept,
    once it holds all its trees: anything else raises ModelFileDamaged before LightGBM sees it."""
    raw = Path(path).read_bytes()
    if digest is not None and hashlib.sha256(raw).hexdigest() != digest:
        raise ModelFileDamaged(f"{BOOSTER_FILE} is not the file saved with the model (its SHA-256 differs: cut short or changed)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileDamaged(f"{BOOSTER_FILE} is not a LightGBM model text ({exc.reason} at byte {exc.start})") from None
    if digest is None and TREES_END not in text:
        raise ModelFileDamaged(f"{BOOSTER_FILE} ends before its trees do (cut short)")
    return text


def _threshold_of(pipeline: dict[str, Any]) -> float:
    """The decision threshold a pipeline file records (0.5 for one saved before thresholds were kept); a value no
    probability threshold can be is a damaged file, not a model that predicts one class for ever."""
    value = pipeline.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ModelFileDamaged(f"{PIPELINE_FILE}: threshold {value!r} is not a probability between 0 and 1")
    return float(value)


def spec_mismatch(predictor: "Predictor", spec: DatasetSpec) -> str | None:
    """Why a model cannot serve records of `spec`, or None: inputs other than its features, another task, classes
    the spec no longer has (renamed: served predictions and /feedback labels would be two vocabularies), or another
    positive class (its probability is of the other class: every AUC, floor and comparison would be turned round). A
    class the spec gained is no mismatch: the model never predicts it, and the next retraining learns it."""
    transformer = predictor.transformer
    numeric, categorical = spec.model_inputs
    if set(transformer.numeric) != set(numeric) or set(transformer.categorical) != set(categorical):
        expected, actual = set(numeric + categorical), set(transformer.input_columns)
        return (f"model inputs are not the features of dataset spec {spec.name!r}: the spec has {sorted(expected - actual) or 'nothing'} the model "
                f"lacks, the model {sorted(actual - expected) or 'nothing'} the spec lacks"
                + ("; the same names, some numeric in one and categorical in the other" if expected == actual else ""))
    return _output_mismatch(predictor, spec)


def scores_records_of(predictor: "Predictor", spec: DatasetSpec) -> bool:
    """Whether the model can score records of `spec`, fitting it or not: the spec has every input it reads, of the same
    kind, and what it predicts means the same (a spec that only gained features or history)."""
    numeric, categorical = spec.model_inputs
    inputs = set(predictor.transformer.numeric) <= set(numeric) and set(predictor.transformer.categorical) <= set(categorical)
    return inputs and _output_mismatch(predictor, spec) is None


def _output_mismatch(predictor: "Predictor", spec: DatasetSpec) -> str | None:
    """Why what the model predicts does not mean what `spec` says, or None."""
    if predictor.task != spec.task.value:
        return f"the model is a {predictor.task} model, dataset spec {spec.name!r} a {spec.task.value} task"
    lost = sorted(set(predictor.classes or []) - set(spec.classes or []))
    if lost:
        return f"the model predicts classes dataset spec {spec.name!r} does not have: {lost} (its classes: {spec.classes})"
    if predictor.positive_class is not None and spec.positive_class is not None and predictor.positive_class != spec.positive_class:
        return (f"the model's probability is of class {predictor.positive_class!r}, dataset spec {spec.name!r} has positive class "
                f"{spec.positive_class!r}")
    return None


@dataclass
class Predictor:
    """Feature transformer + LightGBM booster + how to read the booster's raw output."""

    booster: lgb.Booster
    transformer: FeatureTransformer
    task: str
    classes: list[str] | None = None
    positive_class: str | None = None
    estimator: Estimator | None = None  # fitted on the hold-out after training
    no_estimator: str = NO_ESTIMATOR  # why `estimator` is None, as estimates say it
    threshold: float = DEFAULT_THRESHOLD  # binary: the positive class is predicted at and above this probability

    def features_and_scores(self, raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """The model's inputs and the booster's raw output: what a performance estimator reads."""
        features = self.transformer.transform(raw)
        return features, np.asarray(self.booster.predict(features, num_threads=1), dtype="float64")

    def estimate(self, raw: pd.DataFrame, min_events: int) -> Estimate:
        """Estimated performance on `raw` (labels not needed); no estimate, saying why, without an estimator."""
        if self.estimator is None:
            return Estimate(len(raw), note=self.no_estimator)
        return too_few(len(raw), max(1, min_events)) or self.estimator.estimate(*self.features_and_scores(raw), min_events)

    def label_codes(self, labels: pd.Series) -> np.ndarray:
        """Labels as this model's scores index them: its class index (binary: 1 for its positive class), the number for
        regression; NaN where missing or of a class it does not predict. The model's classes, not the spec's: a spec
        that since reordered, gained or flipped them encoded a storm as the index of the model's fourth class (of
        three), and the realized metrics of a reordered one read 0.28 where the model was right on 0.67."""
        if self.task == "regression":
            return pd.to_numeric(labels, errors="coerce").to_numpy(dtype="float64")
        assert self.classes is not None
        index = {self.positive_class: 1.0, **{c: 0.0 for c in self.classes if c != self.positive_class}} if self.task == "binary" \
            else {c: float(i) for i, c in enumerate(self.classes)}
        return labels.map(index).to_numpy(dtype="float64", na_value=np.nan)

    def predict(self, raw: pd.DataFrame) -> pd.DataFrame:
        """`prediction` for every task; `probability` of the positive class (binary) or of the
        predicted class (multiclass), plus `proba_<class>` columns for multiclass."""
        scores = np.empty(0) if raw.empty else self.booster.predict(self.transformer.transform(raw), num_threads=1)  # no rows: the same columns
        prediction, probability, matrix = self.read_scores(scores)
        if probability is None:
            return pd.DataFrame({PREDICTION: prediction}, index=raw.index)
        frame = pd.DataFrame({PREDICTION: prediction, PROBABILITY: probability}, index=raw.index)
        if matrix is not None:
            for i, cls in enumerate(self.classes or []):
                frame[f"proba_{cls}"] = matrix[:, i]
        return frame

    def read_scores(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The booster's raw output as (prediction, probability, per-class matrix for multiclass).

        Separate from `predict` so that serving, which encodes records without pandas, reads scores the same way.
        """
        if self.task == "regression":
            return np.asarray(scores, dtype="float64"), None, None
        assert self.classes is not None
        if self.task == "binary":
            proba = np.asarray(scores, dtype="float64")
            return self._binary_labels.take(proba >= self.threshold), proba, None
        matrix = np.asarray(scores, dtype="float64").reshape(-1, len(self.classes))
        return np.asarray(self.classes, dtype=object)[matrix.argmax(axis=1)], matrix.max(axis=1), matrix

    @cached_property
    def _binary_labels(self) -> np.ndarray:
        """[negative, positive] class, indexed by `probability >= threshold`: built once, as serving reads one row's score per request."""
        assert self.classes is not None
        return np.array([next(c for c in self.classes if c != self.positive_class), self.positive_class])

    def save(self, folder: Path) -> dict[str, str]:
        """Write the files the logged model carries (booster, pipeline, estimator if fitted); returns them as MLflow artifacts."""
        folder.mkdir(parents=True, exist_ok=True)
        booster_path = folder / BOOSTER_FILE
        pipeline_path = folder / PIPELINE_FILE
        self.booster.save_model(str(booster_path))
        digest = hashlib.sha256(booster_path.read_bytes()).hexdigest()
        artifacts = {"booster": str(booster_path), "pipeline": str(pipeline_path)}
        if self.estimator is not None:
            artifacts["estimator"] = str(folder / ESTIMATOR_FILE)
            Path(artifacts["estimator"]).write_text(json.dumps(self.estimator.to_dict()), encoding="utf-8")
        pipeline_path.write_text(
            json.dumps({"task": self.task, "classes": self.classes, "positive_class": self.positive_class, "threshold": self.threshold,
                        "transformer": self.transformer.to_dict(), BOOSTER_DIGEST: digest}),
            encoding="utf-8",
        )
        return artifacts

    @classmethod
    def load(cls, booster_path: str | Path, pipeline_path: str | Path, estimator_path: str | Path | None = None) -> "Predictor":
        import lightgbm as lgb

        data: dict[str, Any] = json.loads(Path(pipeline_path).read_text(encoding="utf-8"))
        estimator, no_estimator = None, NO_ESTIMATOR
        if estimator_path is not None:
            try:
                estimator = load_estimator(json.loads(Path(estimator_path).read_text(encoding="utf-8")))
            except Exception as exc:  # noqa: BLE001  (gone, cut short, not an estimator's, or a DLE booster LightGBM refuses)
                # A monitoring extra: without it the model still serves and is retrained (the estimation probe: one
                # damaged estimator.json took the champion out of service and failed every retraining).
                no_estimator = f"its performance estimator ({ESTIMATOR_FILE}) cannot be read ({type(exc).__name__}: {exc}): retrain to get a new one"
        return cls(
            booster=lgb.Booster(model_str=_booster_text(booster_path, data.get(BOOSTER_DIGEST))),
            transformer=FeatureTransformer.from_dict(data["transformer"]),
            task=data["task"],
            classes=data.get("classes"),
            positive_class=data.get("positive_class"),
            estimator=estimator,
            no_estimator=no_estimator,
            threshold=_threshold_of(data),
        )
