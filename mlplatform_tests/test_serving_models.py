"""Several models in one serving process, over real HTTP: each answers with its own champion, and is reloaded on its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlplatform import cli
from mlplatform.domain.spec import DatasetSpec, load_spec
from mlplatform.pipeline.replay import json_records, read_source
from mlplatform.settings import Settings
from mlplatform.stores.registry import Registry
from mlplatform_tests.conftest import ADULT_SPEC, BIKE_SPEC
from mlplatform_tests.serving_support import TOKEN, Server, auth, client, fuzz, metric, readiness, register_versions, running_server, state_settings, wait_for_version

ADULT, BIKE = "adult", "bike-sharing"


@pytest.fixture(scope="module")
def bike_spec() -> DatasetSpec:
    return load_spec(BIKE_SPEC)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return state_settings(tmp_path_factory.mktemp("serving-models") / "state", ADULT_SPEC)


@pytest.fixture(scope="module")
def versions(settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, bike_spec: DatasetSpec) -> dict[str, list[int]]:
    """Two versions of each model in one MLflow store, the first of each promoted."""
    bike_settings = settings.model_copy(update={"dataset_spec": BIKE_SPEC})
    return {ADULT: register_versions(settings, adult_spec, adult_rows, 2), BIKE: register_versions(bike_settings, bike_spec, read_source(bike_spec), 2)}


@pytest.fixture(scope="module")
def server(settings: Settings, versions: dict[str, list[int]]) -> Iterator[Server]:
    with running_server(settings, every_model=True) as srv:  # the code location's models: adult and bike-sharing
        yield srv


@pytest.fixture(scope="module")
def records(adult_spec: DatasetSpec, adult_rows: pd.DataFrame, bike_spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    return {ADULT: json_records(adult_rows.iloc[25_000:25_001], adult_spec)[0], BIKE: json_records(read_source(bike_spec).iloc[9_000:9_001], bike_spec)[0]}


def _served_version(client: httpx.Client, model: str, record: dict[str, Any]) -> int:
    response = client.post(f"/models/{model}/predict", json=record)
    assert response.status_code == 200, response.text
    return int(response.json()["model_version"])


def test_each_model_answers_with_its_own_champion(client: httpx.Client, versions: dict[str, list[int]], records: dict[str, dict[str, Any]]) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["models"]) == {ADULT, BIKE}
    for model in (ADULT, BIKE):
        assert readiness(client, model)["model_version"] == versions[model][0]
        assert client.get(f"/models/{model}/readyz").json()["model_version"] == versions[model][0]
        assert _served_version(client, model, records[model]) == versions[model][0]
        assert metric(client, "mlplatform_served_model_version", model=model) == versions[model][0]
    bike = client.post(f"/models/{BIKE}/predict", json=records[BIKE]).json()
    assert isinstance(bike["prediction"], float) and "probability" not in bike
    wrong = client.post(f"/models/{BIKE}/predict", json=records[ADULT])
    assert wrong.status_code == 422  # an Adult record is not a Bike Sharing record


def test_unknown_model_and_short_paths_name_the_models(client: httpx.Client, records: dict[str, dict[str, Any]]) -> None:
    for path in ("/models/nope/predict", "/models/nope/readyz", "/predict", "/feedback"):
        response = client.post(path, json=records[ADULT], headers=auth()) if not path.endswith("readyz") else client.get(path)
        assert response.status_code == 404, path
        assert ADULT in response.json()["detail"] and BIKE in response.json()["detail"], path
    dagster_name = client.post(f"/models/{BIKE.replace('-', '_')}/predict", json=records[BIKE], headers=auth())  # as the CLI takes it
    assert dagster_name.status_code == 404 and dagster_name.json()["detail"].endswith(f"; its path is /models/{BIKE}/predict"), dagster_name.text


def test_feedback_goes_to_the_model_that_served(client: httpx.Client, records: dict[str, dict[str, Any]]) -> None:
    event_id = client.post(f"/models/{ADULT}/predict", json=records[ADULT]).json()["event_id"]
    assert client.post(f"/models/{BIKE}/feedback", json={"event_id": event_id, "label": 3.0}, headers=auth()).status_code == 404
    applied = client.post(f"/models/{ADULT}/feedback", json={"event_id": event_id, "label": ">50K"}, headers=auth())
    assert applied.status_code == 200 and applied.json()["status"] == "applied"
    assert metric(client, "mlplatform_feedback_total", model=ADULT, outcome="applied") == 1
    assert metric(client, "mlplatform_feedback_total", model=BIKE, outcome="unknown") == 1


def test_replay_of_one_model_to_the_api_reaches_its_own_routes(server: Server, settings: Settings, client: httpx.Client,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`mlplatform replay --model bike-sharing --to api` without --url: the short /predict answers 404 on a service of
    several models, so replay posts to the model's own /models/<name>/ routes."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    for name, value in (("MLPLATFORM_SERVE_HOST", host), ("MLPLATFORM_SERVE_PORT", port), ("MLPLATFORM_SERVE_TOKEN", TOKEN)):
        monkeypatch.setenv(name, value)
    before = metric(client, "mlplatform_feedback_total", model=BIKE, outcome="applied") or 0
    assert cli.main(["--state-dir", str(settings.state_dir), "--model", BIKE, "replay", "--to", "api", "--start", "9000", "--count", "20",
                     "--batch-size", "10", "--quiet"]) == 0
    assert metric(client, "mlplatform_feedback_total", model=BIKE, outcome="applied") == before + 20


def test_a_promotion_swaps_only_that_model(client: httpx.Client, settings: Settings, adult_spec: DatasetSpec, versions: dict[str, list[int]],
                                           records: dict[str, dict[str, Any]]) -> None:
    reloads = {model: metric(client, "mlplatform_model_reloads_total", model=model) for model in (ADULT, BIKE)}
    Registry(settings.tracking_uri, settings.artifact_root, adult_spec).promote(versions[ADULT][1])
    wait_for_version(client, versions[ADULT][1], ADULT)
    assert _served_version(client, ADULT, records[ADULT]) == versions[ADULT][1]
    assert _served_version(client, BIKE, records[BIKE]) == versions[BIKE][0]
    assert client.post(f"/admin/models/{BIKE}/reload", headers=auth()).json() == {"model_version": versions[BIKE][0], "changed": False, "error": None}
    assert metric(client, "mlplatform_model_reloads_total", model=ADULT) == reloads[ADULT] + 1
    assert metric(client, "mlplatform_model_reloads_total", model=BIKE) == reloads[BIKE]


def test_a_version_is_served_at_its_own_decision_threshold(client: httpx.Client, settings: Settings, adult_spec: DatasetSpec,
                                                          adult_rows: pd.DataFrame) -> None:
    """The threshold travels with the version: serving reads the promoted version's (here 0.05), not 0.5."""
    [version] = register_versions(settings, adult_spec.model_copy(update={"decision_threshold": 0.05}), adult_rows, 1, promote_first=False)
    Registry(settings.tracking_uri, settings.artifact_root, adult_spec).promote(version)
    wait_for_version(client, version, ADULT)
    answers = [client.post(f"/models/{ADULT}/predict", json=r).json() for r in json_records(adult_rows.iloc[25_000:25_040], adult_spec)]
    assert all(a["model_version"] == version and a["prediction"] == (">50K" if a["probability"] >= 0.05 else "<=50K") for a in answers), answers
    assert any(0.05 <= a["probability"] < 0.5 for a in answers), "some answer differs from what 0.5 would say"


def test_fuzzing_both_models_finds_no_server_error(server: Server, tmp_path: Path) -> None:
    """Every operation of both models (predict, feedback, readyz, reload each) and the global ones, with every check."""
    fuzz(server, tmp_path, operations=11)
