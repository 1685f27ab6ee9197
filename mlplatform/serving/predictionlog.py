"""The durable prediction log: every answered prediction becomes an event before its response leaves.

Requests hand their rows over and await the commit that holds them (group commit), so the log costs one commit
per group instead of one per request, and an acknowledged prediction survives a kill -9 of the server (WAL commit).
The rows of the requests handled in one turn of the event loop form a group, committed at the end of that turn on
the loop itself when the event log can commit without waiting (`EventStore.append_served_now`: the embedded log
with its write lock free). Otherwise — the lock held by a landing run, PostgreSQL, or `serve_log_on_loop` off — the
group goes to the writer thread, which waits for the lock and gathers what queues up meanwhile into its next
commit. The thread hand-over (a wake-up of another thread, then of the loop) was most of the log's cost per
request; the thread also checkpoints what the loop committed, beside its commits, except one checkpoint in
CHECKPOINTS_PER_WAL_RESTART, for which the loop holds its commits so that the WAL restarts: only those requests wait
for a checkpoint (its two fsyncs were one source of serving's tail latency).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlplatform.stores.eventlog import SERVING_SOURCE, EventIdsTaken, EventStore
from mlplatform.serving.metrics import ModelMetrics
log = logging.getLogger(__name__)
CHECKPOINT_EVERY_COMMITS = 150  # a commit of a few served rows writes ~7 WAL pages: about SQLite's 1000-page checkpoint
# One checkpoint in this many holds the loop's commits until it is done, so it copies the whole WAL and SQLite restarts
# the file (about 8 × 1000 pages, 32 MiB, at most between restarts); the others run beside the loop's commits.
CHECKPOINTS_PER_WAL_RESTART = 8
_CHECKPOINT = object()  # queued for the writer thread: checkpoint what the loop committed, beside its commits
_RESTART = object()  # the same with the loop holding its commits until it is done: the WAL restarts


class PredictionLogError(RuntimeError):
    """The predictions could not be committed; their request must not be acknowledged."""


@dataclass
class _Pending:
    rows: list[tuple[Any, ...]]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop
    handed_over: float = field(default_factory=time.perf_counter)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class PredictionLog:
    """Group-commit writer of served predictions into the event log (rows in `EventStore.append_served` order)."""

    def __init__(self, events: EventStore, metrics: ModelMetrics, linger_s: float, max_rows: int, on_loop: bool) -> None:
        self._events = events
        self._metrics = metrics
        self._linger_s = linger_s
        self._max_rows = max_rows
        self._on_loop = on_loop and not linger_s  # a linger asks for bigger groups than one turn of the loop gathers
        self._gathered: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}  # this turn's requests, per event loop
        self._loop_commits = 0
        self._checkpointing = threading.Event()  # set by the loop for a restarting checkpoint, cleared by the writer thread once done: the loop does not commit meanwhile
        self._queue: queue.SimpleQueue[_Pending | object | None] = queue.SimpleQueue()
        self.failure: str | None = None  # why the last commit (or probe) failed; None once one succeeds
        self._committed = 0  # rows this log committed (see `others_in`)
        self._failed_commits = 0  # in a row: the first is logged with its traceback, the next ones in a line each
        # Held from a commit's start until it is counted in `_committed`, and while `others_in` reads the log's count:
        # so the count never holds a row of ours not counted yet.
        self._commit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def probe(self) -> str | None:
        """Commit one write transaction that changes nothing to the event log's file; None if it could, else why not (also kept
        in `failure`). Readiness asks this after a failed commit: only a write shows whether predictions can be logged again."""
        problem = self._events.probe_writable()
        self.failure = None if problem is None else f"the prediction log cannot write to the event log: {problem}"
        return self.failure

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join()

    def others_in(self, count: Callable[[], int]) -> int:
        """Of the log's events as `count` reads them, those other writers filed (landing, other serving processes): no
        commit of ours runs meanwhile, so every row of ours in the count is counted as committed, and no other is."""
        with self._commit_lock:
            return count() - self._committed

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Return once `rows` are committed; raise PredictionLogError if they could not be, EventIdsTaken (nothing of `rows`
        written, the other requests of its group committed) if an id of theirs already names an event."""
        loop = asyncio.get_running_loop()
        pending = _Pending(rows, loop.create_future(), loop)
        self._metrics.log_pending.inc(len(rows))
        if not self._on_loop or self._checkpointing.is_set():
            self._queue.put(pending)
        elif loop in self._gathered:
            self._gathered[loop].append(pending)
        else:
            self._gathered[loop] = [pending]
            loop.call_soon(self._commit_on_loop, loop)  # after the requests already in this turn: they join the group
        await pending.future

    def _commit_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """This turn's requests, in groups of about `max_rows` rows; from the first group that would have to wait for the
        write lock on, the writer thread commits them, off the loop."""
        waiting = self._gathered.pop(loop)
        while waiting:
            group = [waiting.pop(0)]
            size = len(group[0].rows)
            while waiting and size + len(waiting[0].rows) <= self._max_rows:
                size += len(waiting[0].rows)
                group.append(waiting.pop(0))
            if not self._commit_now(group, size, loop):
                for pending in group + waiting:
                    self._queue.put(pending)
                return

    def _commit_now(self, group: list[_Pending], size: int, loop: asyncio.AbstractEventLoop) -> bool:
        """Commit `group` on the loop and settle it; False, with nothing settled, if that would mean waiting (for the
        event log's write lock, or for `others_in`'s count)."""
        if not self._commit_lock.acquire(blocking=False):
            return False
        try:
            committed = self._events.append_served_now([row for pending in group for row in pending.rows], SERVING_SOURCE)
            if committed is not None:
                self._committed += size
        except Exception as exc:  # as on the writer thread: the waiting requests get the failure
            self._report(group, size, exc, loop)
            return True
        finally:
            self._commit_lock.release()
        if committed is None:
            return False
        self._report(group, size, None, loop)
        self._loop_commits += 1
        if self._loop_commits % (CHECKPOINT_EVERY_COMMITS * CHECKPOINTS_PER_WAL_RESTART) == 0:
            self._checkpointing.set()
            self._queue.put(_RESTART)
        elif self._loop_commits % CHECKPOINT_EVERY_COMMITS == 0:
            self._queue.put(_CHECKPOINT)
        return True

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            if first is _CHECKPOINT or first is _RESTART:
                self._checkpoint(first is _RESTART)
                continue
            assert isinstance(first, _Pending)
            group, size = [first], len(first.rows)
            checkpoint: object | None = None  # asked for while this group gathered: done right after its commit, so the loop commits again
            deadline = time.monotonic() + self._linger_s
            while size < self._max_rows:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) if self._linger_s else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                if isinstance(item, _Pending):
                    group.append(item)
                    size += len(item.rows)
                elif checkpoint is not _RESTART:
                    checkpoint = item
            self._commit(group, size)
            if checkpoint is not None:
                self._checkpoint(checkpoint is _RESTART)

    def _checkpoint(self, restart: bool) -> None:
        """Copy what the WAL holds into the database file, beside the loop's commits; or, with the loop holding its commits
        (`restart`), all of it, so the next writer starts the WAL again from the top (SQLite restarts a fully copied WAL)
        and it stays bounded under a steady stream of commits. Only those requests wait for a checkpoint."""
        try:
            self._events.checkpoint()
        except Exception:  # a later checkpoint (or any writer's) catches up; predictions are already durable in the WAL
            log.exception("prediction log: could not checkpoint the event log")
        finally:
            if restart:
                self._checkpointing.clear()

    def _commit(self, group: list[_Pending], size: int) -> None:
        error: Exception | None = None
        try:
            with self._commit_lock:
                self._events.append_served([row for pending in group for row in pending.rows], SERVING_SOURCE)
                self._committed += size
        except EventIdsTaken as exc:
            if len(group) > 1:  # a caller's id another process served first: each request alone, so only the one holding it fails
                for pending in group:
                    self._commit([pending], len(pending.rows))
                return
            error = exc
        except Exception as exc:  # any failure must reach the waiting requests, not kill the writer
            error = exc
        self._report(group, size, error)

    def _report(self, group: list[_Pending], size: int, failure: Exception | None, here: asyncio.AbstractEventLoop | None = None) -> None:
        """Count the commit (or its failure) and settle the requests' futures: directly on `here`, the loop this runs on,
        with one wake-up per other loop."""
        error: BaseException | None = None
        if isinstance(failure, EventIdsTaken):  # the request's own fault, not the log's: readiness and the error count stay
            error = failure
        elif failure is not None:  # an outage fails every request: 619 tracebacks for 619 503s buried the console (the production probe)
            self._failed_commits += 1
            if self._failed_commits == 1:
                log.error("prediction log: could not commit %d predictions", size, exc_info=failure)
            else:
                log.error("prediction log: could not commit %d predictions, %d commits in a row: %s: %s", size, self._failed_commits,
                          type(failure).__name__, str(failure).splitlines()[0] if str(failure) else "")
            self._metrics.errors.labels(kind="prediction_log").inc()
            error = PredictionLogError(f"the prediction log could not record the predictions: {failure}")
        self.failure = str(error) if isinstance(error, PredictionLogError) else None  # a taken id: the log itself answered
        committed = time.perf_counter()
        self._metrics.log_pending.dec(size)
        if error is None:
            if self._failed_commits:
                log.warning("prediction log: commits succeed again, after %d that failed", self._failed_commits)
                self._failed_commits = 0
            self._metrics.log_rows.inc(size)
            self._metrics.log_commits.inc()
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for pending in group:
            self._metrics.log_lag.observe(committed - pending.handed_over)
            by_loop.setdefault(pending.loop, []).append(pending.future)
        for loop, futures in by_loop.items():
            if loop is here:
                _settle(futures, error)
                continue
            try:
                loop.call_soon_threadsafe(_settle, futures, error)  # one wake-up per group, not per request
            except RuntimeError:
                log.warning("prediction log: an event loop closed before its commit was reported")
