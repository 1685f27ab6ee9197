"""The online correction in the prediction service over real HTTP: off by default, learned from /feedback of the
serving version only, the same numbers as the benchmark's ResidualCorrector, reset at promotion, warmed on restart.

The tests run in file order on one state folder: the off-by-default server labels a few predictions, the
corrected server warms from them and learns a flipped segment, a restart must answer as it did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlplatform.domain.correction import ResidualCorrector
from mlplatform.stores.eventlog import EventLog
from mlplatform.domain.predictor import Predictor
from mlplatform.stores.registry import Registry
from mlplatform.pipeline.replay import canonical_labels, json_records
from mlplatform.root import ModelContext
from mlplatform.serving import serve
from mlplatform.settings import Settings, SettingsError
from mlplatform.domain.spec import DatasetSpec, load_spec
from mlplatform.domain.validation import LABEL
from mlplatform_tests.conftest import ADULT_SPEC
from mlplatform_tests.serving_support import (
    Server, auth, authorised_client, canonical, client, free_port, metric, readiness, register_versions, running_server, state_settings, wait_for_version,
)

ON = {"MLPLATFORM_SERVE_ONLINE_CORRECTION": "1"}
SEGMENT = ("sex", "Female")  # the segment whose labels the stream flips: the champion is wrong there, confidently
OFF_ROWS, STREAM_ROWS, PROBE_ROWS = slice(19_000, 19_020), slice(20_000, 20_400), slice(21_000, 21_300)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return state_settings(tmp_path_factory.mktemp("serving-correction") / "state", ADULT_SPEC)


@pytest.fixture(scope="module")
def registry(settings: Settings, adult_spec: DatasetSpec) -> Registry:
    return Registry(settings.tracking_uri, settings.artifact_root, adult_spec)


@pytest.fixture(scope="module")
def versions(settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> list[int]:
    return register_versions(settings, adult_spec, adult_rows, 2)


@pytest.fixture(scope="module")
def predictors(registry: Registry, versions: list[int]) -> dict[int, Predictor]:
    return {v: registry.load_predictor(v) for v in versions}


@pytest.fixture(scope="module")
def server(settings: Settings, versions: list[int]) -> Iterator[Server]:
    """The corrected service; `restarted` kills it."""
    with running_server(settings, **ON) as srv:
        yield srv


@pytest.fixture(scope="module")
def before_restart(client: httpx.Client, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> dict[str, Any]:
    """What the first corrected service answers for the probe records just before it is killed."""
    probe, _ = rows(adult_rows, PROBE_ROWS, adult_spec)
    return {"answers": predict(client, probe), "updates": correction(client)["updates"], "terms": metric(client, "mlplatform_online_correction_terms")}


@pytest.fixture(scope="module")
def restarted(server: Server, before_restart: dict[str, Any], settings: Settings) -> Iterator[httpx.Client]:
    """The corrected service after a kill -9 of the first one, on the same state folder."""
    server.kill()
    with running_server(settings, **ON) as srv, authorised_client(srv.url) as c:
        yield c


def rows(adult_rows: pd.DataFrame, part: slice, adult_spec: DatasetSpec) -> tuple[list[dict[str, Any]], np.ndarray]:
    """JSON records and the labels the feedback sends for them: the truth, flipped in SEGMENT."""
    raw = adult_rows.iloc[part]
    truth = canonical_labels(raw, adult_spec).to_numpy()
    flipped = np.where(truth == adult_spec.positive_class, adult_spec.negative_class, adult_spec.positive_class)
    return json_records(raw, adult_spec), np.where(raw[SEGMENT[0]].str.strip().eq(SEGMENT[1]).to_numpy(), flipped, truth)


def predict(c: httpx.Client, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = c.post("/predict", json={"records": records})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def probabilities(answers: list[dict[str, Any]]) -> np.ndarray:
    return np.array([a["probability"] for a in answers])


def feedback(c: httpx.Client, event_id: str, label: object) -> httpx.Response:
    return c.post("/feedback", json={"event_id": event_id, "label": label}, headers=auth())


def correction(c: httpx.Client) -> dict[str, Any]:
    return readiness(c)["online_correction"]


def served_log(settings: Settings, spec: DatasetSpec) -> EventLog:
    return EventLog.for_dataset(settings.events_dir, spec)


def test_off_by_default_serves_the_champion_as_trained(settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                       versions: list[int], predictors: dict[int, Predictor]) -> None:
    records, labels = rows(adult_rows, OFF_ROWS, adult_spec)
    raw = predictors[versions[0]].predict(pd.DataFrame(records))["probability"].to_numpy()
    with running_server(settings) as off, authorised_client(off.url) as c:
        assert correction(c) == {"enabled": False, "updates": 0}
        served = predict(c, records)
        np.testing.assert_allclose(probabilities(served), raw, rtol=1e-12)
        assert [feedback(c, a["event_id"], label).json()["status"] for a, label in zip(served, labels)] == ["applied"] * len(records)
        np.testing.assert_allclose(probabilities(predict(c, records)), raw, rtol=1e-12)
        assert correction(c) == {"enabled": False, "updates": 0}
        assert metric(c, "mlplatform_online_correction_updates_total") == 0 and metric(c, "mlplatform_online_correction_terms") == 0


def test_bad_feedback_is_refused_as_before_and_teaches_nothing(client: httpx.Client, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    records, labels = rows(adult_rows, slice(21_500, 21_501), adult_spec)
    [answer] = predict(client, records)
    assert feedback(client, answer["event_id"], labels[0]).json()["status"] == "applied"
    updates, counted = correction(client)["updates"], metric(client, "mlplatform_online_correction_updates_total")
    other = adult_spec.negative_class if labels[0] == adult_spec.positive_class else adult_spec.positive_class
    refused = [
        client.post("/feedback", content=b'{"event_id": ', headers={**auth(), "Content-Type": "application/json"}).status_code,
        feedback(client, "no-such-event", labels[0]).status_code,
        feedback(client, answer["event_id"], 3.5).status_code,
        client.post("/feedback", json={"event_id": 12.5, "label": labels[0]}, headers=auth()).status_code,
        client.post("/feedback", json={"label": labels[0]}, headers=auth()).status_code,
        feedback(client, answer["event_id"], other).status_code,
    ]
    assert refused == [400, 404, 422, 422, 422, 409]
    assert correction(client)["updates"] == updates and metric(client, "mlplatform_online_correction_updates_total") == counted
    assert metric(client, "mlplatform_errors_total", kind="online_correction") == 0


def test_feedback_moves_the_flipped_segment_as_the_benchmark_corrector_does(
        client: httpx.Client, settings: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, versions: list[int],
        predictors: dict[int, Predictor]) -> None:
    champion = predictors[versions[0]]
    # Loaded after the off-by-default server's labels: warmed from those 20, then one label from the test above.
    assert correction(client) == {"enabled": True, "updates": 21}
    stream, stream_labels = rows(adult_rows, STREAM_ROWS, adult_spec)
    probe, probe_labels = rows(adult_rows, PROBE_ROWS, adult_spec)
    segment = pd.DataFrame(probe)[SEGMENT[0]].eq(SEGMENT[1]).to_numpy()
    target = probe_labels == adult_spec.positive_class
    raw = champion.predict(pd.DataFrame(probe))["probability"].to_numpy()

    served = predict(client, stream)
    assert all(feedback(client, a["event_id"], label).json()["status"] == "applied" for a, label in zip(served, stream_labels))
    answers = predict(client, probe)
    corrected = probabilities(answers)

    def accuracy(p: np.ndarray, where: np.ndarray) -> float:
        return float(((p >= 0.5) == target)[where].mean())

    assert accuracy(raw, segment) < 0.3 and accuracy(corrected, segment) > 0.7
    assert ((corrected - target) ** 2)[segment].mean() < ((raw - target) ** 2)[segment].mean() - 0.3
    assert accuracy(corrected, ~segment) > 0.7
    assert correction(client)["updates"] == 21 + len(stream)

    log = served_log(settings, adult_spec)
    try:
        logged = log.get([a["event_id"] for a in answers]).set_index("event_id").loc[[a["event_id"] for a in answers]]
        learned = log.served_window(10_000, versions[0]).sort_values("label_seq")
    finally:
        log.close()
    assert logged["probability"].to_numpy() == pytest.approx(corrected, rel=1e-12)
    assert logged["prediction"].tolist() == [a["prediction"] for a in answers]
    assert np.abs(logged["probability"].to_numpy() - raw)[segment].mean() > 0.3

    # The benchmark's corrector, replaying the same labels in the same order, predicts what the service served.
    benchmark = ResidualCorrector(adult_spec, settings.serve_correction_learning_rate)
    benchmark.apply(learned, champion.predict(learned), learned[LABEL])
    assert len(learned) == benchmark.updates == 21 + len(stream)
    expected = benchmark.apply(pd.DataFrame(probe), champion.predict(pd.DataFrame(probe)))
    np.testing.assert_allclose(corrected, expected["probability"].to_numpy(), rtol=1e-9)
    assert [a["prediction"] for a in answers] == expected["prediction"].tolist()
    assert metric(client, "mlplatform_online_correction_terms") == benchmark.learned_terms
    assert metric(client, "mlplatform_online_correction_updates_total") == 21 + len(stream)

    [single] = predict(client, probe[:1])  # the one-row fast path corrects as the batch path does
    assert single["probability"] == pytest.approx(corrected[0], rel=1e-12)


def test_a_repeated_label_teaches_nothing(client: httpx.Client, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    records, labels = rows(adult_rows, slice(21_600, 21_601), adult_spec)
    [answer] = predict(client, records)
    probe, _ = rows(adult_rows, PROBE_ROWS, adult_spec)
    assert feedback(client, answer["event_id"], labels[0]).json()["status"] == "applied"
    updates, before = correction(client)["updates"], probabilities(predict(client, probe))
    assert feedback(client, answer["event_id"], labels[0]).json()["status"] == "unchanged"
    assert correction(client)["updates"] == updates
    assert probabilities(predict(client, probe)).tolist() == before.tolist()


def test_a_restart_warms_from_the_log_and_answers_as_before(restarted: httpx.Client, before_restart: dict[str, Any],
                                                            adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    probe, _ = rows(adult_rows, PROBE_ROWS, adult_spec)
    assert correction(restarted) == {"enabled": True, "updates": before_restart["updates"]}
    answers = predict(restarted, probe)
    np.testing.assert_allclose(probabilities(answers), probabilities(before_restart["answers"]), rtol=1e-9)
    assert [a["prediction"] for a in answers] == [a["prediction"] for a in before_restart["answers"]]
    assert metric(restarted, "mlplatform_online_correction_terms") == before_restart["terms"]


def test_a_promotion_resets_the_correction_and_only_the_serving_versions_labels_teach_it(
        restarted: httpx.Client, settings: Settings, registry: Registry, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
        versions: list[int], predictors: dict[int, Predictor]) -> None:
    old, new = versions
    records, labels = rows(adult_rows, slice(21_700, 21_703), adult_spec)
    probe, _ = rows(adult_rows, PROBE_ROWS, adult_spec)
    [by_old] = predict(restarted, records[:1])
    landing = canonical(adult_rows.iloc[21_703:21_704], adult_spec).assign(label=None)
    log = served_log(settings, adult_spec)
    try:
        log.append(landing, "landing")
    finally:
        log.close()

    registry.promote(new)
    wait_for_version(restarted, new)
    assert correction(restarted) == {"enabled": True, "updates": 0}
    assert metric(restarted, "mlplatform_online_correction_terms") == 0
    raw = predictors[new].predict(pd.DataFrame(probe))["probability"].to_numpy()
    np.testing.assert_allclose(probabilities(predict(restarted, probe)), raw, rtol=1e-12)

    [by_new] = predict(restarted, records[1:2])
    assert feedback(restarted, by_new["event_id"], labels[1]).json()["status"] == "applied"
    assert correction(restarted)["updates"] == 1  # the serving version's own label does teach it
    learned = probabilities(predict(restarted, probe))
    assert not np.allclose(learned, raw, rtol=1e-9)
    for event_id, label in ((by_old["event_id"], labels[0]), (landing["event_id"].iloc[0], canonical_labels(adult_rows.iloc[21_703:21_704], adult_spec).iloc[0])):
        assert feedback(restarted, event_id, label).json()["status"] == "applied"
    assert correction(restarted)["updates"] == 1
    assert probabilities(predict(restarted, probe)).tolist() == learned.tolist()
    assert metric(restarted, "mlplatform_errors_total", kind="online_correction") == 0


@pytest.mark.timeout(60)  # were the check gone, `serve` would run until stopped
def test_multiclass_with_the_correction_on_refuses_to_start(tmp_path: Path) -> None:
    """Refused before a store is opened: no MLflow database, no event log is created for a model that cannot be served."""
    spec_path = tmp_path / "colours.yaml"
    spec_path.write_text("name: colours\ntask: multiclass\nlabel: y\nclasses: [red, green, blue]\nfeatures: {x: numeric}\n", encoding="utf-8")
    settings = Settings(state_dir=tmp_path / "state", serve_online_correction=True, serve_port=free_port())
    colours = ModelContext("colours", settings, load_spec(spec_path), spec_path)
    with pytest.raises(SettingsError, match="serve_online_correction is on for dataset 'colours' .*, but it is multiclass"):
        serve(settings, [colours])
    assert not (tmp_path / "state" / "mlflow").exists() and not (tmp_path / "state" / "events").exists()


def test_correction_settings_are_off_by_default_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.serve_online_correction, defaults.serve_correction_learning_rate, defaults.serve_correction_warm_events) == (False, 0.5, 5000)
    monkeypatch.setenv("MLPLATFORM_SERVE_ONLINE_CORRECTION", "1")
    monkeypatch.setenv("MLPLATFORM_SERVE_CORRECTION_WARM_EVENTS", "0")
    assert (Settings().serve_online_correction, Settings().serve_correction_warm_events) == (True, 0)
    for name, value in (("MLPLATFORM_SERVE_CORRECTION_LEARNING_RATE", "0"), ("MLPLATFORM_SERVE_CORRECTION_LEARNING_RATE", "1.5"),
                        ("MLPLATFORM_SERVE_CORRECTION_WARM_EVENTS", "-1")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ValidationError, match=name.removeprefix("MLPLATFORM_").lower()):
                Settings()
