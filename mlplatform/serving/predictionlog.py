"""The durable prediction log: every answered prediction becomes an event before its response leaves.

One writer thread owns the event log; requests hand their rows over and await the commit that holds them
(group commit). While one transaction commits, the next requests queue up and share the next one, so the
log costs one SQLite commit per group instead of one per request, and an acknowledged prediction survives
a kill -9 of the server (WAL commit).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from mlplatform.stores.eventlog import SERVING_SOURCE, EventStore
from mlplatform.serving.metrics import ModelMetrics
log = logging.getLogger(__name__)


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

    def __init__(self, events: EventStore, metrics: ModelMetrics, linger_s: float, max_rows: int) -> None:
        self._events = events
        self._metrics = metrics
        self._linger_s = linger_s
        self._max_rows = max_rows
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self.failure: str | None = None  # why the last commit (or probe) failed; None once one succeeds
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

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Return once `rows` are committed; raise PredictionLogError if they could not be."""
        loop = asyncio.get_running_loop()
        pending = _Pending(rows, loop.create_future(), loop)
        self._metrics.log_pending.inc(len(rows))
        self._queue.put(pending)
        await pending.future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group, size = [first], len(first.rows)
            deadline = time.monotonic() + self._linger_s
            while size < self._max_rows:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) if self._linger_s else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                group.append(item)
                size += len(item.rows)
            self._commit(group, size)

    def _commit(self, group: list[_Pending], size: int) -> None:
        error: BaseException | None = None
        try:
            self._events.append_served([row for pending in group for row in pending.rows], SERVING_SOURCE)
        except Exception as exc:  # any failure must reach the waiting requests, not kill the writer
            log.exception("prediction log: could not commit %d predictions", size)
            self._metrics.errors.labels(kind="prediction_log").inc()
            error = PredictionLogError(f"the prediction log could not record the predictions: {exc}")
        self.failure = None if error is None else str(error)
        committed = time.perf_counter()
        self._metrics.log_pending.dec(size)
        if error is None:
            self._metrics.log_rows.inc(size)
            self._metrics.log_commits.inc()
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for pending in group:
            self._metrics.log_lag.observe(committed - pending.handed_over)
            by_loop.setdefault(pending.loop, []).append(pending.future)
        for loop, futures in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, futures, error)  # one wake-up per group, not per request
            except RuntimeError:
                log.warning("prediction log: an event loop closed before its commit was reported")
