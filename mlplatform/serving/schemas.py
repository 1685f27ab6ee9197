"""What the prediction service's OpenAPI document says: response models and request-body schemas built from a dataset spec.

Bodies are parsed by hand (see routes.py), so these schemas are not what validates a request; they tell clients
and fuzzers the shape the hand-written checks accept, and the tests hold the two to agreement.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mlplatform.domain.features import ARITHMETIC_LIMIT
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_ID, MAX_ID_LENGTH, MAX_TEXT_LENGTH
from mlplatform.serving.records import MADE_UP_ID, MADE_UP_PREFIX_CHARS, MAX_INTEGER_ID, check_category, reserved_fields

JSON = "application/json"


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    detail: str | list[FieldProblem]


class Prediction(BaseModel):
    event_id: str
    model_version: int
    prediction: str | float
    probability: float | None = None
    probabilities: dict[str, float] | None = None


class PredictionBatch(BaseModel):
    predictions: list[Prediction]


class FeedbackResult(BaseModel):
    event_id: str
    label: str | float
    status: str


class Health(BaseModel):
    status: str


class OnlineCorrection(BaseModel):
    enabled: bool
    updates: int


class Readiness(BaseModel):
    ready: bool
    model_version: int | None = None
    detail: str | None = None
    online_correction: OnlineCorrection | None = None
    spec_note: str | None = None  # the spec file changed in a way a running serve does not take: restart it


class ServiceReadiness(Readiness):
    """Every model's readiness; with a single model its fields are also at the top level (as before there were several)."""

    models: dict[str, Readiness]
    process: int  # the answering process's id: with several serving processes, which one this is


class ReloadResult(BaseModel):
    model_version: int | None
    changed: bool
    error: str | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": Problem} for status in statuses}


# An event id as a caller may give it: text with something in it and no NUL (validation.NUL_PROBLEM), or an integer JSON
# reads exactly (spelled as its digits).
EVENT_ID_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"},
                             {"type": "integer", "minimum": -MAX_INTEGER_ID, "maximum": MAX_INTEGER_ID}]}


def record_schema(spec: DatasetSpec, ignore_unknown: bool) -> dict[str, Any]:
    """JSON schema of one record: every required feature present (an optional one may be left out), null for missing; optionally the event's id (under the spec's
    id_column, or event_id); the spec's dropped columns allowed (and ignored), other fields only when the service
    ignores unknown fields."""
    number = {"anyOf": [{"type": "number"}, {"type": "null"}]}
    text = {"anyOf": [{"type": "string", "maxLength": MAX_TEXT_LENGTH, "pattern": r"^[^\u0000]*$"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
    properties: dict[str, Any] = {name: number if name in spec.numeric_features else text for name in spec.features}
    properties.update({name: {"description": "a column the dataset spec drops: accepted and ignored"} for name in spec.drop})
    caller_text = {**EVENT_ID_SCHEMA["anyOf"][0], "not": {"pattern": rf"^\s*{MADE_UP_ID.pattern}\s*$"}}  # the service's own ids
    properties[spec.id_column or EVENT_ID] = {"anyOf": [caller_text, *EVENT_ID_SCHEMA["anyOf"][1:], {"type": "null"}],
                                              "description": "the event's id (optional; null or absent: the service makes one up, "
                                                             f"of a form a caller's id may not have: {MADE_UP_PREFIX_CHARS} hex digits, '-', a number)"}
    properties.update({name: {"not": {}, "description": f"refused: {why}"} for name, why in reserved_fields(spec).items()})
    return {"type": "object", "properties": properties, "required": spec.required_features, "additionalProperties": ignore_unknown}


def predict_body_schema(spec: DatasetSpec, max_rows: int, ignore_unknown: bool) -> dict[str, Any]:
    record = record_schema(spec, ignore_unknown)
    batch = {
        "type": "object",
        "properties": {"records": {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}},
        "required": ["records"],
        "additionalProperties": False,
    }
    return {"oneOf": [record, batch]}


def _json_numbers(category: str) -> list[Any]:
    """The booleans and numbers that serving reads as `category`, as landing spells them ("True"; "3" for 3 and 3.0)."""
    flags = [flag for flag in (True, False) if str(flag) == category]
    try:
        number = float(category)
    except ValueError:
        return flags
    as_json = int(number) if number.is_integer() and abs(number) < MAX_INTEGER_ID else number
    return flags + ([as_json] if check_category(as_json)[0] == category else [])


def _regex_literal(text: str) -> str:
    """`text` matched literally by an ECMA-262 regex as well as Python's (re.escape's escapes are not all valid ECMA)."""
    return "".join("\\" + c if c in "\\^$.|?*+()[]{}/" else c for c in text)


def label_schema(spec: DatasetSpec) -> dict[str, Any]:
    """A label as serving reads it: for regression a number; else a class (label_map's names too), the text padded or
    not, or the boolean or number landing spells as that class."""
    if not spec.is_classification:
        return {"type": "number", "minimum": -ARITHMETIC_LIMIT, "maximum": ARITHMETIC_LIMIT}
    names = [*(spec.classes or []), *spec.label_map]
    text = {"type": "string", "pattern": f"^\\s*(?:{'|'.join(_regex_literal(name) for name in names)})\\s*$"}
    others = [value for name in names for value in _json_numbers(name)]
    return {"anyOf": [text, {"enum": others}]} if others else text


def feedback_body_schema(spec: DatasetSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"event_id": EVENT_ID_SCHEMA, "label": label_schema(spec)},
        "required": ["event_id", "label"],
        "additionalProperties": False,
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}
