"""Shadow challenger: score the registry's `@challenger` beside `@champion` on live traffic, off the response path.

After a request is answered (and its events committed), its event ids, the rows the champion scored and the
champion's predictions go on a bounded queue; nothing else happens on the request path. One background thread
keeps the challenger loaded (it follows the alias like the champion watcher does), scores what the queue holds
in batches and logs the challenger's predictions with its version in the event log's `shadow_predictions`, where
`evaluation_report` later compares both models on the same labelled events. A full queue drops (and counts) the
events it could not take; a challenger that fails to load or to predict, or a log that cannot be written, is
counted and logged: the champion's answers never wait for, or depend on, the shadow.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from typing import Any

from mlplatform.domain.spec import DatasetSpec
from mlplatform.serving.champion import ServedModel
from mlplatform.serving.background import BackgroundLoop
from mlplatform.serving.metrics import ModelMetrics
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventStore
from mlplatform.stores.registry import CHALLENGER, Registry

log = logging.getLogger(__name__)
AGREEMENT_WINDOW = 1000  # latest shadow-scored events behind the agreement gauge
BATCH_EVENTS = 2000  # most events scored and logged in one go
Item = tuple[list[str], list[dict[str, Any]], list[Any]]  # event ids, the rows the champion scored, its predictions


class ShadowScorer(BackgroundLoop):
    """One model's shadow challenger: the bounded queue, the thread that drains it, and the loaded `@challenger`."""

    def __init__(self, registry: Registry, spec: DatasetSpec, settings: Settings, events: EventStore, metrics: ModelMetrics) -> None:
        super().__init__("shadow-challenger")
        self.registry = registry
        self.spec = spec
        self.events = events
        self.metrics = metrics
        self.interval_s = settings.serve_reload_seconds
        self.current: ServedModel | None = None
        self._failed_version: int | None = None
        self._failing = False  # a scoring failure is logged once until the next success, not per batch
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=settings.serve_shadow_queue)
        self._recent: deque[float] = deque(maxlen=AGREEMENT_WINDOW)

    def offer(self, event_ids: list[str], rows: list[dict[str, Any]], predictions: list[Any]) -> None:
        """Hand a served request over, never waiting: without a challenger nothing is queued; with a full queue it is dropped."""
        if self.current is None:
            return
        try:
            self._queue.put_nowait((event_ids, rows, predictions))
        except queue.Full:
            self.metrics.shadow_dropped.inc(len(event_ids))

    def check(self) -> None:
        """Load `@challenger` if it moved; no shadow while there is none or it is the champion. A version that fails to load
        is counted once and not retried until the alias moves."""
        try:
            challenger, champion = self.registry.version_by_alias(CHALLENGER), self.registry.champion()
        except Exception:  # registry unreachable: keep the shadow as it is, try again next round
            log.exception("shadow: cannot read the challenger alias")
            return
        version = None if challenger is None else int(challenger.version)
        if version is None or (champion is not None and int(champion.version) == version):
            self._serve(None)
            return
        if (self.current is not None and self.current.version == version) or version == self._failed_version:
            return
        try:
            model = ServedModel.load(version, self.registry.load_predictor(version), self.spec, refuse_unknown=False)
            model.predict([dict.fromkeys([*model.codec.features, *model.codec.history])])
        except Exception:
            self._failed_version = version
            self.metrics.shadow_failures.labels(kind="load").inc()
            log.exception("shadow: cannot load challenger version %s; the champion serves on, without a shadow", version)
            self._serve(None)
            return
        self._failed_version = None
        self._serve(model)

    def _serve(self, model: ServedModel | None) -> None:
        if model is self.current:
            return
        log.info("shadow challenger: version %s (was %s)", model and model.version, self.current and self.current.version)
        self.current = model
        self._recent.clear()  # and no agreement said until the new version scored events
        self.metrics.shadow_agreement.remove()
        self.metrics.shadow_difference.remove()
        self.metrics.shadow_version.set(0 if model is None else model.version)

    def _run(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_check:
                self.check()
                next_check = time.monotonic() + self.interval_s
            try:
                batch = [self._queue.get(timeout=self.interval_s)]
            except queue.Empty:
                continue
            size = len(batch[0][0])
            while size < BATCH_EVENTS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                size += len(batch[-1][0])
            self.score(batch)

    def score(self, batch: list[Item]) -> None:
        """Score a batch with the loaded challenger and log it; failures are counted per event and never raised."""
        model = self.current
        if model is None:  # the challenger was promoted or removed meanwhile
            return
        ids = [event_id for item in batch for event_id in item[0]]
        rows = [row for item in batch for row in item[1]]
        champion = [p for item in batch for p in item[2]]
        stage = "predict"
        try:
            (predictions, probabilities, _), _ = model.predict(rows)
            shadow = predictions.tolist()
            probs = [None] * len(ids) if probabilities is None else probabilities.tolist()
            stage = "log"
            self.events.append_shadow([(event_id, str(model.version), p, q) for event_id, p, q in zip(ids, shadow, probs)])
        except Exception:
            self.metrics.shadow_failures.labels(kind=stage).inc(len(ids))
            if not self._failing:
                log.exception("shadow: challenger version %s could not %s %d events (counted; logged once until it works again)", model.version, stage, len(ids))
            self._failing = True
            return
        self._failing = False
        self.metrics.shadow_scored.inc(len(ids))
        self._agree(champion, shadow)

    def _agree(self, champion: list[Any], shadow: list[Any]) -> None:
        if self.spec.is_classification:
            self._recent.extend(1.0 if str(a) == str(b) else 0.0 for a, b in zip(champion, shadow))
            self.metrics.shadow_agreement.labels().set(sum(self._recent) / len(self._recent))
        else:
            self._recent.extend(abs(float(a) - float(b)) for a, b in zip(champion, shadow))
            self.metrics.shadow_difference.labels().set(sum(self._recent) / len(self._recent))
