"""The pyfunc that MLflow logs (models-from-code: this file travels with every model version).

Raw records in, predictions out: the fitted feature transformer, the booster and the performance estimator are its artifacts.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from mlplatform.domain.predictor import Predictor


class LightGBMPipelineModel(mlflow.pyfunc.PythonModel):
    """Feature transformer + LightGBM booster behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.load(context.artifacts["booster"], context.artifacts["pipeline"], context.artifacts.get("estimator"))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Records as a frame, a list of dicts, a dict of columns or one dict (typed as a frame: any other hint makes MLflow
        warn at every logging and load); every feature column present (null for missing), numbers coerced, categoricals
        spelled as landing spells them; history columns computed by the caller."""
        frame = _frame(model_input)
        if frame.empty and not len(frame.columns):
            return self.predictor.predict(frame)
        transformer = self.predictor.transformer
        missing = [name for name in transformer.input_columns if name not in frame.columns and name not in transformer.history]
        if missing:
            raise ValueError(f"the model needs the feature columns {missing} (null for a missing value), as /predict does")
        return self.predictor.predict(frame)


def _frame(model_input: Any) -> pd.DataFrame:
    """A frame as given; a list of records; a dict of columns (what MLflow's scoring server makes of `instances`), or
    one record when none of its values is a list."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict) and not any(isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) > 0 for v in model_input.values()):
        return pd.DataFrame([model_input])
    return pd.DataFrame(model_input)


mlflow.models.set_model(LightGBMPipelineModel())
