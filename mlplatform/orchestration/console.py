"""The `console` logger of a run a command executes here (`mlplatform materialize`, the demo): Dagster's colored console,
less the records of a step or run a signal stopped, or that failed on the platform's own finding. The command says those
itself, in one line; Dagster printed the interrupt's stack twice, 80 lines, when Ctrl-C came between two steps, and a
finding such as "only 0 labelled events" with two stack traces. The run's event log keeps every record."""

import logging
from typing import Any

import dagster as dg
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR
from dagster._loggers import colored_console_logger

from mlplatform.orchestration.errors import BLOCKING_CHECK_FAILED, ErrorInfo
from mlplatform.orchestration.interrupts import INTERRUPT_ERRORS, await_cancel_mark

# What a step raises for what it found (too few labelled events, a window of one class, a stack stopping: its description
# says it whole), and a blocking check's failure (the command names the check and its finding).
FINDINGS = (dg.Failure.__name__, BLOCKING_CHECK_FAILED)
NOT_RUN = "Dependencies for step "  # Dagster's line for each step left out after one failed
FAILURES = (dg.DagsterEventType.STEP_FAILURE.value, dg.DagsterEventType.RUN_FAILURE.value)


def _meta(record: logging.LogRecord) -> dict[str, Any]:
    return getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}


def _error(record: logging.LogRecord) -> ErrorInfo | None:
    """The serialized error of the Dagster event a record carries, or None."""
    event = _meta(record).get("dagster_event")
    return getattr(event.event_specific_data, "error", None) if event is not None else None


class WithoutInterrupts(logging.Filter):
    """Leaves out a record whose Dagster event failed, or was retried or canceled, because of an interrupt, once the
    command's stop watcher has marked the run canceling (`await_cancel_mark`): the record of an interrupted step is the
    last event before Dagster ends the run, canceled only if it is marked by then."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = _error(record)
        if error is None or not any(e.cls_name in INTERRUPT_ERRORS for e in (error, error.cause) if e is not None):
            return True
        await_cancel_mark()
        return False


class WithoutFindings(logging.Filter):
    """Leaves out the records of a step, or of its run, that failed on a finding (FINDINGS: the command prints it), and
    Dagster's line for each step that therefore did not run (the command names the one that failed). Any other error
    keeps its stack trace, and after it the lines of the steps it left out: that is a fault to report, and what it
    stopped is part of it. One filter per run's logger."""

    def __init__(self) -> None:
        super().__init__()
        self.faulted = False  # a step or the run failed on an error that is no finding

    def filter(self, record: logging.LogRecord) -> bool:
        error = _error(record)
        if error is not None:
            failed = _meta(record)["dagster_event"].event_type_value in FAILURES  # a retry's error is no fault when the retry succeeds (the review)
            self.faulted = self.faulted or failed and error.cls_name not in FINDINGS
            return error.cls_name not in FINDINGS
        return self.faulted or not str(_meta(record).get("orig_message", "")).startswith(NOT_RUN)


@dg.logger(colored_console_logger.config_schema, description="Dagster's colored console, less what a signal stopped or a step found (the command says it).")
def console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = colored_console_logger.logger_fn(init_context)
    logger.addFilter(WithoutInterrupts())
    logger.addFilter(WithoutFindings())
    return logger
