"""What the prediction service exposes on /metrics for Prometheus, in its own registry (one per app).

One process serves several models, so every family carries a `model` label; `ModelMetrics` is one model's
view of the families, with that label bound, so a model's watcher, log and routes cannot count into another's.
Requests refused before a model is known (unknown path, missing token) are counted with `model=""`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Regression predictions of any scale, one family for every model: 1-2-5 steps from a thousandth to ten million, either
# sign, and 0. Decades from -1e3 to 1e4 held a count of bikes (0-1,000) in three buckets and every value above ten
# thousand in +Inf: now no bucket's upper bound is more than 2.5 times its lower one.
_STEPS = [m * 10.0 ** e for e in range(-3, 7) for m in (1, 2, 5)] + [1e7]
PREDICTION_BUCKETS = (*(-v for v in reversed(_STEPS)), 0.0, *_STEPS)
NO_MODEL = ""  # the `model` label of what happens before a request names a model


class ServingMetrics:
    """Latency, volume, errors, the served version, reloads, the prediction log's lag, the online correction and live quality."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        m = ["model"]
        self.latency = Histogram("mlplatform_request_seconds", "Request latency by endpoint, including the prediction-log commit.",
                                 [*m, "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("mlplatform_predictions", "Predictions served, by predicted class (classification).", [*m, "prediction"], registry=r)
        self.prediction_values = Histogram("mlplatform_prediction_value", "Predicted values (regression).", m,
                                           buckets=PREDICTION_BUCKETS, registry=r)
        self.batch_rows = Histogram("mlplatform_batch_rows", "Records per /predict request.", m, buckets=(1, 2, 10, 100, 1000, 10_000), registry=r)
        self.errors = Counter("mlplatform_errors", "Requests refused or failed, by kind.", [*m, "kind"], registry=r)
        self.unseen = Counter("mlplatform_unseen_categories", "Categorical values not seen in training (served as missing).", [*m, "feature"], registry=r)
        self.feedback = Counter("mlplatform_feedback", "Late labels received, by outcome.", [*m, "outcome"], registry=r)
        self.model_version = Gauge("mlplatform_served_model_version", "Registry version of the model answering requests (0: none).", m, registry=r)
        self.reloads = Counter("mlplatform_model_reloads", "Successful switches to a new champion version.", m, registry=r)
        self.reload_failures = Counter("mlplatform_model_reload_failures", "Champion versions that failed to load (the old one kept serving).", m, registry=r)
        self.log_lag = Histogram("mlplatform_prediction_log_lag_seconds", "From hand-over to the durable commit of a prediction's event.",
                                 m, buckets=LATENCY_BUCKETS, registry=r)
        self.log_pending = Gauge("mlplatform_prediction_log_pending_rows", "Predictions waiting for their group commit.", m, registry=r)
        self.log_rows = Counter("mlplatform_prediction_log_rows", "Predictions committed to the event log.", m, registry=r)
        self.log_commits = Counter("mlplatform_prediction_log_commits", "Group commits (transactions) to the event log.", m, registry=r)
        self.correction_updates = Counter("mlplatform_online_correction_updates", "Labels learned by the online correction (warm-up from the event log and /feedback).", m, registry=r)
        self.correction_terms = Gauge("mlplatform_online_correction_terms", "Terms (bias, categorical values) the serving version's online correction has weights for.", m, registry=r)
        self.history_watermark = Gauge("mlplatform_history_label_watermark", "label_seq up to which the history state has read the labels of the event log (0: none, or no history features).", m, registry=r)
        self.history_rebuilds = Counter("mlplatform_history_rebuilds", "Rebuilds of the history state from the event log, after others filed events (landing files, other serving processes: in training's past too), or when it grew past twice the keys of its horizon.", m, registry=r)
        self.history_keys = Gauge("mlplatform_history_keys", "Key values the history state keeps (summed over its key columns): what its memory grows with.", m, registry=r)
        self.live_metric = Gauge("mlplatform_live_metric", "The served version's metric on its latest labelled served predictions.", [*m, "metric"], registry=r)
        self.live_labelled = Gauge("mlplatform_live_labelled_events", "Labelled served predictions in the live-quality window.", m, registry=r)
        self.live_below_floor = Gauge("mlplatform_live_below_floor", "1 when a live metric breaches its floor (with enough labelled events).", m, registry=r)
        self.shadow_version = Gauge("mlplatform_shadow_model_version", "Registry version of the challenger scored in shadow (0: none).", m, registry=r)
        self.shadow_scored = Counter("mlplatform_shadow_scored", "Served events the shadow challenger scored and logged.", m, registry=r)
        self.shadow_dropped = Counter("mlplatform_shadow_dropped", "Served events left unscored by the shadow because its queue was full.", m, registry=r)
        self.shadow_failures = Counter("mlplatform_shadow_failures", "Shadow challenger failures (load: versions; predict, log: events), never affecting an answer.",
                                       [*m, "kind"], registry=r)
        self.shadow_agreement = Gauge("mlplatform_shadow_agreement", "Share of the latest shadow-scored events where the challenger predicted the champion's class (classification).", m, registry=r)
        self.shadow_difference = Gauge("mlplatform_shadow_mean_abs_difference", "Mean |challenger - champion| prediction over the latest shadow-scored events (regression).", m, registry=r)

    def model(self, name: str) -> "ModelMetrics":
        return ModelMetrics(self, name)


class Bound:
    """A family with further labels and `model` bound: `.labels(kind=...)` as on the family, `.remove(...)` likewise."""

    def __init__(self, family: MetricWrapperBase, model: str) -> None:
        self.family, self.model = family, model

    def labels(self, **labels: str) -> Any:
        return self.family.labels(model=self.model, **labels)

    def remove(self, *values: str) -> None:
        self.family.remove(self.model, *values)


class ModelMetrics:
    """One model's children of every family: the same attribute names as `ServingMetrics`, `model` already set."""

    def __init__(self, metrics: ServingMetrics, name: str) -> None:
        self.registry = metrics.registry
        self.name = name
        self.predictions = Bound(metrics.predictions, name)
        self.prediction_values = metrics.prediction_values.labels(model=name)
        self.batch_rows = metrics.batch_rows.labels(model=name)
        self.errors = Bound(metrics.errors, name)
        self.unseen = Bound(metrics.unseen, name)
        self.feedback = Bound(metrics.feedback, name)
        self.model_version = metrics.model_version.labels(model=name)
        self.reloads = metrics.reloads.labels(model=name)
        self.reload_failures = metrics.reload_failures.labels(model=name)
        self.log_lag = metrics.log_lag.labels(model=name)
        self.log_pending = metrics.log_pending.labels(model=name)
        self.log_rows = metrics.log_rows.labels(model=name)
        self.log_commits = metrics.log_commits.labels(model=name)
        self.correction_updates = metrics.correction_updates.labels(model=name)
        self.correction_terms = metrics.correction_terms.labels(model=name)
        self.history_watermark = metrics.history_watermark.labels(model=name)
        self.history_rebuilds = metrics.history_rebuilds.labels(model=name)
        self.history_keys = metrics.history_keys.labels(model=name)
        self.live_metric = Bound(metrics.live_metric, name)
        self.live_labelled = metrics.live_labelled.labels(model=name)
        self.live_below_floor = metrics.live_below_floor.labels(model=name)
        self.shadow_version = metrics.shadow_version.labels(model=name)
        self.shadow_scored = metrics.shadow_scored.labels(model=name)
        self.shadow_dropped = metrics.shadow_dropped.labels(model=name)
        self.shadow_failures = Bound(metrics.shadow_failures, name)
        self.shadow_agreement = Bound(metrics.shadow_agreement, name)  # exported once events were scored: 0 would read as no agreement
        self.shadow_difference = Bound(metrics.shadow_difference, name)
