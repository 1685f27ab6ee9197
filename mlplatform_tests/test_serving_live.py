"""The serving process's live-quality gauges, over a real event log of served, late-labelled predictions."""

from pathlib import Path

import pytest

from mlplatform.pipeline.live_quality import ServedVersion
from mlplatform.serving.live import LiveQualityGauges
from mlplatform.serving.metrics import ModelMetrics, ServingMetrics
from mlplatform.settings import Settings
from mlplatform.domain.spec import load_spec
from mlplatform_tests.conftest import BIKE_SPEC
from mlplatform_tests.serving_support import served_regression_log


def _gauge(metrics: ModelMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model": metrics.name, **labels})


def test_gauges_follow_the_served_version_and_its_ceiling(tmp_path: Path) -> None:
    spec = load_spec(BIKE_SPEC)
    settings = Settings(state_dir=tmp_path / "state", dataset_spec=BIKE_SPEC, live_max_rmse=5.0, live_quality_min_events=10)
    log = served_regression_log(settings, spec)
    served: list[ServedVersion | None] = [None]
    metrics = ServingMetrics().model(spec.name)
    asked: list[int] = []

    def holdout(version: int) -> dict[str, float]:
        asked.append(version)
        if len(asked) == 1:
            raise ConnectionError("MLflow is unreachable")
        return {"rmse": 4.5}

    gauges = LiveQualityGauges(settings, spec, log, metrics, lambda: served[0], holdout)

    assert gauges.update() is None  # nothing served yet: no verdict, no gauge values
    assert _gauge(metrics, "mlplatform_live_labelled_events") == 0

    served[0] = ServedVersion(3, None)
    quality = gauges.update()
    assert quality is not None and quality.events == 40
    assert _gauge(metrics, "mlplatform_live_metric", metric="rmse") == pytest.approx(4.0)
    assert _gauge(metrics, "mlplatform_live_labelled_events") == 40
    assert _gauge(metrics, "mlplatform_live_below_floor") == 0

    assert gauges.update() is not None and asked == [3, 3], "a hold-out the registry could not give is asked for again, then kept"
    assert _gauge(metrics, "mlplatform_live_below_floor") == 0, "kept while the hold-out was unknown, then measured"
    assert gauges.update() is not None and asked == [3, 3]

    strict_metrics = ServingMetrics().model(spec.name)
    strict = LiveQualityGauges(settings.model_copy(update={"live_max_rmse": 3.0}), spec, log, strict_metrics, lambda: ServedVersion(3, None), lambda v: {"rmse": 4.5})
    assert strict.update() is not None and _gauge(strict_metrics, "mlplatform_live_below_floor") == 1, \
        "a ceiling set for the model is checked though its own hold-out never met it (only a default is waived)"

    served[0] = ServedVersion(2, None)  # a promotion: the gauges now describe the new version (10 labelled of its 20)
    assert gauges.update().events == 10  # type: ignore[union-attr]
    assert _gauge(metrics, "mlplatform_live_labelled_events") == 10


def test_regression_predictions_of_any_scale_land_in_a_bucket_of_their_own_size() -> None:
    """Decades from -1e3 to 1e4 put a count of bikes (0-1,000) in three buckets and every value above ten thousand in +Inf."""
    metrics = ServingMetrics().model("prices")
    for value in (150_000.0, 37.5, -0.004, 0.0):
        metrics.prediction_values.observe(value)

    def cumulative(le: str) -> float | None:
        return metrics.registry.get_sample_value("mlplatform_prediction_value_bucket", {"model": "prices", "le": le})

    assert (cumulative("100000.0"), cumulative("200000.0")) == (3.0, 4.0), "150,000 between 1e5 and 2e5, not in +Inf"
    assert (cumulative("20.0"), cumulative("50.0")) == (2.0, 3.0) and (cumulative("-0.005"), cumulative("-0.002")) == (0.0, 1.0)
