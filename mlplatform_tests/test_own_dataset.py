"""A new user's dataset, taken through the README alone: spec from YAML text, files generated here, replayed into
the landing folder and ingested into a real event log. Each trap of issue 18 has its test."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform import cli
from mlplatform.domain.spec import DatasetSpec, load_spec
from mlplatform.domain.timeformat import parse_event_times
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL
from mlplatform.pipeline.landing import IngestReport, ingest_pending
from mlplatform.pipeline.replay import LandingSink, ReplayError, read_source, run_stream, select_stream
from mlplatform.settings import REPO_ROOT
from mlplatform.stores.eventlog import EventLog
from mlplatform_tests.conftest import FAST_TRAINING


@pytest.fixture(autouse=True)
def _files_written_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests write each landing file whole before ingesting it: no 2 s quiet period to wait out (as the `state`
    fixture's FAST_TRAINING; test_landing_hardening tests the wait)."""
    monkeypatch.setenv("MLPLATFORM_LANDING_QUIET_SECONDS", FAST_TRAINING["MLPLATFORM_LANDING_QUIET_SECONDS"])


def _spec(folder: Path, text: str) -> DatasetSpec:
    path = folder / "spec.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_spec(path)


def _ingest(spec: DatasetSpec, landing: Path, events: Path) -> tuple[IngestReport, pd.DataFrame, pd.DataFrame]:
    """Ingest the landing folder into a fresh event log; returns the report, the stored events and the quarantine."""
    log = EventLog(events, spec)
    try:
        report = ingest_pending(landing, spec, log)
        stored = log._select("1 = 1", [], "seq", None)
        quarantine = pd.read_sql_query("SELECT source, row_number, reason FROM quarantine ORDER BY id", log._conn)
    finally:
        log.close()
    return report, stored, quarantine


def _replay(spec: DatasetSpec, tmp_path: Path) -> tuple[IngestReport, pd.DataFrame, pd.DataFrame]:
    """`mlplatform replay --to landing` in time order with labels inline, then landing."""
    landing = tmp_path / "landing"
    rows = select_stream(read_source(spec), spec, order="time")
    run_stream(rows, spec, LandingSink(spec, landing), batch_size=50, progress=False)
    return _ingest(spec, landing, tmp_path / "events.sqlite")


LOANS = """\
    name: loans
    task: binary
    label: default
    classes: [0, 1]
    positive_class: 1
    label_map: {2: 1, "yes": 1}
    id_column: loan_id
    features:
      amount: numeric
      grade: categorical
    """


def test_numbers_as_classes_match_numbers_in_csv_parquet_and_jsonl(tmp_path: Path) -> None:
    spec = _spec(tmp_path, LOANS)
    assert (spec.classes, spec.positive_class, spec.label_map) == (["0", "1"], "1", {"2": "1", "yes": "1"})
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text("loan_id,amount,grade,default\nl1,100,A,0\nl2,200,B,1\nl3,300,C,2\nl4,400,A,yes\n", encoding="utf-8")
    pd.DataFrame({"loan_id": ["p1", "p2"], "amount": [1.0, 2.0], "grade": [1, 2], "default": [0, 1]}).to_parquet(landing / "b.parquet")
    (landing / "c.jsonl").write_text('{"loan_id": "j1", "amount": 5, "grade": "A", "default": 1}\n{"loan_id": "j2", "amount": 6, "grade": "B", "default": 0.0}\n', encoding="utf-8")
    report, stored, quarantine = _ingest(spec, landing, tmp_path / "events.sqlite")
    assert quarantine.empty, quarantine
    assert report.total("ingested") == 8
    assert dict(zip(stored[EVENT_ID], stored[LABEL])) == {"l1": "0", "l2": "1", "l3": "1", "l4": "1", "p1": "0", "p2": "1", "j1": "1", "j2": "0"}


SENSORS = """\
    name: sensors
    task: regression
    label: reading
    id_column: sensor_event
    time_column: year
    {time_format}
    features:
      temperature: numeric
      site: categorical
    source:
      files: [{file}]
      format: {format}
    """
YEARS = [2019, 2015, 2017, 2016, 2018]


def _jan_first_us(year: int) -> int:
    return int(pd.Timestamp(f"{year}-01-01", tz="UTC").value // 1000)


def _sensor_rows() -> pd.DataFrame:
    return pd.DataFrame({"sensor_event": [f"s{i}" for i in range(5)], "year": YEARS, "temperature": [1.5, 2.5, 3.5, 4.5, 5.5], "site": list("abcab"), "reading": [10.0, 20.0, 30.0, 40.0, 50.0]})


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_an_integer_year_column_is_read_as_years_by_replay_and_landing(tmp_path: Path, fmt: str) -> None:
    rows = _sensor_rows()
    {"csv": lambda p: rows.to_csv(p, index=False), "parquet": lambda p: rows.to_parquet(p), "jsonl": lambda p: rows.to_json(p, orient="records", lines=True)}[fmt](tmp_path / f"sensors.{fmt}")
    spec = _spec(tmp_path, SENSORS.format(time_format="time_format: year", file=f"sensors.{fmt}", format=fmt))
    report, stored, quarantine = _replay(spec, tmp_path)
    assert quarantine.empty and report.total("ingested") == 5
    assert stored[EVENT_ID].tolist() == ["s1", "s3", "s2", "s4", "s0"]  # replayed in time order
    assert stored[EVENT_TIME].tolist() == [_jan_first_us(y) for y in sorted(YEARS)]


def test_an_integer_time_column_without_its_format_is_refused_naming_it(tmp_path: Path) -> None:
    _sensor_rows().to_parquet(tmp_path / "sensors.parquet")
    spec = _spec(tmp_path, SENSORS.format(time_format="", file="sensors.parquet", format="parquet"))
    with pytest.raises(ReplayError, match=r"time_column 'year': 5 of 5 rows are missing, not a timestamp or out of range in time_format 'iso' \(row 1: '2019',"
                                          r".*; set time_format in the spec to how the column is written \(they read as time_format 'year'\)$"):
        read_source(spec)
    landing = tmp_path / "landing"
    landing.mkdir()
    _sensor_rows().drop(columns="reading").to_parquet(landing / "drop.parquet")
    report, stored, quarantine = _ingest(spec, landing, tmp_path / "events.sqlite")
    assert stored.empty and quarantine["reason"].tolist() == ["year: missing, not a timestamp or out of range in time_format 'iso' (they read as time_format "
                                                              "'year': is that how the column is written?)"] * 5


@pytest.mark.parametrize(
    ("time_format", "values", "expected"),
    [
        ("year", ["2015", "2015.0", " 1999 ", "2015.5", "MMXV", "0"], ["2015-01-01", "2015-01-01", "1999-01-01", None, None, None]),
        ("epoch_s", ["1700000000", "1700000000.5", "1e30", "soon"], ["2023-11-14T22:13:20", "2023-11-14T22:13:20.5", None, None]),
        ("epoch_ms", ["1700000000123"], ["2023-11-14T22:13:20.123"]),
        ("epoch_us", ["1700000000123456"], ["2023-11-14T22:13:20.123456"]),
        ("epoch_ns", ["1700000000123456000"], ["2023-11-14T22:13:20.123456"]),
        ("iso", ["2015-03-04", "2015-03-04T05:06:07+01:00", "2015", "04/03/2015", "1700000000"], ["2015-03-04", "2015-03-04T04:06:07", "2015-01-01", None, None]),
        ("%d/%m/%Y", ["04/03/2015", "2015-03-04", "31/02/2015"], ["2015-03-04", None, None]),
        # with and without offsets in one file: a time without one is UTC wherever it stands (pandas gave it the offset before it)
        ("iso", ["2025-03-01T10:00:00+02:00", "2025-03-01T10:00:00", "2025-03-01 10:00-0530", "2025-03-01T10:00", "20250301T100000Z",
                 "2025-03-01", "2025-03-01T10:00:00.5 +02", "2025-03-01T10:00:00[Europe/Berlin]"],
         ["2025-03-01T08:00", "2025-03-01T10:00", "2025-03-01T15:30", "2025-03-01T10:00", "2025-03-01T10:00", "2025-03-01", "2025-03-01T08:00:00.5", None]),
    ],
)
def test_each_time_format_in_a_landing_file(tmp_path: Path, time_format: str, values: list[str], expected: list[str | None]) -> None:
    spec = _spec(tmp_path, SENSORS.format(time_format=f"time_format: {time_format!r}", file="x", format="csv").replace("    source:\n      files: [x]\n      format: csv\n", ""))
    landing = tmp_path / "landing"
    landing.mkdir()
    frame = pd.DataFrame({"sensor_event": [f"s{i}" for i in range(len(values))], "year": values, "temperature": 1.0, "site": "a"})
    frame.to_csv(landing / "times.csv", index=False)
    _, stored, quarantine = _ingest(spec, landing, tmp_path / "events.sqlite")
    times = dict(zip(stored[EVENT_ID], stored[EVENT_TIME]))
    assert [times.get(f"s{i}") for i in range(len(values))] == [None if e is None else int(pd.Timestamp(e, tz="UTC").value // 1000) for e in expected]
    assert quarantine["reason"].tolist() == [f"year: missing, not a timestamp or out of range in time_format {time_format!r}"] * expected.count(None)


@pytest.mark.parametrize(("time_format", "values", "reads_as"), [
    ("epoch_s", ["1700000000123", "1700000000456", "1700000000789"], "epoch_ms"),
    ("epoch_s", ["2026-01-01T10:00:00Z", "2026-01-02", "2026-01-03 10:00"], "iso"),
    ("epoch_ms", ["1700000000123456", "1700000000456789", "1700000000789000"], "epoch_us"),
])
def test_times_refused_in_the_declared_format_name_the_format_that_reads_them(tmp_path: Path, time_format: str, values: list[str], reads_as: str) -> None:
    """The new-user probe: epoch milliseconds under `time_format: epoch_s` were quarantined as "not a timestamp or out of
    range", with no word of the unit."""
    spec = _spec(tmp_path, SENSORS.format(time_format=f"time_format: {time_format!r}", file="x", format="csv").replace("    source:\n      files: [x]\n      format: csv\n", ""))
    landing = tmp_path / "landing"
    landing.mkdir()
    pd.DataFrame({"sensor_event": [f"s{i}" for i in range(len(values))], "year": values, "temperature": 1.0, "site": "a"}).to_csv(landing / "times.csv", index=False)
    _, stored, quarantine = _ingest(spec, landing, tmp_path / "events.sqlite")
    assert stored.empty and quarantine["reason"].tolist() == [f"year: missing, not a timestamp or out of range in time_format {time_format!r} (they read as "
                                                              f"time_format {reads_as!r}: is that how the column is written?)"] * len(values)


def test_without_id_and_time_columns_replay_and_landing_generate_them_by_one_rule(tmp_path: Path) -> None:
    rows = _sensor_rows().drop(columns=["sensor_event", "year"])
    rows.to_csv(tmp_path / "plain.csv", index=False)
    spec = _spec(tmp_path, SENSORS.format(time_format="", file="plain.csv", format="csv").replace("    id_column: sensor_event\n    time_column: year\n", ""))
    replayed = read_source(spec)
    assert replayed[EVENT_ID].tolist() == [f"sensors-{i}" for i in range(5)]
    assert replayed[EVENT_TIME].tolist()[:2] == ["2026-01-01T00:00:00.000000Z", "2026-01-01T00:01:00.000000Z"]
    landing = tmp_path / "landing"
    landing.mkdir()
    rows.to_csv(landing / "plain.csv", index=False)
    _, stored, _ = _ingest(spec, landing, tmp_path / "events.sqlite")
    prefix = stored[EVENT_ID].iloc[0].removesuffix("-0")
    assert len(prefix) == 16 and stored[EVENT_ID].tolist() == [f"{prefix}-{i}" for i in range(5)]
    assert np.diff(stored[EVENT_TIME].to_numpy()).tolist() == [1, 1, 1, 1]


RIDES = """\
    name: rides
    task: regression
    label: rides
    id_column: ride_id
    time_column: day
    time_offset: {column: hour, unit: hours}
    features:
      temperature: numeric
      station: categorical
    source:
      files: [rides.csv]
    """


def _ride_rows() -> pd.DataFrame:
    """An export that writes the date in one column and the hour in another, rows not in time order."""
    return pd.DataFrame({"ride_id": ["r0", "r1", "r2", "r3"], "day": ["2015-03-05", "2015-03-04", "2015-03-04", "2015-03-05"],
                         "hour": [0, 23, 5, 2.5], "temperature": [1.0, 2.0, 3.0, 4.0], "station": list("abab"), "rides": [10, 20, 30, 40]})


def test_a_date_column_plus_an_hour_column_is_an_hourly_clock_in_replay_and_landing(tmp_path: Path) -> None:
    _ride_rows().to_csv(tmp_path / "rides.csv", index=False)
    spec = _spec(tmp_path, RIDES)
    expected = {"r2": "2015-03-04T05:00", "r1": "2015-03-04T23:00", "r0": "2015-03-05T00:00", "r3": "2015-03-05T02:30"}
    us = {key: int(pd.Timestamp(value, tz="UTC").value // 1000) for key, value in expected.items()}
    report, stored, quarantine = _replay(spec, tmp_path)
    assert quarantine.empty and report.total("ingested") == 4
    assert dict(zip(stored[EVENT_ID], stored[EVENT_TIME])) == us and stored[EVENT_ID].tolist() == list(expected)  # replayed in time order
    landing = tmp_path / "direct"
    landing.mkdir()
    _ride_rows().to_csv(landing / "rides.csv", index=False)  # the export itself, without replay's event_time column
    _, direct, _ = _ingest(spec, landing, tmp_path / "direct.sqlite")
    assert dict(zip(direct[EVENT_ID], direct[EVENT_TIME])) == us


def test_a_missing_or_bad_time_offset_is_quarantined_or_refused_naming_it(tmp_path: Path) -> None:
    rows = _ride_rows().astype(object)
    rows.loc[0, "hour"], rows.loc[1, "hour"], rows.loc[2, "hour"] = None, "noon", 1e20
    rows.to_csv(tmp_path / "rides.csv", index=False)
    spec = _spec(tmp_path, RIDES)
    with pytest.raises(ReplayError, match=r"time_offset.column 'hour': 3 of 4 rows are missing or not a number of hours, or make a time out of range \(row 1: 'nan', row 2: 'noon', row 3: '1e\+20'\)"):
        read_source(spec)
    landing = tmp_path / "landing"
    landing.mkdir()
    rows.to_csv(landing / "bad.csv", index=False)
    rows.drop(columns="hour").to_csv(landing / "no_hour.csv", index=False)
    report, stored, quarantine = _ingest(spec, landing, tmp_path / "events.sqlite")
    assert stored[EVENT_ID].tolist() == ["r3"]
    assert quarantine["reason"].tolist() == ["hour: missing or not a number of hours (the spec's time_offset), or the time it makes is out of range"] * 3
    assert [f.rejected for f in report.files if f.name == "no_hour.csv"] == ["missing time_offset column 'hour' (the spec adds it to time_column 'day')"]


CUSTOMERS = """\
    name: customers
    task: binary
    label: churned
    classes: ["no", "yes"]
    positive_class: "yes"
    {id_column}
    features:
      plan: categorical
      fee: numeric
    source:
      files: [features.csv, labels.csv]
    """


def _customer_files(folder: Path, label_ids: list[str]) -> None:
    pd.DataFrame({"customer": [f"c{i}" for i in range(6)], "plan": list("abcabc"), "fee": [1, 2, 3, 4, 5, 6]}).to_csv(folder / "features.csv", index=False)
    pd.DataFrame({"customer": label_ids, "churned": ["yes", "no", "yes", "no"][: len(label_ids)]}).to_csv(folder / "labels.csv", index=False)


def test_a_label_only_source_file_is_joined_by_id_and_unlabelled_rows_are_kept(tmp_path: Path) -> None:
    _customer_files(tmp_path, ["c4", "c0", "c2"])
    spec = _spec(tmp_path, CUSTOMERS.format(id_column="id_column: customer"))
    report, stored, quarantine = _replay(spec, tmp_path)
    assert quarantine.empty and report.total("ingested") == 6
    assert dict(zip(stored[EVENT_ID], stored[LABEL])) == {"c0": "no", "c1": None, "c2": "yes", "c3": None, "c4": "yes", "c5": None}


@pytest.mark.parametrize(
    ("id_column", "label_ids", "message"),
    [
        ("", ["c0"], "labels.csv has the label 'churned' and no feature column, so it is a label file; joining it to the features needs id_column"),
        ("id_column: customer", ["c0", "c9", "c8"], r"2 ids in the label files match no row of the feature files, e.g. \['c8', 'c9'\]"),
        ("id_column: customer", ["c0", "c0"], "label files give 1 ids different labels, e.g. 'c0'"),
    ],
)
def test_label_only_files_that_cannot_be_joined_stop_the_replay(tmp_path: Path, id_column: str, label_ids: list[str], message: str) -> None:
    _customer_files(tmp_path, label_ids)
    with pytest.raises(ReplayError, match=message):
        read_source(_spec(tmp_path, CUSTOMERS.format(id_column=id_column)))


def test_a_few_rows_landing_would_quarantine_are_left_out_of_a_replay_and_said(tmp_path: Path) -> None:
    """The own-dataset probe: a label of an id no row has, and 5 of 12,001 times that were 'not a time', each stopped the
    adaptation benchmark with a traceback (the second one saying to fix time_format, which was right). Landing quarantines
    such rows; replay and the benchmark leave them out, saying so. When most times do not parse, the format is wrong."""
    _customer_files(tmp_path, ["c0", "c9", "c8"])
    spec = _spec(tmp_path, CUSTOMERS.format(id_column="id_column: customer"))
    notes: list[str] = []
    rows = read_source(spec, notes)
    assert len(rows) == 6 and notes == ["source.files: 2 ids in the label files match no row of the feature files, e.g. ['c8', 'c9']: "
                                        "left out, as landing quarantines them"]
    timed = _sensor_rows().astype({"year": object})
    timed.loc[3, "year"] = "not a year"
    timed.to_csv(tmp_path / "sensors.csv", index=False)
    sensors = _spec(tmp_path, SENSORS.format(time_format="time_format: year", file="sensors.csv", format="csv"))
    with pytest.raises(ReplayError, match=r"1 of 5 rows are .* \(row 4: 'not a year'\); the others are: those rows are at fault"):
        read_source(sensors)
    notes.clear()
    assert read_source(sensors, notes)[EVENT_ID].tolist() == ["s0", "s1", "s2", "s4"] and "row 4: 'not a year'" in notes[0], notes
    _sensor_rows().assign(year=["x", "y", "z", "2019", "2020"]).to_csv(tmp_path / "sensors.csv", index=False)
    with pytest.raises(ReplayError, match="3 of 5 rows are .*; set time_format in the spec to how the column is written"):
        read_source(sensors, notes)


def test_the_adaptation_benchmark_on_a_user_spec_mentions_no_drift_scenario(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_adaptation

    _customer_files(tmp_path, ["c0"])
    _spec(tmp_path, CUSTOMERS.format(id_column="id_column: customer"))
    assert bench_adaptation.scenario_note(bench_adaptation.user_streams(tmp_path / "spec.yaml")) == ""
    assert bench_adaptation.scenario_note(bench_adaptation.default_streams()) == "Drift scenarios start at 10% or 40% of the stream. "


def _readme_yaml(first_line: str) -> str:
    """The README's YAML block that starts with `first_line`: the test runs what a new user reads."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(f"```yaml\n{first_line}\n", 1)[1].split("```", 1)[0]
    return f"{first_line}\n{block}"


def test_the_readme_loans_example_becomes_a_correct_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0/1 labels, features and labels in separate files, an integer year: replayed by the CLI, ingested by landing."""
    rng = np.random.default_rng(7)
    n = 300
    years = rng.integers(2010, 2020, size=n)
    applications = pd.DataFrame({"loan_id": [f"L{i:04d}" for i in range(n)], "year": years, "amount": rng.integers(1, 50, size=n) * 1000, "grade": rng.choice(list("ABCD"), size=n), "region": rng.choice(["north", "south"], size=n)})
    closed = applications.sample(200, random_state=1)
    outcomes = pd.DataFrame({"loan_id": closed["loan_id"], "defaulted": (closed["grade"] == "D").astype(int)})
    applications.to_csv(tmp_path / "applications.csv", index=False)
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False)
    (tmp_path / "loans.yaml").write_text(_readme_yaml("# exports/loans.yaml"), encoding="utf-8")
    state = tmp_path / "state"

    assert cli.main(["--spec", str(tmp_path / "loans.yaml"), "--state-dir", str(state), "replay", "--label-delay", "0", "--batch-size", "100", "--quiet"]) == 0
    assert "sent 300 events and 200 labels" in capsys.readouterr().out
    spec = load_spec(tmp_path / "loans.yaml")
    report, stored, quarantine = _ingest(spec, state / "landing" / spec.name, tmp_path / "events.sqlite")

    assert quarantine.empty, quarantine
    assert report.total("ingested") == 300 and report.total("labels_applied") == 200
    assert stored[EVENT_TIME].is_monotonic_increasing  # replayed in year order
    expected_time = {i: _jan_first_us(int(y)) for i, y in zip(applications["loan_id"], applications["year"])}
    assert dict(zip(stored[EVENT_ID], stored[EVENT_TIME])) == expected_time
    expected_label = dict(zip(outcomes["loan_id"], outcomes["defaulted"].astype(str)))
    assert dict(zip(stored[EVENT_ID], stored[LABEL])) == {i: expected_label.get(i) for i in applications["loan_id"]}


def test_a_label_file_may_fill_inline_labels_but_not_contradict_them(tmp_path: Path) -> None:
    _customer_files(tmp_path, ["c1", "c2"])
    features = pd.read_csv(tmp_path / "features.csv").assign(churned=["no", None, "yes", None, None, None])
    features.to_csv(tmp_path / "features.csv", index=False)
    spec = _spec(tmp_path, CUSTOMERS.format(id_column="id_column: customer"))
    with pytest.raises(ReplayError, match="1 rows have a label in the feature files and a different one in the label files, e.g. id 'c2'"):
        read_source(spec)
    pd.DataFrame({"customer": ["c1", "c2"], "churned": ["yes", "yes"]}).to_csv(tmp_path / "labels.csv", index=False)
    assert read_source(spec)["churned"].fillna("-").tolist() == ["no", "yes", "yes", "-", "-", "-"]


@pytest.mark.parametrize(
    ("value", "time_format", "expected"),
    [(2015, "year", "2015-01-01"), ("2015", "iso", "2015-01-01"), (2015, "iso", None), (1_700_000_000_000, "epoch_ms", "2023-11-14T22:13:20"), (None, "iso", None), (True, "epoch_s", None)],
)
def test_an_event_time_value_parses_by_its_format(value: object, time_format: str, expected: str | None) -> None:
    parsed = parse_event_times(pd.Series([value]), time_format).iloc[0]
    assert (None if pd.isna(parsed) else int(parsed)) == (None if expected is None else int(pd.Timestamp(expected, tz="UTC").value // 1000))


def test_a_number_among_iso_texts_is_refused_as_a_column_of_numbers_is() -> None:
    """A new-user probe: in a JSON Lines file or a batch of records, 2015 beside "2015-01-02" was read as 2015-01-01,
    while a file of numbers alone was refused."""
    mixed = pd.Series([2015, "2015-01-02", True, 1.7e9, None, np.int64(2016), "2017"], dtype=object)
    parsed = parse_event_times(mixed).tolist()
    assert [None if pd.isna(v) else pd.Timestamp(int(v), unit="us").year for v in parsed] == [None, 2015, None, None, None, None, 2017]


def test_the_readme_churn_example_is_a_valid_spec(tmp_path: Path) -> None:
    (tmp_path / "churn.yaml").write_text(_readme_yaml("# data/churn.yaml"), encoding="utf-8")
    spec = load_spec(tmp_path / "churn.yaml")
    assert (spec.time_column, spec.event_time_format, spec.label_map) == ("signed_up", "iso", {"0": "no", "1": "yes"})
