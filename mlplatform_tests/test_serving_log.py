"""The group-commit prediction log on a real event log: every handed-over row lands, a failed commit reaches its requests."""

from __future__ import annotations

import asyncio

import pytest

from mlplatform.stores.eventlog import SERVING_SOURCE, EventLog
from mlplatform.serving.metrics import ServingMetrics
from mlplatform.serving.predictionlog import PredictionLog, PredictionLogError
from mlplatform.domain.spec import DatasetSpec


def _row(spec: DatasetSpec, event_id: str) -> tuple[object, ...]:
    features = [39.0 if name in spec.numeric_features else "Private" for name in spec.features]
    return (event_id, 1_700_000_000_000_000, "3", "<=50K", 0.25, *features)


def test_concurrent_requests_are_all_committed(log: EventLog, adult_spec: DatasetSpec) -> None:
    metrics = ServingMetrics().model(adult_spec.name)
    writer = PredictionLog(log, metrics, linger_s=0.0, max_rows=50)
    writer.start()

    async def requests() -> None:
        await asyncio.gather(*(writer.write([_row(adult_spec, f"r{i}-{j}") for j in range(1 + i % 3)]) for i in range(200)))

    asyncio.run(requests())
    writer.close()
    ids = [f"r{i}-{j}" for i in range(200) for j in range(1 + i % 3)]
    stored = log.get(ids)
    assert sorted(stored["event_id"]) == sorted(ids)
    assert (stored["source"] == SERVING_SOURCE).all() and (stored["model_version"] == "3").all() and stored["label"].isna().all()
    assert log.counts().total == len(ids)
    assert metrics.registry.get_sample_value("mlplatform_prediction_log_rows_total", {"model": "adult"}) == len(ids)
    assert metrics.registry.get_sample_value("mlplatform_prediction_log_pending_rows", {"model": "adult"}) == 0


def test_a_failed_commit_fails_its_requests_and_not_the_writer(log: EventLog, adult_spec: DatasetSpec) -> None:
    metrics = ServingMetrics().model(adult_spec.name)
    writer = PredictionLog(log, metrics, linger_s=0.0, max_rows=50)
    writer.start()

    async def write(event_id: str) -> None:
        await writer.write([_row(adult_spec, event_id)])

    asyncio.run(write("first"))
    with pytest.raises(PredictionLogError, match="could not record"):
        asyncio.run(write("first"))  # the same id again: the insert fails, the request must not be acknowledged
    asyncio.run(write("second"))
    writer.close()
    assert sorted(log.get(["first", "second"])["event_id"]) == ["first", "second"]
    assert metrics.registry.get_sample_value("mlplatform_errors_total", {"model": "adult", "kind": "prediction_log"}) == 1
