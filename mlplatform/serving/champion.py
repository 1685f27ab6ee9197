"""Hot reload: always serve the registry's `@champion`, switching versions without a failed request.

A background thread checks the alias every few seconds (and on POST /admin/reload). A new version is
loaded and warmed up off the request path, then one attribute is reassigned: a request reads `current`
once and uses that snapshot to the end, so it is answered entirely by one version. If loading fails, the
old version keeps serving and the failure is logged and counted. Models only ever come from the
configured registry, by alias; no request can name a path or URI to load.

With `serve_online_correction`, each loaded version carries its own fresh ResidualCorrector (so a promotion
resets it), warmed before the swap from the version's latest labelled served predictions in the event log.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.stores.alerting import RELOAD_ALIAS, RELOAD_LOAD, serving_reload_failed, serving_reload_succeeded
from mlplatform.domain.correction import ResidualCorrector
from mlplatform.stores.eventlog import SERVING_SOURCE, EventStore
from mlplatform.domain.predictor import Predictor
from mlplatform.stores.registry import Registry
from mlplatform.serving.background import BackgroundLoop
from mlplatform.serving.metrics import ModelMetrics
from mlplatform.serving.records import RecordCodec
from mlplatform.serving.singlerow import SingleRowPredictor
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import LABEL

log = logging.getLogger(__name__)
Scores = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class ServedModel:
    """One loaded version: everything a request needs, swapped as a unit."""

    version: int
    predictor: Predictor
    codec: RecordCodec
    single: SingleRowPredictor
    corrector: ResidualCorrector | None = None

    @classmethod
    def load(cls, version: int, predictor: Predictor, spec: DatasetSpec, correction_rate: float | None = None,
             refuse_unknown: bool = True) -> "ServedModel":
        """`correction_rate` (the online correction's learning rate) gives this version a fresh corrector; None serves it as trained.
        `refuse_unknown`: records with fields that are neither features nor dropped columns are refused (else those are ignored)."""
        codec = RecordCodec(spec, predictor, refuse_unknown)
        corrector = None if correction_rate is None else ResidualCorrector(spec, correction_rate)
        return cls(version, predictor, codec, SingleRowPredictor(predictor.booster, codec.width), corrector)

    def predict(self, rows: list[dict[str, Any]]) -> tuple[Scores, dict[str, int]]:
        """(prediction, probability, per-class matrix) for clean records, and unseen categories per column; corrected when a corrector is on."""
        matrix, unseen = self.codec.encode(rows)
        scores = self.single.predict(matrix[0]) if len(rows) == 1 else self.predictor.booster.predict(matrix, num_threads=1)
        c = self.corrector
        if c is not None:
            scores = np.array([c.correct(c.link(score), c.terms(row)) for score, row in zip(scores.tolist(), rows)])
        return self.predictor.read_scores(scores), unseen

    def learn(self, events: pd.DataFrame) -> int:
        """Feed the labels of the events this version served (event-log rows, in the order given) to its corrector.

        The uncorrected score is recomputed from the stored features through the same codec and booster as /predict
        (the log keeps the corrected prediction that was served); not through `Predictor.predict`, whose per-call
        pandas work would cost ~10 ms of the GIL for every label while requests are being served.
        """
        c = self.corrector
        mine = events[(events["source"] == SERVING_SOURCE) & (events["model_version"] == str(self.version)) & events[LABEL].notna()]
        if c is None or mine.empty:
            return 0
        features = mine[self.codec.features]
        rows = features.astype(object).where(features.notna(), None).to_dict("records")
        matrix, _ = self.codec.encode(rows)
        for score, row, label in zip(self.predictor.booster.predict(matrix, num_threads=1).tolist(), rows, mine[LABEL].tolist()):
            c.learn(c.link(score), c.terms(row), label)
        return len(rows)


@dataclass(frozen=True)
class ReloadOutcome:
    version: int | None  # the version serving after the check
    changed: bool
    error: str | None = None


class ChampionWatcher(BackgroundLoop):
    """Keeps `current` on the champion version of one registered model."""

    def __init__(self, registry: Registry, spec: DatasetSpec, interval_s: float, metrics: ModelMetrics, settings: Settings | None = None,
                 events: EventStore | None = None, on_tick: Callable[[], None] | None = None) -> None:
        super().__init__("champion-watcher")
        self.registry = registry
        self.settings = settings
        self.events = events  # where a version's online correction warms up (and /feedback reads its events back)
        self.correction_rate = settings.serve_correction_learning_rate if settings is not None and settings.serve_online_correction else None
        self.refuse_unknown = settings is None or settings.serve_unknown_fields == "refuse"
        # An earlier process's reload alert may still be firing: the first settled check resolves it (after a restart
        # that loaded the version fine it stayed firing, re-sent every half hour: the review).
        self._alert_firing = True
        self._alerts: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]]] = queue.SimpleQueue()
        self.spec = spec
        self.interval_s = interval_s
        self.metrics = metrics
        self.current: ServedModel | None = None
        self._failed_version: int | None = None
        self.last_error: str | None = None  # why the latest check could not load the champion (None: it could, or nothing to load)
        self._check_lock = threading.Lock()
        self._on_tick = on_tick  # called before each periodic check, on this thread (serving follows its spec file's edits)
        if settings is not None and settings.alertmanager_url:
            threading.Thread(target=self._send_alerts, name="reload-alerts", daemon=True).start()

    def check(self, retry_failed: bool = False) -> ReloadOutcome:
        """Load the champion if it is not the version serving; keep the old one if that fails.

        A version that failed to load is retried only on request (`retry_failed`, from /admin/reload),
        not on every tick, so one broken version does not flood the logs.
        """
        with self._check_lock:
            serving = self.current.version if self.current else None
            try:
                champion = self.registry.champion()
            except Exception as exc:  # registry unreachable: keep serving, say so
                return self._failed(serving, None, f"cannot read the champion alias: {exc}")
            if champion is None:
                self._settled()
                return ReloadOutcome(serving, False, None if serving else "the registry has no champion yet")
            version = int(champion.version)
            if version == self._failed_version and not retry_failed:  # still the version that failed to load
                return ReloadOutcome(serving, False)
            if version == serving:
                self._settled()
                return ReloadOutcome(serving, False)
            try:
                model = ServedModel.load(version, self.registry.load_predictor(version), self.spec, self.correction_rate, self.refuse_unknown)
                model.predict([dict.fromkeys([*model.codec.features, *model.codec.history])])
            except Exception as exc:  # any load failure keeps the old version serving
                return self._failed(serving, version, f"cannot load version {version}: {exc}")
            self._warm(model)
            if model.corrector is not None:  # before the swap: whoever sees the new version sees its gauge
                self.metrics.correction_terms.set(model.corrector.learned_terms)
            self.current = model
            self.metrics.model_version.set(version)
            self.metrics.reloads.inc()
            log.info("%s: serving model version %s (was %s)", self.spec.name, version, serving)
            self._settled()
            return ReloadOutcome(version, True)

    def _warm(self, model: ServedModel) -> None:
        """Replay the version's latest labelled served predictions into its corrector, in the order their labels arrived
        (the order /feedback taught them), so a restart or a rollback answers as before. If the log cannot be read, the
        failure is logged and counted and the version serves with a fresh correction."""
        if model.corrector is None or self.events is None or self.settings is None:
            return
        try:
            window = self.events.served_window(self.settings.serve_correction_warm_events, model.version)
            self.metrics.correction_updates.inc(model.learn(window.sort_values("label_seq", kind="stable")))
        except Exception:  # the correction is an addition: it must never keep a version from serving
            self.metrics.errors.labels(kind="online_correction").inc()
            log.exception("%s: cannot warm the online correction of version %s from the event log", self.spec.name, model.version)

    def learn(self, event_id: str) -> int:
        """A label just applied through /feedback: teach the serving version's corrector if that version served the event."""
        model = self.current
        if model is None or model.corrector is None or self.events is None:
            return 0
        updates = model.learn(self.events.get([event_id]))
        self.metrics.correction_updates.inc(updates)
        if model is self.current:  # a promotion meanwhile: the gauge is the new version's
            self.metrics.correction_terms.set(model.corrector.learned_terms)
        return updates

    def _settled(self) -> None:
        """The registry was read and nothing is to load: an earlier failure (the registry unreachable, a version since
        replaced) is over. /readyz said an outage's error long after it ended, and its alert stayed firing (the
        production probe)."""
        self._failed_version, self.last_error = None, None
        if self._alert_firing:
            self._alert_firing = False
            self._notify(serving_reload_succeeded)

    def _failed(self, serving: int | None, version: int | None, message: str) -> ReloadOutcome:
        self._failed_version, self.last_error = version, message
        self.metrics.reload_failures.inc()
        log.error("%s: model reload failed, still serving version %s: %s", self.spec.name, serving, message)
        self._alert_firing = True
        self._notify(serving_reload_failed, version if version is not None else serving or 0, message, RELOAD_LOAD if version is not None else RELOAD_ALIAS)
        return ReloadOutcome(serving, False, message)

    def _notify(self, send: Callable[..., object], *args: object) -> None:
        """Alerts leave on a thread of their own (a slow Alertmanager must never delay a reload or a request), one after
        another in the order given: a thread each let a recovery's resolve be recorded before the failure's fire, which
        then stayed firing (the review)."""
        if self.settings is not None and self.settings.alertmanager_url:
            self._alerts.put((send, (self.settings, self.spec, *args)))

    def _send_alerts(self) -> None:
        while True:
            send, args = self._alerts.get()
            try:
                send(*args)
            except Exception:  # the next alert still goes; the outbox keeps what was recorded for the alerts sensor
                log.exception("%s: a reload alert could not be sent", self.spec.name)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._on_tick is not None:
                self._on_tick()
            self.check()
