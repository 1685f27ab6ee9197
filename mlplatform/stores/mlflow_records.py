"""What MLflow records about a version beyond the model: the event windows it learnt from and was judged on, as
MLflow datasets (source = the event log and the event-id/time range, a content digest, the schema), and the hold-out
evaluation through `mlflow.models.evaluate` (its metrics and confusion matrix, plus curves, calibration, residuals and
per-segment quality), its metrics linked to the LoggedModel so `search_logged_models` can rank versions on one hold-out.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, DataType, Schema

from mlplatform.domain.evaluation import occurring_classes, segment_quality
from mlplatform.domain.predictor import PREDICTION, PROBABILITY
from mlplatform.domain.spec import DatasetSpec, Task
from mlplatform.domain.timeformat import iso_time
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL

SOURCE_TYPE = "mlplatform_event_log"
EVALUATION = "evaluation"  # MLflow's dataset context of a version's hold-out (TRAINING: registry.py)
HOLDOUT_METRIC_PREFIX = "holdout_"
FIGURE_DPI = 72  # MLflow saves figures at their own dpi: fewer pixels, faster evaluation_report


@dataclass(frozen=True)
class EventLogSource(DatasetSource):
    """A window of labelled events in the platform's event log: which log, which event ids and times, which labels."""

    event_log: str
    first_event_id: str
    last_event_id: str
    start: str
    end: str
    label_seq_cutoff: int

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self) -> Any:
        raise MlflowException(f"read this window from the event log with mlplatform: {self.event_log}, events {self.first_event_id}..{self.last_event_id}")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built from a window, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> "EventLogSource":
        raise MlflowException(f"{SOURCE_TYPE} sources are built from an event window, not resolved from {raw_source!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "EventLogSource":
        """Read back a logged source; one with missing, unknown or wrong-typed fields is refused naming them."""
        names = {f.name: f.type for f in fields(cls)}
        missing, unknown = sorted(names.keys() - source_dict.keys()), sorted(map(str, source_dict.keys() - names.keys()))
        wrong = sorted(k for k in names.keys() & source_dict.keys() if not isinstance(source_dict[k], int if names[k] == "int" else str))
        if missing or unknown or wrong:
            raise MlflowException(f"not a {SOURCE_TYPE} source: missing {missing or 'none'}, unknown {unknown or 'none'}, wrong type {wrong or 'none'}")
        return cls(**source_dict)


register_dataset_source(EventLogSource)  # so mlflow.data.get_source reads the source of a logged input back


def content_digest(frame: pd.DataFrame) -> str:
    """A digest of every row and column (MLflow's own hashes only the first 10,000 rows and visits each cell in Python)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.md5(hashed.tobytes() + "\0".join(map(str, frame.columns)).encode()).hexdigest()[:16]


_TYPES_BY_KIND = {"f": DataType.double, "i": DataType.long, "u": DataType.long, "b": DataType.boolean}


class EventWindowDataset(PandasDataset):
    """A PandasDataset whose schema comes from the frame's dtypes: MLflow's own inference visits every value of each
    text column (seconds on a 50,000-event window, for every retrain)."""

    def __init__(self, df: pd.DataFrame, source: DatasetSource, name: str, digest: str, predictions: str | None = None) -> None:
        super().__init__(df=df, source=source, targets=LABEL, name=name, digest=digest, predictions=predictions)
        self._schema = Schema([ColSpec(_TYPES_BY_KIND.get(df[c].dtype.kind, DataType.string), str(c), required=not df[c].isna().any()) for c in df.columns])

    @property
    def schema(self) -> Schema:
        return self._schema


def window_dataset(spec: DatasetSpec, frame: pd.DataFrame, event_log: str, part: str) -> EventWindowDataset:
    """One part (training or hold-out) of a feature snapshot as an MLflow dataset sourced from the event log."""
    source = EventLogSource(event_log, str(frame[EVENT_ID].iloc[0]), str(frame[EVENT_ID].iloc[-1]), iso_time(frame[EVENT_TIME].iloc[0]),
                            iso_time(frame[EVENT_TIME].iloc[-1]), int(frame["label_seq"].max()))
    return EventWindowDataset(frame, source, f"{spec.name}-{part}", content_digest(frame))


def _binary_curves(spec: DatasetSpec, y_true: pd.Series, probability: np.ndarray) -> dict[str, Any]:
    """ROC, precision-recall and calibration of the positive class, as figures MLflow logs as images."""
    from matplotlib.figure import Figure
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    positive = (y_true == spec.positive_class).to_numpy()
    figures = {}
    for name, draw in (("roc_curve", RocCurveDisplay.from_predictions), ("precision_recall_curve", PrecisionRecallDisplay.from_predictions),
                       ("calibration_curve", CalibrationDisplay.from_predictions)):
        figure = Figure(figsize=(5, 4), dpi=FIGURE_DPI, layout="tight")
        draw(positive, probability, ax=figure.add_subplot(), name=f"positive = {spec.positive_class}")
        figures[name] = figure
    return figures


def _residuals(y_true: pd.Series, predicted: pd.Series) -> dict[str, Any]:
    """Residuals against the prediction and their histogram (regression)."""
    from matplotlib.figure import Figure

    y, p = y_true.astype("float64").to_numpy(), predicted.astype("float64").to_numpy()
    figure = Figure(figsize=(9, 4), dpi=FIGURE_DPI, layout="tight")
    scatter, histogram = figure.subplots(1, 2)
    scatter.scatter(p, y - p, s=4, alpha=0.4)
    scatter.axhline(0, color="black", linewidth=0.8)
    scatter.set(xlabel="predicted", ylabel="actual - predicted", title="residuals")
    histogram.hist(y - p, bins=40)
    histogram.set(xlabel="actual - predicted", title="residual distribution")
    return {"residuals": figure}


@contextmanager
def _quiet(loggers: Sequence[str]) -> Iterator[None]:
    """MLflow's evaluator narrates each call at INFO (dataset inferred as binary, active model set): warnings only, in every
    run's log and the demo's output alike."""
    previous = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def evaluate_version(spec: DatasetSpec, holdout: PandasDataset, predicted: pd.DataFrame, model_id: str, run_id: str) -> dict[str, float]:
    """Evaluate a version's hold-out predictions with MLflow's default evaluator in that version's run, linked to its LoggedModel:
    MLflow's metrics and confusion matrix plus curves or residuals and per-segment quality; the hold-out becomes an input
    of the run. Returns MLflow's metrics."""
    frame = holdout.df.reset_index(drop=True)
    predicted = predicted.reset_index(drop=True)
    scored = frame.assign(**{PREDICTION: predicted[PREDICTION]})
    data = EventWindowDataset(scored, holdout.source, holdout.name, holdout.digest, predictions=PREDICTION)

    def plots(eval_df: pd.DataFrame, builtin_metrics: dict[str, float], artifacts_dir: str) -> dict[str, Any]:
        if spec.task is Task.binary:
            return _binary_curves(spec, frame[LABEL], predicted[PROBABILITY].to_numpy())
        return _residuals(frame[LABEL], predicted[PREDICTION]) if spec.task is Task.regression else {}

    def segments(eval_df: pd.DataFrame, builtin_metrics: dict[str, float], artifacts_dir: str) -> dict[str, Any]:
        return {"segment_quality": segment_quality(spec, frame, predicted)}

    # SHAP explanations need the model, which is not evaluated here (its predictions are): off, rather than a warning per run.
    # Multiclass precision, recall and F1 macro-averaged, as the platform's own evaluation has them ("weighted" by default).
    # MLflow's multiclass path needs three labels at least (with two it turns binary, with one it fails): below that, the
    # spec's classes, and its macro averages then count the absent ones as 0 where the platform's do not.
    occurring = occurring_classes(spec.classes or [], frame[LABEL], predicted[PREDICTION])
    classes = occurring if spec.task is Task.multiclass and len(occurring) >= 3 else spec.classes
    config = {"log_model_explainability": False,
              **({"pos_label": spec.positive_class, "label_list": classes, "average": "macro"} if spec.is_classification else {})}
    from sklearn.exceptions import UndefinedMetricWarning

    with mlflow.start_run(run_id=run_id), _quiet(("mlflow.models.evaluation", "mlflow.tracking.fluent")), warnings.catch_warnings():
        # A class the hold-out never predicts scores 0 (the platform's zero_division), not a warning per training on the terminal.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = mlflow.models.evaluate(data=data, model_type="classifier" if spec.is_classification else "regressor",
                                        evaluator_config=config, custom_artifacts=[plots, segments], model_id=model_id)
    return {k: float(v) for k, v in result.metrics.items()}
