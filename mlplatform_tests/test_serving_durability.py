"""kill -9 under load: every prediction the server acknowledged is in the event log after a restart."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pandas as pd
import pytest

from mlplatform.stores.eventlog import EventLog
from mlplatform.pipeline.replay import json_records
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform_tests.conftest import ADULT_SPEC
from mlplatform_tests.serving_support import auth, authorised_client, register_versions, running_server, state_settings

ACKNOWLEDGED = 300


def _load(url: str, records: list[dict[str, Any]], stop: threading.Event, acked: dict[str, dict[str, Any]], worker: int) -> None:
    """Single records and small batches until the server dies; keeps every answer that fully arrived."""
    with authorised_client(url) as client:
        i = worker
        while not stop.is_set():
            batch = records[i % 40 : i % 40 + 1 + i % 3]
            try:
                response = client.post("/predict", json={"records": batch} if len(batch) > 1 else batch[0])
            except httpx.HTTPError:
                return
            assert response.status_code == 200, response.text
            body = response.json()
            for answer in body.get("predictions", [body]):
                acked[answer["event_id"]] = answer
            i += 4


def test_acknowledged_predictions_survive_kill_9(tmp_path_factory: pytest.TempPathFactory, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    settings: Settings = state_settings(tmp_path_factory.mktemp("serving-kill") / "state", ADULT_SPEC)
    version = register_versions(settings, adult_spec, adult_rows, 1)[0]
    records = json_records(adult_rows.iloc[40_000:40_050], adult_spec)
    acked: dict[str, dict[str, Any]] = {}
    stop = threading.Event()
    with running_server(settings) as server:
        workers = [threading.Thread(target=_load, args=(server.url, records, stop, acked, w)) for w in range(4)]
        for w in workers:
            w.start()
        while len(acked) < ACKNOWLEDGED and all(w.is_alive() for w in workers):
            threading.Event().wait(0.02)
        server.kill()
        stop.set()
        for w in workers:
            w.join()
    assert len(acked) >= ACKNOWLEDGED

    with running_server(settings) as restarted, authorised_client(restarted.url) as client:
        log = EventLog.for_dataset(settings.events_dir, adult_spec)
        try:
            stored = log.get(list(acked)).set_index("event_id")
        finally:
            log.close()
        assert set(stored.index) == set(acked)
        assert (stored["source"] == "serving").all() and (stored["model_version"] == str(version)).all()
        assert stored.loc[list(acked), "prediction"].tolist() == [a["prediction"] for a in acked.values()]
        some = list(acked)[:5]
        for event_id in some:
            assert client.post("/feedback", json={"event_id": event_id, "label": ">50K"}, headers=auth()).json()["status"] == "applied"
