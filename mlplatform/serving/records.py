"""Request records: checked field by field against the dataset spec, encoded straight into the booster's input.

A single-row request cannot afford pandas (building a frame costs more than the prediction), so this is the
per-record counterpart of `validation.validate_frame` (same rules: finite numbers, text up to MAX_TEXT_LENGTH, blank
means missing) and of `FeatureTransformer.transform` (same categories, crosses and codes LightGBM sees). The
tests hold both pairs to agreement on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplatform.features import CROSS_SEPARATOR
from mlplatform.predictor import Predictor
from mlplatform.spec import DatasetSpec
from mlplatform.validation import MAX_TEXT_LENGTH


class ModelMismatch(ValueError):
    """A registered model whose inputs are not the configured dataset spec's features."""


@dataclass(frozen=True)
class FieldError:
    """One problem in one field of one record, in FastAPI's 422 shape."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


def utf8_problem(value: str) -> str | None:
    """Strings with lone surrogates cannot be stored; they must be refused before the event log sees them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 text"
    return None


def check_number(value: Any) -> tuple[float | None, str | None, str]:
    if value is None:
        return None, None, ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"expected a number or null, got {type(value).__name__}", "type_error"
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        return None, f"{str(value)[:40]!r} is not a finite number", "value_error"
    return number, None, ""


def _text(value: Any) -> tuple[str | None, str | None, str]:
    if value is None:
        return None, None, ""
    if not isinstance(value, str):
        return None, f"expected a string or null, got {type(value).__name__}", "type_error"
    text = value.strip()
    if len(text) > MAX_TEXT_LENGTH:
        return None, f"longer than {MAX_TEXT_LENGTH} characters", "value_error"
    problem = utf8_problem(text)
    if problem:
        return None, problem, "value_error"
    return text or None, None, ""


class RecordCodec:
    """Validates JSON records for one spec and turns them into the feature matrix of one model version."""

    def __init__(self, spec: DatasetSpec, predictor: Predictor) -> None:
        transformer = predictor.transformer
        if set(transformer.numeric) != set(spec.numeric_features) or set(transformer.categorical) != set(spec.categorical_features):
            raise ModelMismatch(
                f"model inputs {transformer.input_columns} are not the features of dataset spec {spec.name!r}: {list(spec.features)}"
            )
        self.features = list(spec.features)
        self._checks = {name: (check_number if name in spec.numeric_features else _text) for name in self.features}
        self.numeric = list(transformer.numeric)
        self.categorical = list(transformer.categorical)
        self.crosses = list(transformer.crosses)
        self.cross_names = transformer.cross_names
        self.codes = {name: {c: float(i) for i, c in enumerate(transformer.categories[name])} for name in [*self.categorical, *self.cross_names]}
        self.width = len(transformer.output_columns)

    def check(self, records: list[Any], loc: tuple[str | int, ...]) -> tuple[list[dict[str, Any]], list[FieldError]]:
        """Clean records (floats, stripped text, None for missing; keys in spec feature order) or every field-level error found.

        `loc` prefixes error locations: ("body",) for one record, ("body", "records") for a batch.
        """
        clean: list[dict[str, Any]] = []
        errors: list[FieldError] = []
        batch = len(loc) > 1
        for i, record in enumerate(records):
            where = (*loc, i) if batch else loc
            if not isinstance(record, dict):
                errors.append(FieldError(where, f"expected an object with the features {self.features}, got {type(record).__name__}", "type_error"))
                continue
            row: dict[str, Any] = {}
            for name, check in self._checks.items():
                if name not in record:
                    errors.append(FieldError((*where, name), "field required", "missing"))
                    continue
                value, problem, kind = check(record[name])
                if problem:
                    errors.append(FieldError((*where, name), f"{name}: {problem}", kind))
                row[name] = value
            for name in record:
                if name not in self._checks:
                    errors.append(FieldError((*where, str(name)[:64]), "extra field not permitted (not a feature of the dataset spec)", "extra_forbidden"))
            clean.append(row)
        return clean, errors

    def encode(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, int]]:
        """The model's input matrix (category codes as LightGBM's pandas path uses them) and unseen categories per column."""
        matrix = np.full((len(rows), self.width), np.nan)
        unseen: dict[str, int] = {}
        n_numeric, n_categorical = len(self.numeric), len(self.categorical)
        for r, row in enumerate(rows):
            out = matrix[r]
            for j, name in enumerate(self.numeric):
                value = row[name]
                if value is not None:
                    out[j] = value
            for j, name in enumerate(self.categorical):
                self._code(out, n_numeric + j, name, row[name], unseen)
            for j, ((a, b), name) in enumerate(zip(self.crosses, self.cross_names)):
                left, right = row[a], row[b]
                if left is not None and right is not None:
                    self._code(out, n_numeric + n_categorical + j, name, f"{left}{CROSS_SEPARATOR}{right}", unseen)
        return matrix, unseen

    def _code(self, out: np.ndarray, j: int, name: str, value: str | None, unseen: dict[str, int]) -> None:
        if value is None:
            return
        code = self.codes[name].get(value)
        if code is None:
            unseen[name] = unseen.get(name, 0) + 1
        else:
            out[j] = code
