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
        return self.predictor.predict(model_input)


mlflow.models.set_model(LightGBMPipelineModel())
