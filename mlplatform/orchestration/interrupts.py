"""Ctrl-C and SIGTERM stop a run executing in this process (`mlplatform materialize`, the demo), as they stop a command.

Dagster's in-process execution takes both as an interrupt of the running step and retries a step interrupted under a
retry policy (`op_execution_error_boundary`): a Ctrl-C was retried away and the run went on to succeed, and a Terminate
from the UI (SIGTERM to the command, the run's worker) did the same. Dagster's own handler is left in place; the signal
is seen through Python's wakeup fd, which every signal writes to, whatever handles it. Imported by the CLI before
anything heavy: Dagster is imported where it is used.
"""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

STOP_GRACE_SECONDS = 20.0  # how long an interrupted step has to unwind before the command exits anyway
SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM (Terminate in the Dagster UI, or `kill`)"}
POKE = signal.SIGUSR1  # sent by the stop watcher to the main thread, whose handler does nothing: a blocking call there ends
# What an interrupt raises, by class name: the cause of a step retried because of it, an exception only printed from a
# destructor, a console record of what it stopped.
INTERRUPT_ERRORS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


class Stopped(RuntimeError):
    """The command was told to stop and its run ended without succeeding (canceled, or failed where Dagster could not
    cancel it)."""

    def __init__(self, message: str, signum: int, run_id: str | None) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # as a shell reports a command a signal ended
        self.run_id = run_id


def _interrupted_retries(instance: dg.DagsterInstance, run_id: str) -> int:
    """The run's steps put up for retry because an interrupt stopped them: a retry for any other reason is no sign."""
    from dagster._core.events import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records
    errors = [record.event_log_entry.dagster_event.event_specific_data.error for record in records  # type: ignore[union-attr]
              if record.event_log_entry.dagster_event is not None]
    return sum(1 for e in errors if e is not None and e.cause is not None and e.cause.cls_name in INTERRUPT_ERRORS)


def _settle(instance: dg.DagsterInstance, run: dg.DagsterRun | None) -> dg.DagsterRun | None:
    """After the execution returned, a run still CANCELING gets its real end: the one its last run event set (the mark of
    canceling came after it, and overwrote it), or canceled (it ended on the interrupt before Dagster could say so)."""
    import dagster as dg
    from dagster._core.events import DagsterEventType

    if run is None or run.status != dg.DagsterRunStatus.CANCELING:
        return run
    ends = {DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED}
    last = instance.get_records_for_run(run.run_id, of_type=ends, limit=1, ascending=False).records
    if last and last[0].event_log_entry.dagster_event is not None:
        entry = last[0].event_log_entry  # its own time, not now: run durations and the landing sensor's back-off read it
        instance.run_storage.handle_run_event(run.run_id, entry.dagster_event, update_timestamp=datetime.fromtimestamp(entry.timestamp, timezone.utc))
    else:
        instance.report_run_canceled(run)
    return instance.get_run_by_id(run.run_id)


_marked = threading.Event()  # set while no stop watcher runs, and by one once it has marked the run it stops canceling
_marked.set()
_holding = [0]  # how many `uninterrupted` blocks hold signals now (the main thread's): the stop watcher's grace waits for them
_deferred: dict[str, int] = {}  # by run id, the signal a deferring `uninterrupted` block of the run held, for its next step


def await_cancel_mark() -> None:
    """Waits (at most STOP_GRACE_SECONDS) until the stop watcher has marked its run canceling, if one runs. Called as a
    step's interruption is recorded: Dagster decides right after whether the run ended canceled or failed, by that mark.
    The watcher marks it from its own thread, and under load the run ended first: a stopped run read failed, and was
    alerted and retried as one."""
    _marked.wait(STOP_GRACE_SECONDS)


def raise_deferred(run_id: str) -> None:
    """Raises the signal a deferring block held, as a step loads what an earlier step of its run handed over: the run
    stops before the step starts its work. (Dagster's own flag, set instead, was raised as the holding step stored its
    output, and its materialization was lost.)"""
    from dagster._core.errors import DagsterExecutionInterruptedError

    if _deferred.pop(run_id, None) is not None:  # only the run's own: a Celery worker's process goes on to other runs' steps
        raise DagsterExecutionInterruptedError("interrupted: a signal held until the step before had ended")


@contextmanager
def uninterrupted(defer: str | None = None) -> Iterator[Callable[[], None]]:
    """Code within a step that a signal (Ctrl-C, or a Terminate) must not break off anywhere: writes that go together, or
    LightGBM's training. The probe stopped an evaluation between its decision's tags and the alias move: the version read
    "promoted" while another stayed champion. The signal is held, and raised at the checkpoints the block calls (the
    callable it is given); once the block is done, there, or, given the id of the block's run as `defer`, as the run's
    next step loads its input (`raise_deferred`: the step ends, and is recorded, as it would have; after the last step the run ends as it
    would have, and a command says the signal came as its run ended). Held by handlers of its own, restored before it
    looks: Dagster's capture forgot a signal that came as it ended (the review: the run went on and succeeded). A run
    launcher that kills a worker after its grace still cuts a block that outlasts it."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    held: list[int] = []

    def checkpoint() -> None:
        if held:
            raise DagsterExecutionInterruptedError("interrupted: raised at a checkpoint of a block that holds signals")

    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's alone
        yield checkpoint
        return
    previous_int = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    previous_term = signal.signal(signal.SIGTERM, lambda signum, _frame: held.append(signum))
    _holding[0] += 1
    try:
        yield checkpoint
    except Exception as exc:  # the block failed after a signal came: an interrupt still, not an error to retry
        if held:
            raise DagsterExecutionInterruptedError(f"interrupted while a block that holds signals ran, which then failed: {exc}") from exc
        raise
    finally:
        _holding[0] -= 1
        try:
            signal.signal(signal.SIGINT, previous_int)  # from here on a signal meets the step's own handler
        finally:
            signal.signal(signal.SIGTERM, previous_term)
    if held and defer is not None:
        _deferred[defer] = held[0]
    elif held:
        raise DagsterExecutionInterruptedError("interrupted while a block that holds signals ran: raised once it was done")


@contextmanager
def stops_on_signal(instance: dg.DagsterInstance, what: str, find: Callable[[], dg.DagsterRun | None]) -> Iterator[None]:
    """Ctrl-C and SIGTERM stop the run `find` returns once it exists. The first signal interrupts its step (its cleanup
    runs) and marks the run canceling; once that step is up for retry, after STOP_GRACE_SECONDS, or on a second signal,
    the command says so, reports the run canceled and exits 128 + the signal. A run that ends on the interrupt by itself
    raises Stopped here, unless it succeeded (the signal came as it ended)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    received: list[int] = []
    done = threading.Event()
    ended = threading.Event()
    lost = threading.Event()
    previous_hook = sys.unraisablehook

    def unraisable(unraised: Any) -> None:
        """An interrupt raised in a __del__ or a weakref callback is only printed ("Exception ignored in"), and the run
        went on: the probe's Ctrl-C landed in SQLAlchemy's _collection_gced one time in four, and waited out the grace."""
        if type(unraised.exc_value).__name__ in INTERRUPT_ERRORS:
            lost.set()
        else:
            previous_hook(unraised)

    # The terminal, as it is now: while a run executes, Dagster sends this process's stderr to the run's compute log,
    # copied back by a `tail` child, and a message written there after a Ctrl-C (which reached that child too) was lost.
    try:
        terminal: int | None = os.dup(2)
    except OSError:  # no stderr at all
        terminal = None

    def abandon(signum: int, why: str) -> None:
        run = find()
        # Said first: a launcher terminating the run may kill this process any moment from now.
        said = f"{what}: stopped by {SIGNAL_NAMES[signum]}: {why}; run {run.run_id if run else '(not started)'} canceled\n"
        if terminal is not None:
            os.write(terminal, said.encode())
        if run is not None and not run.is_finished:
            instance.report_engine_event(f"Stopped by {SIGNAL_NAMES[signum]}: {why}.", run)
            instance.report_run_canceled(run)
        os._exit(128 + signum)

    def watch() -> None:
        deadline = math.inf
        resent = 0
        while not done.is_set():
            if select.select([reader], [], [], 0.1)[0]:
                for signum in (s for s in reader.recv(64) if s in SIGNAL_NAMES):
                    if resent:  # the lost signal, sent again below: no second one
                        resent -= 1
                        continue
                    if received:
                        abandon(received[0], "a second signal")
                    received.append(signum)
                    signal.pthread_kill(main, POKE)  # a blocking call on the main thread ends, and the handler runs
                    run = find()
                    if run is not None and not run.is_finished:
                        instance.report_run_canceling(run)  # so Dagster ends the run canceled, not failed
                    _marked.set()
                    deadline = time.monotonic() + STOP_GRACE_SECONDS
            if received and lost.is_set() and not ended.is_set():  # a body that ended is cleaning up: no signal of ours breaks that off
                lost.clear()
                resent += 1
                signal.raise_signal(received[0])  # taken by this thread (the main one holds it back), handled on the main one
                signal.pthread_kill(main, POKE)
            if received and not done.is_set():
                run = find()
                if run is not None and _interrupted_retries(instance, run.run_id):
                    abandon(received[0], "its interrupted step was to be retried")
                if _holding[0]:  # a stretch that is never cut: the grace counts from its end
                    deadline = time.monotonic() + STOP_GRACE_SECONDS
                if time.monotonic() > deadline:
                    abandon(received[0], f"its step did not stop within {STOP_GRACE_SECONDS:g} s")

    main = threading.main_thread().ident or 0
    watcher = threading.Thread(target=watch, name="stop-watch", daemon=True)
    previous_int, previous_term, previous_poke = (signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, POKE))
    previous_fd: int | None = None
    previous_mask: set[signal.Signals] | None = None
    late: list[int] = []
    interrupted = False
    try:  # set up within: a signal meanwhile (a KeyboardInterrupt) leaves none of it behind
        _marked.clear()
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C until Dagster's handler takes both
        sys.unraisablehook = unraisable
        signal.signal(POKE, lambda _signum, _frame: None)
        watcher.start()
        # The main thread holds SIGINT back, and so do the processes it starts meanwhile (a mask is inherited): a
        # terminal's Ctrl-C reaches its whole process group, and Dagster's compute-log `tail` and its watcher died of it,
        # printing tracebacks (or "Fatal Python error" while starting). The kernel gives the signal to the watcher, which
        # does not hold it back, pokes the main thread (POKE) out of any blocking call, and Python runs the handler there.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        except KeyboardInterrupt:  # before the run began, or between its steps
            interrupted = True
    finally:
        # A signal now would break off this cleanup: it is only noted (a Python handler runs on the main thread, whichever
        # thread the kernel gave the signal to; a mask of the main thread's alone held nothing back). One still pending
        # as the handlers change is raised first (the review: it left the watcher running, which killed the command).
        for _ in range(3):
            try:
                signal.signal(signal.SIGINT, lambda signum, _frame: late.append(signum))
                signal.signal(signal.SIGTERM, lambda signum, _frame: late.append(signum))
                break
            except KeyboardInterrupt:
                late.append(signal.SIGINT)
        ended.set()
        _marked.set()
        if previous_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # one held back by every thread comes now, and is noted
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
        sys.unraisablehook = previous_hook
        _deferred.clear()  # held for a step its run did not have
        done.set()
        writer.send(b"\0")  # no signal's number: wakes the watcher from its wait at once
        if watcher.ident is not None:
            watcher.join()
        if not received:  # one the watcher had no time to read, or one that came during this cleanup
            unread = [s for s in reader.recv(64) if s in SIGNAL_NAMES] if select.select([reader], [], [], 0)[0] else []
            received += (unread or late)[:1]
        reader.close()
        writer.close()
        if terminal is not None:
            os.close(terminal)
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(POKE, previous_poke)
    if not (received or interrupted):
        return
    import dagster as dg

    signum = received[0] if received else signal.SIGINT
    run = _settle(instance, find())
    if run is not None and run.status == dg.DagsterRunStatus.SUCCESS:
        print(f"{what}: {SIGNAL_NAMES[signum]} came as run {run.run_id} ended: it succeeded", file=sys.stderr, flush=True)
        return
    end = "canceled" if run is None else run.status.value.lower()
    raise Stopped(f"stopped by {SIGNAL_NAMES[signum]}: run {run.run_id if run else '(not started)'} {end}", signum, run.run_id if run else None)
