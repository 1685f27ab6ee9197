"""The prediction service: the registry's champion over HTTP, every prediction logged, late labels, metrics."""

from mlplatform.serving.app import create_app
from mlplatform.serving.server import serve

__all__ = ["create_app", "serve"]
