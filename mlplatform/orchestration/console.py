"""The `console` logger of a run a command executes here (`mlplatform materialize`, the demo): Dagster's colored console,
less the records of a step or run a signal stopped. The command says that itself, in one line; Dagster printed the
interrupt's stack twice, 80 lines, when Ctrl-C came between two steps. The run's event log keeps every record."""

import logging

import dagster as dg
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR
from dagster._loggers import colored_console_logger

from mlplatform.orchestration.interrupts import INTERRUPT_ERRORS, await_cancel_mark


class WithoutInterrupts(logging.Filter):
    """Leaves out a record whose Dagster event failed, or was retried or canceled, because of an interrupt, once the
    command's stop watcher has marked the run canceling (`await_cancel_mark`): the record of an interrupted step is the
    last event before Dagster ends the run, canceled only if it is marked by then."""

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}
        event = meta.get("dagster_event")
        error = getattr(event.event_specific_data, "error", None) if event is not None else None
        if error is None or not any(e.cls_name in INTERRUPT_ERRORS for e in (error, error.cause) if e is not None):
            return True
        await_cancel_mark()
        return False


@dg.logger(colored_console_logger.config_schema, description="Dagster's colored console, less what a signal stopped (the command says it).")
def console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = colored_console_logger.logger_fn(init_context)
    logger.addFilter(WithoutInterrupts())
    return logger
