"""What a failed step actually failed on, read out of Dagster's serialized errors: for alerts and for the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional, Protocol


class ErrorInfo(Protocol):
    """The shape of Dagster's serialized step error: message, exception class and the exception it came from."""

    message: str
    cls_name: str | None
    cause: Optional["ErrorInfo"]


DAGSTER_ERRORS = ("Dagster", "RetryRequested")
BLOCKING_CHECK_FAILED = "DagsterAssetCheckFailedError"  # the class of a step's error when its blocking check failed: a finding, not a fault


def root_cause(error: ErrorInfo, whole: bool = False) -> str:
    """What actually went wrong: after retries the step error is Dagster's "Exceeded max_retries"; the
    platform's own exception (which names the file or store) is the first cause that is not Dagster's. Its first
    line (an alert's one-line description), or `whole` (a terminal: pydantic lists each field on a line of its own)."""
    outer = _first_line(error.message)
    cause: ErrorInfo | None = error
    while cause is not None and (cause.cls_name or "").startswith(DAGSTER_ERRORS):
        cause = cause.cause
    found = error if cause is None else cause
    text = found.message.strip() if whole else _first_line(found.message)
    return text if found is error else f"{text} ({outer})"


def error_classes(error: ErrorInfo) -> Iterator[str]:
    """The class name of `error` and of each exception it came from."""
    cause: ErrorInfo | None = error
    while cause is not None:
        if cause.cls_name:
            yield cause.cls_name
        cause = cause.cause


def _first_line(message: str) -> str:
    return (message.strip().splitlines() or [""])[0]
