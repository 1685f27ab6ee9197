"""Drift reports against a real event log, MLflow store and Dagster instance, with real Evidently."""

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pydantic
import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from mlflow.tracking import MlflowClient

from mlplatform.pipeline.drift import PREDICTION_COLUMN, DriftError, DriftReport, DriftSkipped, ReferenceWindow, build_drift_report, compare
from mlplatform.stores.reports import html_path, load_snapshot, render_snapshot
from mlplatform.stores.eventlog import EventLog
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.domain.keys import REASON_TAG
from mlplatform.orchestration.names import ModelNames
from mlplatform_tests.support.loop import materialize, model
from mlplatform.cli.status import collect_status, render_status
from mlplatform.domain.policy import DRIFT
from mlplatform.pipeline.landing import ingest_pending
from mlplatform.pipeline.replay import DriftScenario, inject_drift, write_batches
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import LABEL
from mlplatform_tests.monitoring_support import CHAMPION_ROWS, Platform, shuffled_stream, trained_platform

DRIFTED = DriftScenario(
    shift_numeric={"age": 1.5, "hours-per-week": 1.5, "education-num": 1.0, "capital-gain": 1.0},
    category_mix={"workclass": "Self-emp-inc", "occupation": "Sales", "marital-status": "Never-married", "relationship": "Own-child"},
    seed=3,
)
SHIFTED = {"age", "hours-per-week", "education-num", "workclass", "occupation", "marital-status", "relationship"}


def _typed(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Replayed rows as the event log returns them: numeric features as floats, the label mapped to its class."""
    out = rows[list(spec.features)].copy()
    for name in spec.numeric_features:
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    out[LABEL] = rows[spec.label].str.strip().replace(spec.label_map)
    return out.reset_index(drop=True)


ADULT = ModelNames("adult")
DRIFT_REPORT = ADULT.asset("drift_report")
SENSOR_NAME = ADULT.retraining_sensor


def _check_result(instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(DRIFT_REPORT, "drift_check")])[dg.AssetCheckKey(DRIFT_REPORT, "drift_check")]
    assert record.event is not None and record.event.dagster_event is not None
    return record.event.dagster_event.event_specific_data  # type: ignore[return-value]


def test_no_champion_skips_with_an_explanation(state: Settings, instance: dg.DagsterInstance) -> None:
    adult = model()
    skipped = build_drift_report(state, adult.spec, adult.event_log, adult.registry)
    assert isinstance(skipped, DriftSkipped) and "no champion yet" in skipped.reason
    assert materialize(instance, ["drift_report"]).success
    meta = latest_metadata(instance, DRIFT_REPORT) or {}
    assert meta["skipped"] is True and "no champion yet" in str(meta["skip_reason"])
    check = _check_result(instance)
    assert check.passed and "no drift measured" in (check.description or "")


def test_reference_window_needs_readable_tags() -> None:
    version = ModelVersion(name="m", version="3", creation_timestamp=0, tags=[ModelVersionTag("mlplatform.window.start", "not a time")])
    with pytest.raises(DriftError, match="v3 has no readable data window"):
        ReferenceWindow.of(version)


@pytest.mark.parametrize("bad", [{"MLPLATFORM_DRIFT_SAMPLE_ROWS": "1000"}, {"MLPLATFORM_DRIFT_SHARE_THRESHOLD": "0"}, {"MLPLATFORM_DRIFT_CURRENT_HOURS": "-1"}, {"MLPLATFORM_DRIFT_EVERY_N_EVENTS": "0"}])
def test_drift_settings_reject_bad_values(bad: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in bad.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_compare_handles_missing_constant_unseen_and_unlabelled_columns(adult_spec: DatasetSpec, adult_rows: pd.DataFrame, tmp_path: Path) -> None:
    reference = _typed(adult_rows.iloc[:2000], adult_spec)
    current = _typed(adult_rows.iloc[2000:3500], adult_spec)
    reference["race"] = "White"  # constant on one side
    reference["capital-loss"] = 0.0  # constant numeric on one side
    current["capital-gain"] = np.nan  # all missing on one side
    reference["native-country"] = None  # empty on both sides: nothing to compare
    current["native-country"] = None
    current.loc[current.index % 2 == 0, "workclass"] = "Moon-base"  # a category the reference never saw
    current[LABEL] = None  # no labels yet in the current window
    reference[PREDICTION_COLUMN] = np.linspace(0, 1, len(reference))
    current[PREDICTION_COLUMN] = np.linspace(0, 1, len(current))
    path = tmp_path / "report.json.xz"
    columns, prediction, target, evidently_count = compare(adult_spec, reference, current, 0.5, path)
    by_name = {c.column: c for c in columns}
    assert "native-country" not in by_name and len(columns) == len(adult_spec.features) - 1
    assert by_name["capital-gain"].drifted and by_name["capital-gain"].method == "all missing in current"
    assert by_name["race"].drifted and math.isfinite(by_name["race"].score)
    assert by_name["capital-loss"].drifted and math.isfinite(by_name["capital-loss"].score)
    assert by_name["workclass"].drifted and by_name["workclass"].method == "Jensen-Shannon distance"
    assert not by_name["age"].drifted and by_name["age"].method == "Wasserstein distance (normed)"
    assert target is None, "no target drift without labels in the current window"
    assert prediction is not None and not prediction.drifted
    assert evidently_count == sum(c.drifted for c in columns if c.column != "capital-gain"), "per-column verdicts agree with Evidently's count"
    assert 10_000 < path.stat().st_size < 100_000 and "<html" in render_snapshot(path)[:2000].lower()
    # A feature the spec gained after the champion was trained: all missing in its window, and no input of it (probe: drifted).
    gained = reference.assign(**{"hours-per-week": np.nan})
    columns, *_ = compare(adult_spec, gained, current, 0.5, tmp_path / "gained.json.xz", inputs=[f for f in adult_spec.features if f != "hours-per-week"])
    assert "hours-per-week" not in {c.column for c in columns} and "age" in {c.column for c in columns}


@pytest.mark.parametrize("rows", [1000, 2000])  # Evidently's categorical test: chi-square up to 1000 rows, Jensen-Shannon above
def test_a_categorical_of_thousands_of_values_is_no_drift_when_its_mix_holds(adult_spec: DatasetSpec, adult_rows: pd.DataFrame, tmp_path: Path,
                                                                             rows: int) -> None:
    """The own-dataset probe: a store id of 3,000 values drifted in every report, its mix unchanged (compared one by one,
    categories seen once or twice in a sample are noise). Rare and new categories are compared as one: a new one that
    takes a fifth of the events still drifts."""
    from mlplatform.pipeline.drift import RARE_CATEGORY, _lumped

    rng = np.random.default_rng(7)
    reference = _typed(adult_rows.iloc[:rows], adult_spec).assign(occupation=[f"s{i}" for i in rng.integers(0, 3000, rows)])
    current = _typed(adult_rows.iloc[rows : 2 * rows], adult_spec).assign(occupation=[f"s{i}" for i in rng.integers(0, 3000, rows)])
    columns, *_ = compare(adult_spec, reference, current, 0.5, tmp_path / "report.json.xz")
    assert not next(c for c in columns if c.column == "occupation").drifted
    moved = current.assign(occupation=np.where(np.arange(rows) % 5 == 0, "airport", current["occupation"]))
    columns, *_ = compare(adult_spec, reference, moved, 0.5, tmp_path / "moved.json.xz")
    assert next(c for c in columns if c.column == "occupation").drifted
    common = reference.assign(occupation=np.where(np.arange(rows) % 2 == 0, "a", "b"))  # nothing rare: compared as they are
    columns, *_ = compare(adult_spec, common, common.assign(occupation="a"), 0.5, tmp_path / "common.json.xz")
    assert next(c for c in columns if c.column == "occupation").drifted
    kept, _ = _lumped(common["occupation"], common["occupation"])
    assert kept is common["occupation"], "nothing rare: the column itself"
    rare, new = _lumped(pd.Series(["a"] * 5 + ["b"] * 4 + [None]), pd.Series(["a", "c", "c", "c", "c", "c", "d"]))
    assert rare.tolist() == ["a"] * 5 + [RARE_CATEGORY] * 4 + [None] and new.tolist() == ["a", *["c"] * 5, RARE_CATEGORY]


@pytest.mark.parametrize("rows", [1000, 2000])  # Evidently's test of a column of few values: chi-square up to 1000 rows, Jensen-Shannon above
def test_a_numeric_column_of_few_values_in_another_float_spelling_is_no_drift(adult_spec: DatasetSpec, adult_rows: pd.DataFrame, tmp_path: Path,
                                                                              rows: int) -> None:
    """A probe served scikit-learn's diabetes data read back by pandas' float parser: `sex` (two values) came as
    -0.0446416365069891 where the export said -0.044641636506989144. Compared value by value, every served value was
    new: the column drifted (p = 0) with nothing changed."""
    reference = _typed(adult_rows.iloc[:rows], adult_spec)
    reference["capital-loss"] = np.where(np.arange(rows) % 2 == 0, -0.044641636506989144, 0.05068011873981862)
    current = reference.assign(**{"capital-loss": np.nextafter(reference["capital-loss"].to_numpy(), np.inf)})  # the last bit differs
    assert not set(reference["capital-loss"]) & set(current["capital-loss"])
    columns, *_ = compare(adult_spec, reference, current, 0.5, tmp_path / "report.json.xz")
    assert not next(c for c in columns if c.column == "capital-loss").drifted
    flipped = reference.assign(**{"capital-loss": np.where(np.arange(rows) % 5 == 0, -0.044641636506989144, 0.05068011873981862)})
    columns, *_ = compare(adult_spec, reference, flipped, 0.5, tmp_path / "flipped.json.xz")
    assert next(c for c in columns if c.column == "capital-loss").drifted, "a changed mix of the two values still is drift"


@pytest.mark.parametrize("rows", [1000, 2000])  # Evidently's numeric test: K-S up to 1000 rows, the Wasserstein distance above
def test_compare_takes_valid_numbers_near_the_float_limit(adult_spec: DatasetSpec, adult_rows: pd.DataFrame, tmp_path: Path, rows: int) -> None:
    """1.7e308 is a valid number a request or a file may carry; Evidently's histograms failed on such a range ("Too
    many bins"), and the drift run was retried as if the failure were transient. Above 1000 rows (probe) one such value
    made the column's Wasserstein distance 5.6e96, the column drifted, and with it the dataset."""
    reference = _typed(adult_rows.iloc[:rows], adult_spec)
    current = reference.copy()  # the same rows but for the extreme values
    current.loc[current.index[:3], "age"] = [1.7e308, 1.7e308, -1.7e308]
    reference.loc[reference.index[:1], "hours-per-week"] = -1.7e308
    columns, *_ = compare(adult_spec, reference, current, 0.5, tmp_path / "report.json.xz")
    by_name = {c.column: c for c in columns}
    assert not by_name["age"].drifted and not by_name["hours-per-week"].drifted, "three rows in a thousand are no drift"
    if rows > 1000:
        assert by_name["age"].method == "Wasserstein distance (normed)" and by_name["age"].score < 0.1
        far = reference.assign(age=reference["age"] + 1000.0)  # every value beyond the bounds: clipped to them, and still a shift
        columns, *_ = compare(adult_spec, reference, far, 0.5, tmp_path / "far.json.xz")
        assert next(c for c in columns if c.column == "age").drifted
    assert current["age"].iloc[0] == 1.7e308, "the caller's frame is left as it was"


def test_few_valued_columns_of_a_small_reference_are_compared_as_two_samples(tmp_path: Path) -> None:
    """The estimation probe: on a 200-row reference, Evidently's chi-square took the reference's shares as exact (25 of
    40 column verdicts drifted on a stationary stream, p = 1e-7 where a two-sample test gives 0.075), and one value only
    the current side had, in one row of 850, made its column drifted at p = 0."""
    from mlplatform.domain.spec import parse_spec

    spec = parse_spec({"name": "p", "task": "binary", "label": "y", "classes": ["0", "1"], "positive_class": "1",
                       "features": {"a": "numeric", "c": "categorical"}})
    rng = np.random.default_rng(0)

    def frame(n: int, shares: tuple[float, float, float] = (0.5, 0.3, 0.2)) -> pd.DataFrame:
        return pd.DataFrame({"a": rng.choice([0.0, 0.5, 1.0], n, p=shares), "c": rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1])})

    verdicts = [c for i in range(20) for c in compare(spec, frame(200), frame(1000), 0.5, tmp_path / f"r{i}.json.xz")[0]]
    assert {c.method for c in verdicts} == {"chi-square two-sample p_value"}
    assert sum(c.drifted for c in verdicts) <= 6, [round(c.score, 4) for c in verdicts]  # 5 % expected of 40; 25 before
    odd = frame(850)
    odd.loc[0, "a"], odd.loc[1, "c"] = 2.0, "maybe"
    assert not any(c.drifted for c in compare(spec, frame(200), odd, 0.5, tmp_path / "odd.json.xz")[0])
    shifted = compare(spec, frame(200), frame(1000, (0.2, 0.3, 0.5)), 0.5, tmp_path / "shift.json.xz")[0]
    assert [(c.column, c.drifted) for c in shifted] == [("a", True), ("c", False)] and shifted[0].score < 1e-6
    large = compare(spec, frame(2000), frame(2000), 0.5, tmp_path / "large.json.xz")[0]
    assert {c.method for c in large} == {"Jensen-Shannon distance"}, "above 1000 reference rows, Evidently's distance as before"
    half = frame(1500).assign(c=lambda f: f["c"].where(np.arange(1500) % 2 == 0))  # 750 values: small, as Evidently counts them (the review)
    assert {c.column: c.method for c in compare(spec, half, frame(1500), 0.5, tmp_path / "half.json.xz")[0]}["c"] == "chi-square two-sample p_value"


def test_sample_between_is_bounded_uniform_and_rejects_empty_ranges(state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    log = EventLog.for_dataset(state.events_dir, adult_spec)
    write_batches(adult_rows.iloc[:4000], adult_spec, state.landing_dir, 4000)
    ingest_pending(state.landing_dir, adult_spec, log)
    first, last = log.time_range() or (0, 0)
    assert log.count_between(first, last + 1) == 4000
    sample = log.sample_between(first, last + 1, 1000)
    assert len(sample) == 1000 and sample["event_id"].is_unique and sample["event_time"].is_monotonic_increasing
    everything = log.events_between(first, last + 1)
    assert abs(sample["age"].mean() - everything["age"].mean()) < 3 * everything["age"].std() / math.sqrt(1000)
    assert len(log.sample_between(first, last + 1, 10_000)) == 4000, "a window smaller than the sample is read whole"
    assert log.sample_between(last + 1, first, 100).empty and log.sample_between(first, last + 1, 0).empty
    assert log.count_between(first, last + 1, max_label_seq=100) == 100


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory: pytest.TempPathFactory, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Iterator[Platform]:
    """A champion trained on a stationary stream; new observations never trigger here, only drift could."""
    env = {"MLPLATFORM_RETRAIN_EVERY_N": "1000000", "MLPLATFORM_MIN_NEW_LABELLED_FOR_DRIFT": "100", "MLPLATFORM_DRIFT_MIN_CURRENT_ROWS": "100"}
    with trained_platform(tmp_path_factory.mktemp("drift") / "state", adult_spec, shuffled_stream(adult_rows, seed=11), **env) as platform:
        yield platform


def test_empty_current_window_is_skipped(shuffled: Platform) -> None:
    shuffled.materialize("drift_report")
    meta = latest_metadata(shuffled.instance, DRIFT_REPORT) or {}
    assert meta["skipped"] is True and meta["champion_version"] == 1
    assert str(meta["skip_reason"]).startswith("0 events since champion v1's data window")
    said = render_status(collect_status(shuffled.model, with_dagster=True))
    assert "drift: the latest drift_report made no report (0 events since champion v1's data window" in said, said


def test_events_landed_late_with_times_inside_the_window_are_compared(shuffled: Platform) -> None:
    """A file of events timed inside the champion's window but landed after its training (older data arriving late, or a
    window that served events stamped with the server's clock ended) is what the champion never saw: the current side."""
    late = shuffled.next_rows(120).assign(event_time=shuffled.rows["event_time"].iloc[:120].to_numpy())
    shuffled.ingest(late)
    shuffled.materialize("drift_report")
    meta = latest_metadata(shuffled.instance, DRIFT_REPORT) or {}
    assert meta["skipped"] is False and meta["current_rows"] == 120, meta
    # No event is timed after the window: the snapshot names the late arrivals only, with no time range (it read
    # current_from after current_until, the new-user probe).
    said = load_snapshot(Path(str(meta["report_path"])))._metadata
    assert "current_from" not in said and "current_until" not in said and int(said["current_or_arrived_after_seq"]) > 0, said


def test_stationary_stream_triggers_no_drift_retraining_over_ten_reports(shuffled: Platform) -> None:
    cursor = None
    shares = []
    for _ in range(10):
        shuffled.ingest(shuffled.next_rows(150))
        shuffled.materialize("drift_report")
        meta = latest_metadata(shuffled.instance, DRIFT_REPORT) or {}
        shares.append(float(str(meta["drift_share"])))
        result = shuffled.tick(SENSOR_NAME, cursor)
        assert not result.run_requests, f"stationary stream triggered {result.run_requests}"
        cursor = result.cursor
    assert max(shares) < 0.5, shares
    runs = shuffled.instance.get_runs(filters=dg.RunsFilter(tags={REASON_TAG: DRIFT}))
    assert not runs


def test_drifted_stream_is_flagged_then_measured_with_labels(shuffled: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = shuffled.next_rows(1200)
    drifted = inject_drift(rows, shuffled.spec, DRIFTED, reference=shuffled.rows.iloc[:CHAMPION_ROWS])
    monkeypatch.setenv("MLPLATFORM_DRIFT_CURRENT_HOURS", str(1200 * 60 / 3600))  # only the drifted events
    shuffled.replay(drifted, with_labels=False)
    shuffled.materialize("drift_report")
    meta = latest_metadata(shuffled.instance, DRIFT_REPORT) or {}
    assert meta["dataset_drift"] is True and meta["current_rows"] == 1200 and meta["current_labelled"] == 0
    assert SHIFTED <= set(str(meta["drifted_column_names"]).split(", "))
    assert "target_drift" not in meta and "live_recall" not in meta, "no labels in the current window: no target drift, no live metrics"
    assert meta["prediction_drift"] is True
    report = Path(str(meta["report_path"]))
    assert report.is_file() and report.parent == shuffled.settings.reports_dir / "drift"
    champion_run = MlflowClient(shuffled.settings.tracking_uri).get_model_version("mlplatform-adult", "1").run_id
    logged = [a.path for a in MlflowClient(shuffled.settings.tracking_uri).list_artifacts(champion_run, "drift")]
    assert f"drift/{html_path(report).stem}.json" in logged
    check = _check_result(shuffled.instance)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN and "age" in (check.description or "")
    status = collect_status(shuffled.model, with_dagster=True)
    assert status["drift"]["dataset_drift"] is True and status["drift"]["report"] == str(report)
    assert f"drift against v1: share {status['drift']['drift_share']:.2f}, drift yes; report {report}" in render_status(status)
    assert "drift against v1 (not the champion v2" in render_status({**status, "champion": 2}), "a report about an older champion says so"
    assert "drift against v1 (there is no champion now)" in render_status({**status, "champion": None, "no_champion": "none"})
    # The probe: which events the reference was had to be read from the champion's MLflow tags; the report names them.
    tags = shuffled.model.registry.get_version(1).tags
    assert (meta["reference_from"], meta["reference_until"], meta["reference_label_seq_cutoff"]) == (
        tags["mlplatform.window.start"], tags["mlplatform.window.train_end"], int(tags["mlplatform.window.label_seq_cutoff"]))
    # The Evidently UI lists the snapshot with its metadata: it was empty, and where each side came from was not said.
    said = load_snapshot(report)._metadata
    assert {k: said[k] for k in ("model", "champion_version", "reference_from", "reference_until", "current_rows", "current_until")} == {
        "model": "adult", "champion_version": "1", "reference_from": meta["reference_from"], "reference_until": meta["reference_until"],
        "current_rows": "1200", "current_until": meta["current_until"]}
    assert said["reference_rows"] == str(meta["reference_rows"]) and said["current_from"] < said["current_until"]

    shuffled.replay(drifted, with_labels=True)  # the labels arrive late, by event id
    shuffled.materialize("drift_report")
    meta = latest_metadata(shuffled.instance, DRIFT_REPORT) or {}
    assert meta["current_labelled"] == 1200 and 0 <= float(str(meta["live_recall"])) <= 1 and 0 <= float(str(meta["live_precision"])) <= 1
    assert isinstance(meta["target_drift"], bool) and "target_drift_score" in meta


def test_core_report_matches_the_assets_view(shuffled: Platform) -> None:
    shuffled.ingest(shuffled.next_rows(300))  # its own current window: the test does not lean on the ones before it
    adult = model()
    report = build_drift_report(adult.settings, shuffled.spec, adult.event_log, adult.registry)
    assert isinstance(report, DriftReport)
    assert report.reference_rows == report.reference_sampled == int(CHAMPION_ROWS * 0.8)
    assert report.evidently_drifted == len(report.drifted_columns)
    table = report.table(5)
    assert len(table) == 5 and list(table["drift"]) == sorted(table["drift"], reverse=True), "drifted columns first"


def test_a_small_current_window_beside_a_large_reference_is_tested_by_p_values(tmp_path: Path) -> None:
    """The yeast probe: against a large reference Evidently reads a distance against a fixed 0.1 whatever the current
    window's size, and on a few hundred rows that is mostly sampling noise: 200 store ids drawn alike throughout drifted
    in every report at 1,000 current rows (Jensen-Shannon 0.12). A small current window now gets the two-sample
    chi-square (categories) and Kolmogorov-Smirnov (numbers): false alarms at about their 5 %, and a real shift found."""
    from mlplatform.domain.spec import parse_spec

    spec = parse_spec({"name": "s", "task": "regression", "label": "y", "features": {"store": "categorical", **{f"x{i}": "numeric" for i in range(10)}}})
    drifted = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({"store": rng.choice([f"s{i}" for i in range(200)], 6000), **{f"x{i}": rng.lognormal(0, 1.5, 6000) for i in range(10)}})
        columns, *_ = compare(spec, frame.iloc[:5000], frame.iloc[5000:], 0.5, tmp_path / f"{seed}.json")
        assert {c.method for c in columns} == {"chi-square two-sample p_value", "ks"}
        drifted += [c.column for c in columns if c.drifted]
        if seed == 0:
            shifted = frame.iloc[5000:].assign(x0=lambda f: f["x0"] * 1.3)  # the median up by 30 %: about a fifth of σ of the log
            moved, *_ = compare(spec, frame.iloc[:5000], shifted, 0.5, tmp_path / "shifted.json")
            assert [c.column for c in moved if c.drifted][:1] == ["x0"] and moved[1].score < 1e-3, moved[1]
            # Evidently's per-column table sorted by its raw score, highest first: a drifted p-value came last, on page 2.
            rows = next(w["params"]["data"] for w in _widgets(json.loads(load_snapshot(tmp_path / "shifted.json").dumps()))
                        if isinstance(w.get("params"), dict) and "rowsPerPage" in w["params"])
            assert rows[0]["column_name"] == "x0" and rows[0]["data_drift"] == "Detected" and len(rows) == 11, rows[:2]
    assert "store" not in drifted and len(drifted) <= 4, drifted
    big = pd.DataFrame({"store": np.random.default_rng(9).choice(["a", "b"], 4000), **{f"x{i}": np.arange(4000.0) for i in range(10)}})
    assert {c.method for c in compare(spec, big.iloc[:2000], big.iloc[2000:], 0.5, tmp_path / "big.json")[0]} == \
        {"Wasserstein distance (normed)", "Jensen-Shannon distance"}, "both sides large: Evidently's own choice"


def _widgets(snapshot: Any) -> Iterator[dict[str, Any]]:
    """Every widget of a snapshot's JSON, nested ones included."""
    if isinstance(snapshot, dict):
        if "params" in snapshot:
            yield snapshot
        for value in snapshot.values():
            yield from _widgets(value)
    elif isinstance(snapshot, list):
        for value in snapshot:
            yield from _widgets(value)
