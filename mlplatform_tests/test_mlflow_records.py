"""MLflow-native records of a retraining, against the real MLflow store: the training window and hold-out are the
challenger run's dataset inputs (sourced from the event log with their event-id/time range, a content digest, the
schema), the evaluation artifacts are in its run, and `search_logged_models` ranks the versions on one hold-out with
the champion first. Per-segment quality is checked against hand-computed numbers and odd inputs."""

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlplatform.domain.evaluation import MISSING_SEGMENT, score, segment_quality
from mlplatform.domain.keys import CHANGE_WINDOW, CHOSEN_WINDOW, REFIT, REFIT_ROWS, WINDOW_CANDIDATES, WINDOW_SCORES
from mlplatform.domain.timeformat import iso_time
from mlplatform.domain.predictor import PREDICTION, PROBABILITY
from mlplatform.domain.spec import DatasetSpec, load_spec, parse_spec
from mlplatform.domain.training import TrainingConfig, train
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL, validate_frame
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import FEATURES, TRAINED_MODEL
from mlplatform.pipeline.replay import read_source, write_batches
from mlplatform.pipeline.retraining import HOLDOUT_FILE, TRAIN_FILE, FeatureSnapshot
from mlplatform.settings import REPO_ROOT, Settings
from mlplatform.stores.mlflow_records import HOLDOUT_METRIC_PREFIX, SOURCE_TYPE, EventLogSource, content_digest, evaluate_version, window_dataset
from mlplatform.stores.eventlog import EventLog
from mlplatform.stores.registry import Registry, logged_model_id
from mlplatform_tests.support.loop import LOOP, failures, materialize, model, names

SOURCE = {"event_log": "e.sqlite", "first_event_id": "a-1", "last_event_id": "a-9", "start": "2026-01-01T00:00:00+00:00",
          "end": "2026-01-02T00:00:00+00:00", "label_seq_cutoff": 9}
CURVES = {"roc_curve.png", "precision_recall_curve.png", "calibration_curve.png", "confusion_matrix.png", "segment_quality.csv"}


def _inputs(client: MlflowClient, run_id: str) -> dict[str, mlflow.entities.DatasetInput]:
    """The run's dataset inputs by their MLflow context."""
    return {{t.key: t.value for t in d.tags}["mlflow.data.context"]: d for d in client.get_run(run_id).inputs.dataset_inputs}


def _source(dataset_input: mlflow.entities.DatasetInput) -> dict[str, object]:
    assert dataset_input.dataset.source_type == SOURCE_TYPE
    return json.loads(dataset_input.dataset.source)


def test_a_retrain_logs_its_windows_evaluation_and_ranks_versions_on_the_holdout(
    state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_PROMOTION_MARGIN", "0")  # the champion is then the best version on the latest hold-out
    monkeypatch.setenv("MLPLATFORM_TRAINING_WINDOW_CANDIDATES", "[50000, 1500]")  # both fitted on these windows: one is chosen
    adult, reg = names(), model().registry
    client = reg.client
    digests = []
    for batch, rows in enumerate((adult_rows.iloc[:2400], adult_rows.iloc[2400:4400])):
        write_batches(rows, adult_spec, state.landing_dir, 1000, prefix=f"part{batch}")
        result = materialize(instance, LOOP)
        assert result.success, failures(result)
        features = latest_metadata(instance, adult.asset(FEATURES))
        trained = latest_metadata(instance, adult.asset(TRAINED_MODEL))
        assert features is not None and trained is not None
        snapshot = FeatureSnapshot.load(Path(str(trained["snapshot"])))
        version = reg.get_version(int(str(trained["mlflow_version"])))
        inputs = _inputs(client, version.run_id)
        assert set(inputs) == {"training", "evaluation"}  # evaluate() logged the same hold-out again: no third input

        train_part, holdout = pd.read_parquet(snapshot.folder / TRAIN_FILE), pd.read_parquet(snapshot.folder / HOLDOUT_FILE)
        candidates = {c["window"]: c for c in trained[WINDOW_SCORES]}  # type: ignore[union-attr]
        assert sorted(candidates) == [1500, 50000] and candidates[1500]["train_rows"] == 1500 - len(holdout)
        assert candidates[50000]["train_rows"] == len(train_part) and all(c["skipped"] is None for c in candidates.values())
        chosen = candidates[int(str(trained[CHOSEN_WINDOW]))]
        best_score = max(c["holdout_score"] for c in candidates.values())
        assert chosen["holdout_score"] == best_score  # roc_auc: higher wins
        run = client.get_run(version.run_id).data
        assert run.params[CHOSEN_WINDOW] == str(chosen["window"]) and run.params[WINDOW_CANDIDATES] == "50000,1500"
        # no champion yet, then one whose errors did not rise on this stationary stream: no window since a change
        assert run.params[CHANGE_WINDOW] == trained[CHANGE_WINDOW] == "none"
        assert {k: v for k, v in run.metrics.items() if k.startswith("window_")} == {f"window_{w}_holdout_roc_auc": c["holdout_score"] for w, c in candidates.items()}
        # what the served model was trained on, logged as its training input: the chosen window's rows, refit with the hold-out
        train_part = pd.concat([train_part.iloc[-chosen["train_rows"] :], holdout], ignore_index=True)
        assert run.params[REFIT] == "true" and run.metrics[REFIT_ROWS] == len(train_part) == trained[REFIT_ROWS]
        train_source, holdout_source = _source(inputs["training"]), _source(inputs["evaluation"])
        assert train_source == {"event_log": model().event_log.location, "first_event_id": str(train_part[EVENT_ID].iloc[0]),
                                "last_event_id": str(train_part[EVENT_ID].iloc[-1]), "start": iso_time(train_part[EVENT_TIME].iloc[0]), "end": features["window_end"],
                                "label_seq_cutoff": int(train_part["label_seq"].max())}
        assert holdout_source["first_event_id"] == str(holdout[EVENT_ID].iloc[0]) and holdout_source["last_event_id"] == features["last_event_id"]
        assert holdout_source["end"] == features["window_end"] and holdout_source["label_seq_cutoff"] == features["label_seq_cutoff"]
        assert inputs["training"].dataset.digest == content_digest(train_part) and inputs["evaluation"].dataset.digest == content_digest(holdout)
        schema = json.loads(inputs["training"].dataset.schema)["mlflow_colspec"]
        assert {c["name"] for c in schema} >= {*adult_spec.features, LABEL}
        assert isinstance(mlflow.data.get_source(inputs["training"]), EventLogSource)
        digests.append((inputs["training"].dataset.digest, inputs["evaluation"].dataset.digest))

        artifacts = {f.path for f in client.list_artifacts(version.run_id)}
        assert CURVES <= artifacts, artifacts
        segments = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="segment_quality.csv", tracking_uri=reg.tracking_uri))
        assert set(segments["feature"]) == set(adult_spec.categorical_features)
        assert segments["rows"].min() >= 30 and segments[["accuracy", "precision", "recall"]].stack().between(0, 1).all()

    assert len(set(digests)) == 2 and all(train != holdout for train, holdout in digests)
    holdout_name = f"{adult_spec.name}-holdout"
    on_latest = {"dataset_name": holdout_name, "dataset_digest": digests[-1][1]}
    ranked = client.search_logged_models([reg.experiment_id], datasets=[on_latest],
                                         order_by=[{"field_name": f"metrics.{HOLDOUT_METRIC_PREFIX}roc_auc", "ascending": False, **on_latest}])
    assert ranked[0].model_id == logged_model_id(reg.champion())
    assert {m.model_id for m in ranked} == {logged_model_id(reg.get_version(1)), logged_model_id(reg.get_version(2))}
    first_only = client.search_logged_models([reg.experiment_id], datasets=[{"dataset_name": holdout_name, "dataset_digest": digests[0][1]}],
                                             filter_string=f"metrics.{HOLDOUT_METRIC_PREFIX}roc_auc > 0")
    assert [m.model_id for m in first_only] == [logged_model_id(reg.get_version(1))]


@pytest.fixture
def trained(tmp_path: Path) -> Iterator[tuple[Registry, DatasetSpec, pd.DataFrame]]:
    """A bike-sharing version logged straight through the registry (no Dagster), with its hold-out from the event log."""
    spec = load_spec(REPO_ROOT / "data" / "bike_sharing.yaml")
    log = EventLog(tmp_path / "events.sqlite", spec)
    log.append(validate_frame(read_source(spec).head(1500), spec, generated_id_prefix="b", generated_time_start_us=0).events, "test")
    window = log.labelled_window(1500)
    log.close()
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri(), spec)
    result = train(window.iloc[:1200], spec, TrainingConfig(trials=1, min_rows=100))
    registry.log_model(result, window.iloc[:1200], {}, {})
    yield registry, spec, window.iloc[1200:]


def test_a_regression_version_gets_residuals_and_segments_from_mlflows_evaluator(trained: tuple[Registry, DatasetSpec, pd.DataFrame]) -> None:
    registry, spec, holdout = trained
    predicted = registry.load_predictor(1).predict(holdout)
    dataset = window_dataset(spec, holdout, "events.sqlite", "holdout")
    scores = {1: {"rmse": 50.0}}
    metrics = registry.record_evaluation(dataset, 1, predicted, scores)
    assert metrics["root_mean_squared_error"] > 0 and metrics["example_count"] == len(holdout)
    run_id = registry.get_version(1).run_id
    assert {"residuals.png", "segment_quality.csv"} <= {f.path for f in registry.client.list_artifacts(run_id)}
    logged = registry.client.get_logged_model(logged_model_id(registry.get_version(1)))
    on_holdout = {m.key: m.value for m in logged.metrics or [] if m.dataset_digest == dataset.digest}
    assert on_holdout[f"{HOLDOUT_METRIC_PREFIX}rmse"] == 50.0 and on_holdout["root_mean_squared_error"] == metrics["root_mean_squared_error"]


def test_a_multiclass_version_is_evaluated_by_mlflow_as_the_platform_scores_it(tmp_path: Path) -> None:
    """MLflow's precision, recall and F1 are the platform's (macro over the classes, not MLflow's default weighted), and a
    class too rare to be predicted scores 0 without an UndefinedMetricWarning on the terminal."""
    spec = parse_spec({"name": "weather", "task": "multiclass", "label": "kind", "classes": ["clear", "mist", "rain", "storm"],
                       "features": {"x": "numeric", "z": "numeric"}})
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=1500), rng.normal(size=1500)
    kind = np.where(x > 0.6, "rain", np.where(z > 0.3, "mist", "clear")).astype(object)
    kind[[100, 700, 1300, 1400]] = "storm"
    log = EventLog(tmp_path / "events.sqlite", spec)
    log.append(validate_frame(pd.DataFrame({"x": x, "z": z, "kind": kind}), spec, generated_id_prefix="w", generated_time_start_us=0).events, "test")
    events = log.labelled_window(1500)
    log.close()
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri(), spec)
    registry.log_model(train(events.iloc[:1200], spec, TrainingConfig(trials=1, min_rows=100)), events.iloc[:1200], {}, {})
    holdout = events.iloc[1200:]
    predicted = registry.load_predictor(1).predict(holdout)
    ours = score(spec, holdout[LABEL], predicted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = registry.record_evaluation(window_dataset(spec, holdout, "events.sqlite", "holdout"), 1, predicted, {1: ours})
    assert not [w for w in caught if w.category.__name__ == "UndefinedMetricWarning"], [str(w.message) for w in caught]
    assert "storm" not in set(predicted[PREDICTION]) and ours["f1"] < 0.9
    for theirs, mine in (("f1_score", "f1"), ("precision_score", "precision"), ("recall_score", "recall")):
        assert metrics[theirs] == pytest.approx(ours[mine], abs=1e-12), (theirs, metrics[theirs], ours[mine])
    # One class labelled and predicted (review: MLflow refused fewer than two labels, and evaluation_report failed every retry).
    one = holdout[(holdout[LABEL] == "clear").to_numpy()].head(40)
    alone = registry.load_predictor(1).predict(one).assign(**{PREDICTION: "clear"})
    assert registry.record_evaluation(window_dataset(spec, one, "events.sqlite", "holdout-one"), 1, alone, {1: score(spec, one[LABEL], alone)})


def test_a_one_class_holdout_is_still_evaluated(state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """ROC and PR are undefined on one class: the evaluation is still recorded (confusion matrix, segments) rather than failing."""
    write_batches(adult_rows.iloc[:1200], adult_spec, state.landing_dir, 1200)
    result = materialize(instance, LOOP[:3])
    assert result.success, failures(result)
    trained = latest_metadata(instance, names().asset(TRAINED_MODEL))
    assert trained is not None
    holdout = FeatureSnapshot.load(Path(str(trained["snapshot"]))).holdout
    holdout = holdout[holdout[LABEL] == "<=50K"]
    reg = model().registry
    version = reg.get_version(1)
    metrics = evaluate_version(adult_spec, window_dataset(adult_spec, holdout, "events", "holdout"), reg.load_predictor(1).predict(holdout),
                               logged_model_id(version), version.run_id)
    assert metrics["example_count"] == len(holdout)
    assert {"confusion_matrix.png", "segment_quality.csv"} <= {f.path for f in reg.client.list_artifacts(version.run_id)}


def _binary_spec() -> DatasetSpec:
    return load_spec(REPO_ROOT / "data" / "adult.yaml")


def test_segment_quality_matches_hand_computed_numbers() -> None:
    spec = _binary_spec()
    frame = pd.DataFrame({feature: "x" for feature in spec.categorical_features}, index=range(6))
    frame["sex"] = ["F", "F", "F", "M", "M", "M"]
    frame[LABEL] = [">50K", ">50K", "<=50K", ">50K", "<=50K", "<=50K"]
    predicted = pd.DataFrame({PREDICTION: [">50K", "<=50K", ">50K", ">50K", "<=50K", "<=50K"], PROBABILITY: [0.9, 0.4, 0.6, 0.8, 0.1, 0.2]})
    table = segment_quality(spec, frame, predicted, min_rows=3).set_index(["feature", "segment"])
    women, men = table.loc[("sex", "F")], table.loc[("sex", "M")]
    assert (women["rows"], women["accuracy"], women["precision"], women["recall"], women["positive_rate"]) == (3, pytest.approx(1 / 3), 0.5, 0.5, pytest.approx(2 / 3))
    assert (men["accuracy"], men["precision"], men["recall"], men["f1"]) == (1.0, 1.0, 1.0, 1.0)
    assert table.loc[("race", "x")]["rows"] == 6


def test_segment_quality_with_missing_values_rare_values_and_no_positive_predictions() -> None:
    spec = _binary_spec()
    frame = pd.DataFrame({feature: None for feature in spec.categorical_features}, index=range(5))
    frame["sex"] = ["F", "F", "F", "F", "M"]
    frame[LABEL] = ["<=50K"] * 5
    predicted = pd.DataFrame({PREDICTION: ["<=50K"] * 5, PROBABILITY: [0.1] * 5})
    table = segment_quality(spec, frame, predicted, min_rows=2)
    sex = table[table["feature"] == "sex"]
    assert list(sex["segment"]) == ["F"]  # M has one row, below min_rows
    assert (sex["precision"].item(), sex["recall"].item(), sex["f1"].item()) == (0.0, 0.0, 0.0)
    assert set(table[table["feature"] == "race"]["segment"]) == {MISSING_SEGMENT}
    assert segment_quality(spec, frame, predicted, min_rows=10).empty


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"event_log": "e.sqlite"}, "missing ['end', 'first_event_id', 'label_seq_cutoff', 'last_event_id', 'start']"),
        ({**SOURCE, "bucket": "s3://x"}, "unknown ['bucket']"),
        ({**SOURCE, "label_seq_cutoff": "12"}, "wrong type ['label_seq_cutoff']"),
        ({**SOURCE, "first_event_id": 7}, "wrong type ['first_event_id']"),
    ],
)
def test_a_malformed_logged_source_is_refused_naming_its_fields(source: dict[str, object], message: str) -> None:
    with pytest.raises(MlflowException, match=re.escape(message)):
        EventLogSource.from_json(json.dumps(source))
    assert EventLogSource.from_json(json.dumps(SOURCE)) == EventLogSource(**SOURCE)
