"""Request records: checked field by field against the dataset spec, encoded straight into the booster's input.

A single-row request cannot afford pandas (building a frame costs more than the prediction), so this is the
per-record counterpart of `validation.validate_frame` (same rules: finite numbers, text up to MAX_TEXT_LENGTH, blank
means missing) and of `FeatureTransformer.transform` (same categories, crosses and codes LightGBM sees). The
tests hold both pairs to agreement on the same inputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlplatform.domain.features import CROSS_SEPARATOR, spelling_key
from mlplatform.domain.predictor import Predictor, spec_mismatch
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import MAX_ID_LENGTH, MAX_INTEGER_ID, MAX_TEXT_LENGTH, NUL, NUL_PROBLEM, not_a_number


_UNSEEN = -1.0  # category code of a value not seen in training; LightGBM gets it as missing


class ModelMismatch(ValueError):
    """A registered model whose inputs are not the configured dataset spec's features."""


MAX_FIELD_ERRORS = 100  # a 422 lists at most this many field errors


@dataclass(frozen=True)
class FieldError:
    """One problem in one field of one record, in FastAPI's 422 shape."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        """The error as sent: a location or message echoing the client's text must encode, whatever the text."""
        return {"loc": [printable(part) if isinstance(part, str) else part for part in self.loc], "msg": printable(self.msg), "type": self.type}


def printable(text: str) -> str:
    """Text safe to echo in a response: lone surrogates (which a JSON key can hold but UTF-8 cannot) shown as \\udxxx."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# The ids the service makes up: a random prefix per process and model, '-', a counter. Reserved: a caller's id of this
# form could be the next one made up, and the request given it refused as a conflict (the serving probe: a client
# that sent the next five ids of a response's prefix had the next five requests of everyone else answered 409).
MADE_UP_PREFIX_CHARS = 20
MADE_UP_ID = re.compile(rf"[0-9a-f]{{{MADE_UP_PREFIX_CHARS}}}-[0-9]+")
MADE_UP_FORM = (f"{{!r}} has the form of the ids the service makes up ({MADE_UP_PREFIX_CHARS} hex digits, '-', a number), which are its own: "
                "give an id of another form, or none")


def event_id_of(value: Any) -> tuple[str | None, str | None]:
    """An event id sent by a caller, spelled as landing spells an id column (text stripped, an integer as its digits), or
    why it is not one."""
    if isinstance(value, float) and value.is_integer():  # JSON has one number type: 7.0 is the integer 7
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_INTEGER_ID:
            return None, f"an integer id must lie within ±{MAX_INTEGER_ID} (JSON's exact integers)"
        value = str(value)
    if not isinstance(value, str):
        return None, f"expected a string or an integer, got {type(value).__name__}"
    text = value.strip()
    if not text:
        return None, "expected a non-empty string"
    if len(text) > MAX_ID_LENGTH or text_problem(text):
        return None, f"not an event id (valid UTF-8 without NUL, at most {MAX_ID_LENGTH} characters)"
    return text, None


def text_problem(value: str) -> str | None:
    """Strings with lone surrogates or a NUL cannot be stored; they must be refused before the event log sees them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8 text"
    return NUL_PROBLEM if NUL in value else None


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
        return None, not_a_number(value), "value_error"
    return number, None, ""


def _category_of_number(value: int | float) -> tuple[str | None, str | None, str]:
    """A number sent for a categorical feature, spelled as ingestion spells it (integral values lose '.0')."""
    number, problem, kind = check_number(value)
    if number is None:
        return None, problem, kind
    return (str(int(number)) if number.is_integer() and abs(number) < 2**53 else str(number)), None, ""


def check_category(value: Any) -> tuple[str | None, str | None, str]:
    """A JSON value for a categorical column (a feature, a class label) as landing spells it, else why not (and its kind)."""
    if value is None:
        return None, None, ""
    if isinstance(value, bool):  # a boolean column lands as "True" / "False": JSON true is that category
        return str(value), None, ""
    if isinstance(value, (int, float)):
        return _category_of_number(value)
    if not isinstance(value, str):
        return None, f"expected a string, a number, a boolean or null, got {type(value).__name__}", "type_error"
    text = value.strip()
    if len(text) > MAX_TEXT_LENGTH:
        return None, f"longer than {MAX_TEXT_LENGTH} characters", "value_error"
    problem = text_problem(text)
    if problem:
        return None, problem, "value_error"
    return text or None, None, ""


def _plainly_valid(value: Any, check: Any) -> bool:
    """The common case, decided without the full checks: a finite float, or short ASCII text (which is valid UTF-8)."""
    if check is check_category:
        return type(value) is str and len(value) <= MAX_TEXT_LENGTH and value.isascii() and NUL not in value
    return type(value) is float and value - value == 0.0


# Why a request may not carry the spec's time column (or its time_offset column when that is not a feature): a served
# event's time is set by the service, and a value sent for it would be silently unused.
KEY_FIELD_TIME = "the spec's time_column: a served event's time is when it is served"
KEY_FIELD_OFFSET = "the spec's time_offset column: a served event's time is when it is served"
KEY_FIELD_LABEL = "the spec's label: a served event's label comes back through /feedback"
KEY_FIELD_HISTORY = "a history feature: serving computes it from the event log"


def reserved_fields(spec: DatasetSpec) -> dict[str, str]:
    """Fields a request may not carry, with why: refused whatever MLPLATFORM_SERVE_UNKNOWN_FIELDS says (ignored, a label
    sent inline was lost without a word)."""
    reserved = {spec.label: KEY_FIELD_LABEL, **({spec.time_column: KEY_FIELD_TIME} if spec.time_column else {})}
    if spec.time_offset is not None and spec.time_offset.column not in spec.features:
        reserved[spec.time_offset.column] = KEY_FIELD_OFFSET
    reserved.update(dict.fromkeys([*spec.history_numeric, *spec.history_categorical], KEY_FIELD_HISTORY))
    return reserved


class RecordCodec:
    """Validates JSON records for one spec and turns them into the feature matrix of one model version."""

    def __init__(self, spec: DatasetSpec, predictor: Predictor, refuse_unknown: bool = True) -> None:
        """`refuse_unknown`: a field that is neither a feature nor a column the spec drops is an error (else ignored, like dropped columns)."""
        transformer = predictor.transformer
        mismatch = spec_mismatch(predictor, spec)
        if mismatch:
            raise ModelMismatch(mismatch)
        self.features = list(spec.features)
        self.history = list(transformer.history)  # filled by serving from its history state, never sent
        self._checks = {name: (check_number if name in spec.numeric_features else check_category) for name in self.features}
        self._dropped = frozenset(spec.drop)
        self._optional = frozenset(spec.optional)
        self._keys = reserved_fields(spec)
        self._refuse_unknown = refuse_unknown
        self.numeric = list(transformer.numeric)
        self.categorical = list(transformer.categorical)
        self.crosses = list(transformer.crosses)
        self.cross_names = transformer.cross_names
        self.coded_names = [*self.categorical, *self.cross_names]  # the columns after the numeric ones, in the matrix's order
        self.codes = {name: {c: float(i) for i, c in enumerate(transformer.categories[name])} for name in self.coded_names}
        self.spellings = {name: transformer.spellings(name) for name in self.categorical}  # the transformer's rule for `true` vs "True"
        self.width = len(transformer.output_columns)

    def check(self, records: list[Any], loc: tuple[str | int, ...]) -> tuple[list[dict[str, Any]], list[FieldError]]:
        """Clean records (floats, stripped text, None for missing; keys in spec feature order) or the field-level errors
        found, the first MAX_FIELD_ERRORS of them (the answer shows no more: a 4 kB batch of 1,000 empty records built
        13,000 errors, 36 ms on the event loop, the serving probe).

        `loc` prefixes error locations: ("body",) for one record, ("body", "records") for a batch.
        """
        clean: list[dict[str, Any]] = []
        errors: list[FieldError] = []
        batch = len(loc) > 1
        for i, record in enumerate(records):
            if len(errors) >= MAX_FIELD_ERRORS:
                break
            where = (*loc, i) if batch else loc
            if not isinstance(record, dict):
                errors.append(FieldError(where, f"expected an object with the features {self.features}, got {type(record).__name__}", "type_error"))
                continue
            row: dict[str, Any] = {}
            for name, check in self._checks.items():
                if name not in record:
                    if name in self._optional:  # left out: missing, as in a file without the column
                        row[name] = None
                    else:
                        errors.append(FieldError((*where, name), "field required", "missing"))
                    continue
                value = record[name]
                if _plainly_valid(value, check):
                    row[name] = (value.strip() or None) if check is check_category else value
                    continue
                value, problem, kind = check(value)
                if problem:
                    errors.append(FieldError((*where, name), f"{name}: {problem}", kind))
                row[name] = value
            for name in record if len(record) > len(row) else ():  # more keys than features present: some are not features
                if name not in self._checks and name not in self._dropped and (self._refuse_unknown or name in self._keys):
                    why = self._keys.get(name, "not a feature of the dataset spec")
                    errors.append(FieldError((*where, str(name)[:64]), f"extra field not permitted ({why})", "extra_forbidden"))
            clean.append(row)
        return clean, errors

    def encode(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, int]]:
        """The model's input matrix (category codes as LightGBM's pandas path uses them) and unseen categories per column.

        Values go into one flat list and become an array in one call: per-column arrays cost more than the trees for one row.
        Unseen categories are found in each row's list of codes (a scan in C), not with array operations, which cost a
        one-row request more than the scan.
        """
        nan, unseen_code, coded_names = np.nan, _UNSEEN, self.coded_names
        values: list[float] = []
        unseen: dict[str, int] = {}
        for row in rows:
            values += [nan if row[name] is None else row[name] for name in self.numeric]
            coded = [nan if row[name] is None else self.codes[name].get(row[name], unseen_code) for name in self.categorical]
            if unseen_code in coded:  # perhaps a known category spelled as another format spells it: before the crosses use it
                row = {**row, **{name: self.spellings[name].get(spelling_key(row[name]), row[name])
                                 for name, code in zip(self.categorical, coded) if code == unseen_code}}
                coded = [nan if row[name] is None else self.codes[name].get(row[name], unseen_code) for name in self.categorical]
            for (a, b), name in zip(self.crosses, self.cross_names):
                left, right = row[a], row[b]
                coded.append(nan if left is None or right is None else self.codes[name].get(f"{left}{CROSS_SEPARATOR}{right}", unseen_code))
            if unseen_code in coded:
                for i, code in enumerate(coded):
                    if code == unseen_code:
                        unseen[coded_names[i]] = unseen.get(coded_names[i], 0) + 1
                        coded[i] = nan
            values += coded
        return np.array(values, dtype=np.float64).reshape(len(rows), self.width), unseen
