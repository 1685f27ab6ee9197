"""Live quality in the serving process: the champion's windowed metrics on its labelled served predictions, as gauges.

The same `live_quality.measure` as the `live_quality` asset, refreshed on a thread of its own every
`serve_live_quality_seconds`, so Prometheus sees quality falling between two materializations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from mlplatform.stores.eventlog import EventStore
from mlplatform.pipeline.live_quality import LiveQuality, ServedVersion, measure
from mlplatform.serving.background import BackgroundLoop
from mlplatform.serving.metrics import ModelMetrics
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec

log = logging.getLogger(__name__)


class LiveQualityGauges(BackgroundLoop):
    """Keeps one model's `mlplatform_live_*` gauges on the version currently served."""

    def __init__(self, settings: Settings, spec: DatasetSpec, events: EventStore, metrics: ModelMetrics, served: Callable[[], ServedVersion | None],
                 holdout: Callable[[int], Mapping[str, float]]) -> None:
        super().__init__("live-quality")
        self.settings = settings
        self.spec = spec
        self.events = events
        self.served = served
        self.metrics = metrics
        self.holdout = holdout  # a version's own hold-out metrics: the default floors it never met are not checked, as live_quality does
        self._holdouts: dict[int, Mapping[str, float]] = {}
        self._shown: set[str] = set()  # metric names with a gauge value, removed when a measurement no longer has them

    def update(self) -> LiveQuality | None:
        """Measure the served version now; None while no model is served."""
        served = self.served()
        if served is None:
            return None
        holdout = self._holdout_of(served.version)
        quality = measure(self.settings, self.spec, self.events, served, holdout=holdout or {})
        m = self.metrics
        for name in self._shown - set(quality.metrics):
            m.live_metric.remove(name)
        for name, value in quality.metrics.items():
            m.live_metric.labels(metric=name).set(value)
        self._shown = set(quality.metrics)
        m.live_labelled.set(quality.events)
        if holdout is not None:  # unknown, a default floor might be one this version never met: the gauge keeps its reading
            m.live_below_floor.set(1 if quality.below_floor else 0)
        return quality

    def _holdout_of(self, version: int) -> Mapping[str, float] | None:
        """The version's hold-out metrics, read once; None while the registry cannot say."""
        if version not in self._holdouts:
            try:
                self._holdouts = {version: self.holdout(version)}
            except Exception as exc:  # the registry down: the next measurement asks again
                log.warning("live quality: v%s's hold-out metrics unread (%s): the below-floor gauge keeps its reading", version, exc)
                return None
        return self._holdouts[version]

    def _run(self) -> None:
        while not self._stop.wait(self.settings.serve_live_quality_seconds):
            try:
                self.update()
            except Exception:  # a failed measurement must never take the service down
                log.exception("live quality measurement failed")
