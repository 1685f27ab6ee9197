"""The prediction service: each model's registry champion over HTTP, every prediction logged, late labels, metrics."""

from mlplatform.serving.app import create_app
from mlplatform.serving.server import serve
from mlplatform.serving.service import ModelParts

__all__ = ["ModelParts", "create_app", "serve"]
