"""`mlplatform settings`: every setting a model runs with, its variable, value, default and meaning, in one list. The
README's table holds the common ones; a user of a small dataset looked for min_training_rows' default and found it
nowhere (the estimation probe)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from mlplatform.root import ModelContext
from mlplatform.settings import PER_MODEL_FIELDS, Settings, env_name, redact


def _shown(value: object) -> object:
    """A value as printed: a secret only as set, a URL without its password (a Redis or PostgreSQL URL in a plain
    setting printed `redis://:hunter2@…` whole: the review), a path or other object as its text, numbers and lists as
    they are."""
    if isinstance(value, SecretStr):
        return "(set)"
    return value if value is None or isinstance(value, (bool, int, float, list, dict)) else redact(str(value))


def settings_rows(model: ModelContext) -> list[dict[str, Any]]:
    """One row per setting of `model`: its variable, value, default, where the value came from (its defs.yaml `loop:`,
    the environment, the default, or derived: a path below the state folder or the model's own landing folder) and its
    description."""
    rows = []
    present = {variable.upper() for variable in os.environ}  # pydantic-settings reads names in any case
    for name, info in Settings.model_fields.items():
        if name in PER_MODEL_FIELDS:
            continue
        value = getattr(model.settings, name)
        default = None if info.default is PydanticUndefined else info.default
        variable = env_name(name)
        source = (f"{model.name}'s defs.yaml loop:" if name in model.loop_keys else "environment" if variable in present
                  else "default" if value == default else "derived")
        rows.append({"variable": variable, "value": _shown(value), "default": _shown(default), "source": source, "description": info.description or ""})
    return rows


def render_settings(model: str, rows: list[dict[str, Any]]) -> str:
    """The rows as text: the changed ones first, then the defaults, each with its meaning on the next line."""
    changed = [r for r in rows if r["source"] != "default"]
    lines = [f"settings of model {model}: {len(changed)} of {len(rows)} changed from their default"]
    for row in changed + [r for r in rows if r["source"] == "default"]:
        origin = "" if row["source"] == "default" else f"  ({row['source']}; default {row['default']})"
        lines.append(f"{row['variable']}={row['value']}{origin}\n    {row['description']}")
    return "\n".join(lines)
