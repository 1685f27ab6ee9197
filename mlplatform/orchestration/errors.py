"""What a failed step actually failed on, read out of Dagster's serialized errors: for alerts and for the CLI."""

from __future__ import annotations

from typing import Optional, Protocol


class ErrorInfo(Protocol):
    """The shape of Dagster's serialized step error: message, exception class and the exception it came from."""

    message: str
    cls_name: str | None
    cause: Optional["ErrorInfo"]


DAGSTER_ERRORS = ("Dagster", "RetryRequested")


def root_cause(error: ErrorInfo) -> str:
    """What actually went wrong: after retries the step error is Dagster's "Exceeded max_retries"; the
    platform's own exception (which names the file or store) is the first cause that is not Dagster's."""
    outer = error.message.strip().splitlines()[0]
    cause: ErrorInfo | None = error
    while cause is not None and (cause.cls_name or "").startswith(DAGSTER_ERRORS):
        cause = cause.cause
    if cause is None or cause is error:
        return outer
    return f"{cause.message.strip().splitlines()[0]} ({outer})"
