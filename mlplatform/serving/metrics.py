"""What the prediction service exposes on /metrics for Prometheus, in its own registry (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """Latency, volume, errors, the served version, reloads, the prediction log's lag and the online correction."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("mlplatform_request_seconds", "Request latency by endpoint, including the prediction-log commit.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("mlplatform_predictions", "Predictions served, by predicted class (classification).", ["prediction"], registry=r)
        self.prediction_values = Histogram("mlplatform_prediction_value", "Predicted values (regression).",
                                           buckets=(-1e3, -1e2, -10, -1, 0, 1, 10, 1e2, 1e3, 1e4), registry=r)
        self.batch_rows = Histogram("mlplatform_batch_rows", "Records per /predict request.", buckets=(1, 2, 10, 100, 1000, 10_000), registry=r)
        self.errors = Counter("mlplatform_errors", "Requests refused or failed, by kind.", ["kind"], registry=r)
        self.unseen = Counter("mlplatform_unseen_categories", "Categorical values not seen in training (served as missing).", ["feature"], registry=r)
        self.feedback = Counter("mlplatform_feedback", "Late labels received, by outcome.", ["outcome"], registry=r)
        self.model_version = Gauge("mlplatform_served_model_version", "Registry version of the model answering requests (0: none).", registry=r)
        self.reloads = Counter("mlplatform_model_reloads", "Successful switches to a new champion version.", registry=r)
        self.reload_failures = Counter("mlplatform_model_reload_failures", "Champion versions that failed to load (the old one kept serving).", registry=r)
        self.log_lag = Histogram("mlplatform_prediction_log_lag_seconds", "From hand-over to the durable commit of a prediction's event.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.log_pending = Gauge("mlplatform_prediction_log_pending_rows", "Predictions waiting for their group commit.", registry=r)
        self.log_rows = Counter("mlplatform_prediction_log_rows", "Predictions committed to the event log.", registry=r)
        self.log_commits = Counter("mlplatform_prediction_log_commits", "Group commits (transactions) to the event log.", registry=r)
        self.correction_updates = Counter("mlplatform_online_correction_updates", "Labels learned by the online correction (warm-up from the event log and /feedback).", registry=r)
        self.correction_terms = Gauge("mlplatform_online_correction_terms", "Terms (bias, categorical values) the serving version's online correction has weights for.", registry=r)
