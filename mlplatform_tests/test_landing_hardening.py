"""Issue 12: hostile and half-written landing folders. Real files in a tmp folder, a real SQLite event log.

Every entry ends taken, rejected with its reason or reported as left with its reason; a rejected file keeps
no rows in quarantine; one bad file never stops the files behind it; only trouble with the event log or the
disk stops the run (so it is retried), leaving the file where it was.
"""

import gzip
import io
import json
import os
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.domain.spec import DatasetSpec, parse_spec
from mlplatform.domain.keys import LAUNCHED_BY_TAG, RUN_KEY_TAG, WILL_RETRY_TAG
from mlplatform.domain.validation import EVENT_ID, value_problem
from mlplatform.pipeline.landing import IngestReport, LandingPolicy, NotSettled, TAKEN_INDEX, _opened_settled, ingest_pending, landing_candidates
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventLog

from mlplatform_tests.conftest import ADULT_COLUMNS as COLUMNS



@pytest.fixture(scope="module")
def rows(adult_rows: pd.DataFrame) -> pd.DataFrame:
    return adult_rows[COLUMNS].head(1200).reset_index(drop=True)


def _policy(**changes: object) -> LandingPolicy:
    """The configured policy without a quiet period (tests that need one set it)."""
    return replace(LandingPolicy.from_settings(Settings()), **{"quiet_seconds": 0.0, **changes})


def _ingest(landing: Path, spec: DatasetSpec, log: EventLog, **changes: object) -> IngestReport:
    return ingest_pending(landing, spec, log, _policy(**changes))


def _quarantine(log: EventLog) -> pd.DataFrame:
    return pd.read_sql_query("SELECT source, row_number, reason, record FROM quarantine ORDER BY id", log._conn)


def _skipped(report: IngestReport) -> dict[str, str]:
    return {s.name: s.reason for s in report.skipped}


def _rejected(report: IngestReport) -> dict[str, str]:
    return {f.name: f.rejected for f in report.rejected}


def _left(landing: Path) -> set[str]:
    return {p.name for p in landing.iterdir()} - {"processed", "rejected"}


def _broken_parquet(frame: pd.DataFrame) -> bytes:
    """A Parquet file whose footer reads and whose first page header does not: it breaks the parser mid-file."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = bytearray(buffer.getvalue())
    data[8:24] = b"\xff" * 16
    return bytes(data)


# 1. One bad file must not block the landing folder; transient errors still raise.


def test_a_file_that_breaks_a_parser_is_rejected_and_the_next_file_is_taken(
    landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame
) -> None:
    (landing / "1-broken.parquet").write_bytes(_broken_parquet(rows.head(5)))
    time.sleep(0.01)
    rows.iloc[10:20].to_csv(landing / "2-good.csv", index=False)
    report = _ingest(landing, adult_spec, log)
    reason = _rejected(report)["1-broken.parquet"]
    assert reason.startswith("not parseable as Parquet: ") and "page header" in reason
    assert (landing / "rejected" / "1-broken.parquet").exists()
    assert reason in (landing / "rejected" / "1-broken.parquet.reason.txt").read_text()
    assert report.total("ingested") == 10 and (landing / "processed" / "2-good.csv").exists()
    assert log.counts().total == 10 and log.counts().quarantined == 0 and _left(landing) == set()


def test_a_list_column_in_parquet_is_quarantined_not_a_crash(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(rows.head(4), preserve_index=False)
    table = table.set_column(table.schema.get_field_index("age"), "age", pa.array([[1, 2], None, [], [39]]))
    pq.write_table(table, landing / "1-ages.parquet")
    time.sleep(0.01)
    rows.iloc[10:12].to_csv(landing / "2-later.csv", index=False)
    report = _ingest(landing, adult_spec, log)
    assert report.rejected == [] and report.total("ingested") == 3 and report.total("quarantined") == 3
    q = _quarantine(log)
    assert q["reason"].tolist() == ["age: a nested value (list) is not allowed: expected a string, a number or null"] * 3
    assert [json.loads(r)["age"] for r in q["record"]] == ["[1, 2]", "[]", "[39]"] and q["row_number"].tolist() == [1, 3, 4]
    assert pd.isna(log.get(["adult-1"]).iloc[0]["age"]) and _left(landing) == set()


def test_a_locked_event_log_raises_and_leaves_the_file_for_the_retry(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    rows.head(5).to_csv(landing / "a.csv", index=False)
    log._conn.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(log.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _ingest(landing, adult_spec, log)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _left(landing) == {"a.csv"} and not (landing / "rejected").exists()
    assert _ingest(landing, adult_spec, log).total("ingested") == 5


# 2. Only settled files are taken.


def test_a_file_still_being_written_is_left_until_it_settles(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    lines = rows.to_csv(index=False).splitlines(keepends=True)
    half = len(lines[1001]) // 2
    path = landing / "growing.csv"
    with path.open("w", encoding="utf-8") as writer:
        writer.write("".join(lines[:1001]) + lines[1001][:half])  # header + 1,000 rows + half a row
        writer.flush()
        done = threading.Event()

        def keep_writing() -> None:
            """The writer is still busy: a few bytes of the rest every 20 ms."""
            rest = lines[1001][half:] + "".join(lines[1002:])
            for start in range(0, len(rest), 200):
                writer.write(rest[start : start + 200])
                writer.flush()
                if done.wait(0.02):
                    break

        thread = threading.Thread(target=keep_writing)
        thread.start()
        try:
            report = _ingest(landing, adult_spec, log, quiet_seconds=0.3)
        finally:
            done.set()
            thread.join()
        assert report.files == [] and "still being written" in _skipped(report)["growing.csv"]
        assert _left(landing) == {"growing.csv"} and log.counts().total == 0 and log.counts().quarantined == 0
        writer.write(lines[1001][half:] + "".join(lines[1002:]))
    path.write_text("".join(lines), encoding="utf-8")  # what the writer meant, whatever the thread managed
    report = _ingest(landing, adult_spec, log, quiet_seconds=0.3)
    assert report.skipped == [] and report.total("ingested") == len(rows) and report.total("quarantined") == 0
    assert (landing / "processed" / "growing.csv").read_text(encoding="utf-8") == "".join(lines)


@pytest.mark.parametrize("marker", [None, ".ready"], ids=["plain", "with ready marker"])
def test_a_writer_going_on_after_its_file_was_taken_lands_the_rest_once(landing: Path, log: EventLog, adult_spec: DatasetSpec,
                                                                          rows: pd.DataFrame, marker: str | None) -> None:
    """The operator probe: a writer that paused past the quiet period, holding its file open, wrote 1,500 more rows into
    it after it was moved into processed; they never landed and nothing said so. The landing sensor sees the grown file,
    and the next run moves it back and reads on from where its reading ended: every row once."""
    head, tail = rows.head(500).drop(columns=[EVENT_ID]), rows.iloc[500:1200].drop(columns=[EVENT_ID])  # no ids: twice would be new events
    path = landing / "export.csv"
    with path.open("w", encoding="utf-8") as writer:  # the writer's handle follows the file into processed
        writer.write(head.to_csv(index=False))
        writer.flush()
        if marker:
            (landing / ("export.csv" + marker)).touch()
        first = _ingest(landing, adult_spec, log, ready_marker=marker)
        assert first.total("ingested") == 500 and (landing / "processed" / "export.csv").exists()
        assert landing_candidates(landing, _policy(ready_marker=marker))[0] == [], "nothing grew yet"
        writer.write(tail.to_csv(index=False, header=False))
    [(name, size, _)] = landing_candidates(landing, _policy(ready_marker=marker))[0]
    assert (name, size) == ("export.csv", (landing / "processed" / "export.csv").stat().st_size), "the sensor asks for a run"
    second = _ingest(landing, adult_spec, log, ready_marker=marker)
    [grown] = second.files
    assert (grown.ingested, grown.duplicates, log.counts().total) == (700, 0, 1200) and grown.note.startswith("grew after its first"), grown.note
    assert _ingest(landing, adult_spec, log, ready_marker=marker).files == [] and landing_candidates(landing, _policy(ready_marker=marker))[0] == []
    assert _left(landing) == set()


def test_a_writer_going_on_mid_line_after_its_file_was_taken_is_said_not_landed_twice(landing: Path, log: EventLog, adult_spec: DatasetSpec,
                                                                                       rows: pd.DataFrame) -> None:
    """The review: a writer that paused in the middle of a line (buffers flush in 8 KB chunks) had its file brought back
    and read whole again, as appended bytes that extend the last line make it: without ids, 1,700 events of 1,200. Left
    in processed, and said, with what to do; an index entry that cannot be read is passed over (a sensor tick read it)."""
    text = rows.drop(columns=[EVENT_ID]).to_csv(index=False)
    cut = text.index("\n", len(text) // 3) + 20  # in the middle of a line
    path = landing / "export.csv"
    with path.open("w", encoding="utf-8") as writer:
        writer.write(text[:cut])
        writer.flush()
        first = _ingest(landing, adult_spec, log)
        writer.write(text[cut:])
    index = landing / "processed" / TAKEN_INDEX
    index.write_text(json.dumps({**json.loads(index.read_text()), "odd.csv": {"name": "odd.csv", "ino": "x"}}))
    assert landing_candidates(landing, _policy())[0] == [], "no run asked for: it cannot be read on"
    second = _ingest(landing, adult_spec, log)
    assert second.files == [] and log.counts().total == first.total("ingested")
    assert "in the middle of its last line (its writer paused mid-line): move it back" in _skipped(second)["processed/export.csv"]


def test_a_file_published_whole_is_taken_in_the_same_run_after_the_quiet_period(
    landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame
) -> None:
    rows.head(3).to_csv(landing / "fresh.csv", index=False)
    started = time.monotonic()
    report = _ingest(landing, adult_spec, log, quiet_seconds=0.3)
    assert report.total("ingested") == 3 and time.monotonic() - started >= 0.3


def test_a_file_changed_or_swapped_for_a_link_after_it_was_looked_at_is_not_read(tmp_path: Path, landing: Path) -> None:
    """The re-check around the read (the race itself cannot be timed in a test, so the change is made in between)."""
    path = landing / "a.csv"
    path.write_text("event_id\n1\n", encoding="utf-8")
    seen = path.lstat()
    with path.open("a", encoding="utf-8") as writer:
        writer.write("2\n")
    with pytest.raises(NotSettled, match="changed since the landing folder was read"), _opened_settled(path, seen, 1 << 20):
        pass
    seen = path.lstat()
    path.rename(tmp_path / "moved.csv")
    path.symlink_to(tmp_path / "moved.csv")
    with pytest.raises(NotSettled, match="replaced by a symbolic link"), _opened_settled(path, seen, 1 << 20):
        pass


@pytest.mark.parametrize("name", [".hidden.csv", "_staging.csv", "a.csv.tmp", "a.csv.part", "b.CSV.TMP", "notes.txt", "_SUCCESS"])
def test_temporary_hidden_and_foreign_names_are_left_and_reported(
    landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame, name: str
) -> None:
    rows.head(3).to_csv(landing / name, index=False)
    report = _ingest(landing, adult_spec, log)
    assert report.files == [] and set(_skipped(report)) == {name} and _left(landing) == {name}
    assert log.counts().total == 0


def test_ready_marker_mode_takes_a_file_only_with_its_marker(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    rows.head(3).to_csv(landing / "a.csv", index=False)
    (landing / "orphan.csv.ready").touch()
    report = _ingest(landing, adult_spec, log, ready_marker=".ready")
    assert report.files == []
    assert _skipped(report) == {"a.csv": "waiting for its ready marker 'a.csv.ready'", "orphan.csv.ready": "ready marker without its file 'orphan.csv'"}
    (landing / "a.csv.ready").touch()
    report = _ingest(landing, adult_spec, log, ready_marker=".ready")
    assert report.total("ingested") == 3
    assert {p.name for p in (landing / "processed").iterdir() if p.name != TAKEN_INDEX} == {"a.csv", "a.csv.ready"} and _left(landing) == {"orphan.csv.ready"}


# 6. Symlinks are rejected without reading their target; a rejected file keeps no quarantined rows.


def test_a_symlink_is_rejected_and_its_target_never_read(tmp_path: Path, landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    outside = tmp_path / "outside.csv"
    rows.head(5).to_csv(outside, index=False)
    (landing / "link.csv").symlink_to("/etc/passwd")
    (landing / "outside.csv").symlink_to(outside)
    (landing / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    report = _ingest(landing, adult_spec, log)
    assert set(_rejected(report)) == {"link.csv", "outside.csv", "dangling.csv"}
    assert "a symbolic link (to '/etc/passwd')" in _rejected(report)["link.csv"]
    assert all((landing / "rejected" / name).is_symlink() for name in ("link.csv", "outside.csv", "dangling.csv"))
    assert outside.exists() and log.counts().total == 0 and log.counts().quarantined == 0 and _left(landing) == set()


def test_the_same_link_and_the_same_bad_file_dropped_twice_are_rejected_twice(
    landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame
) -> None:
    broken = _broken_parquet(rows.head(2))
    for _ in range(2):
        (landing / "link.csv").symlink_to("/etc/hostname")
        (landing / "broken.parquet").write_bytes(broken)
        report = _ingest(landing, adult_spec, log)
        assert set(_rejected(report)) == {"link.csv", "broken.parquet"} and _left(landing) == set()
    kept = sorted(p.name for p in (landing / "rejected").iterdir() if not p.name.endswith(".reason.txt"))
    assert len(kept) == 4 and sum((landing / "rejected" / name).is_symlink() for name in kept) == 2
    assert len(list((landing / "rejected").glob("*.reason.txt"))) == 4 and log.counts().quarantined == 0


def test_a_rejected_file_keeps_no_rows_in_quarantine(landing: Path, log: EventLog, adult_spec: DatasetSpec) -> None:
    (landing / "passwd.csv").write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1,a,b\nbin:x:2:2\n", encoding="utf-8")
    (landing / "passwd.jsonl").write_text('{"user": "root"}\nnot json\n[1]\n', encoding="utf-8")
    report = _ingest(landing, adult_spec, log)
    assert all("missing required feature columns" in reason for reason in _rejected(report).values()) and len(report.rejected) == 2
    assert report.total("quarantined") == 0 and log.counts().quarantined == 0 and _quarantine(log).empty


# 7. Nested values: one rule for files and requests.


def test_nested_values_in_jsonl_and_parquet_are_quarantined(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    records = rows.head(6).to_dict("records")
    records[0]["workclass"] = {"nested": [1, 2]}
    records[1]["workclass"] = [1, 2]
    records[2]["age"] = {"x": 1}
    records[3]["event_id"] = ["adult-3"]
    (landing / "nested.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    table = pa.Table.from_pandas(rows.iloc[10:13], preserve_index=False)
    table = table.set_column(table.schema.get_field_index("occupation"), "occupation", pa.array([{"a": 1}, None, {"a": 3}]))
    pq.write_table(table, landing / "struct.parquet")
    report = _ingest(landing, adult_spec, log)
    assert report.total("ingested") == 3 and report.total("quarantined") == 6
    reasons = _quarantine(log)["reason"].tolist()
    assert reasons == [
        "workclass: a nested value (object) is not allowed: expected a string, a number or null",
        "workclass: a nested value (list) is not allowed: expected a string, a number or null",
        "age: a nested value (object) is not allowed: expected a string, a number or null",
        "event_id: a nested value (list) is not allowed: expected a string, a number or null",
        "occupation: a nested value (object) is not allowed: expected a string, a number or null",
        "occupation: a nested value (object) is not allowed: expected a string, a number or null",
    ]
    stored = pd.read_sql_query('SELECT "f_workclass", "f_occupation" FROM events', log._conn)
    assert not stored.stack().astype(str).str.contains(r"[\[{]").any()


def test_jsonl_without_ids_or_times_gets_generated_ones_as_csv_does(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    """Arrow's reader added every column of its explicit schema, all null: every row of such a file was quarantined as
    "event_id: missing". A key that is there but null in a line is still that line's missing value."""
    plain = rows.head(4).drop(columns=["event_id", "event_time"])
    (landing / "plain.jsonl").write_text("\n".join(json.dumps(r) for r in plain.to_dict("records")) + "\n", encoding="utf-8")
    plain.to_csv(landing / "plain.csv", index=False)
    with_null = rows.iloc[4:6].to_dict("records")
    with_null[0]["event_id"] = None
    (landing / "null_id.jsonl").write_text("\n".join(json.dumps(r) for r in with_null) + "\n", encoding="utf-8")
    # a categorical no line has stays a column of missing values (exporters leave null fields out), as before
    sparse = rows.iloc[6:8].drop(columns=["event_id", "event_time", "workclass"])
    (landing / "sparse.jsonl").write_text("\n".join(json.dumps(r) for r in sparse.to_dict("records")) + "\n", encoding="utf-8")
    report = _ingest(landing, adult_spec, log)
    assert {f.name: (f.ingested, f.quarantined, f.rejected) for f in report.files} == {
        "plain.jsonl": (4, 0, None), "plain.csv": (4, 0, None), "null_id.jsonl": (1, 1, None), "sparse.jsonl": (2, 0, None)}
    assert _quarantine(log)["reason"].tolist() == ["event_id: missing"]


def test_an_integer_id_column_with_nulls_keeps_integer_ids(tmp_path: Path, landing: Path) -> None:
    """Parquet's int64 with a null reads as floats: ids were stored as "1.0", which labels and CSV rows ("1") never matched."""
    spec = parse_spec({"name": "ids", "task": "binary", "classes": ["0", "1"], "positive_class": "1", "label": "y", "id_column": "id",
                       "features": {"c": "categorical", "x": "numeric"}})
    log = EventLog(tmp_path / "ids.sqlite", spec)
    try:
        pq.write_table(pa.table({"id": pa.array([1, 2, None], pa.int64()), "c": ["a", "b", "c"], "x": [1, 2, 3]}), landing / "a.parquet")
        (landing / "labels.jsonl").write_text('{"id": 1, "y": 1}\n{"id": 2.0, "y": 0}\n{"id": null, "y": 0}\n', encoding="utf-8")
        _ingest(landing, spec, log)
        (landing / "again.csv").write_text("id,c,x\n1,a,1\n", encoding="utf-8")
        report = _ingest(landing, spec, log)
        assert report.total("duplicates") == 1 and report.total("ingested") == 0
        stored = pd.read_sql_query("SELECT event_id, label FROM events ORDER BY seq", log._conn)
        assert stored.values.tolist() == [["1", "1"], ["2", "0"]]
        assert _quarantine(log)["reason"].tolist() == ["id: missing", "id: missing"]
    finally:
        log.close()


def test_a_nested_id_or_label_in_a_label_file_is_quarantined(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    events = rows.head(3).drop(columns=["income"]).assign(event_id=["['x']", "y", "z"])  # an id that is the text of a list
    events.to_csv(landing / "1-events.csv", index=False)
    _ingest(landing, adult_spec, log)
    labels = [{"event_id": ["x"], "income": ">50K"}, {"event_id": "y", "income": ["<=50K"]}, {"event_id": "z", "income": ">50K"}]
    (landing / "2-labels.jsonl").write_text("\n".join(json.dumps(r) for r in labels) + "\n", encoding="utf-8")
    report = _ingest(landing, adult_spec, log)
    assert (report.total("labels_applied"), report.total("quarantined")) == (1, 2)
    assert _quarantine(log)["reason"].tolist() == [
        "event_id: a nested value (list) is not allowed: expected a string, a number or null",
        "income: a nested value (list) is not allowed: expected a string, a number or null",
    ]
    assert log.get(["['x']"]).iloc[0]["label"] is None and log.counts().labelled == 1


def test_binary_parquet_columns_are_read_as_text_and_a_cell_that_is_not_utf8_quarantines_its_row(
        landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    """A Parquet writer's bytes (binary columns): the whole file was rejected with Python's UnicodeDecodeError, naming no column."""
    def binary(table: pa.Table, name: str, values: list[bytes | None]) -> pa.Table:
        return table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.binary()))

    events = binary(pa.Table.from_pandas(rows.head(3).drop(columns=["income"]), preserve_index=False), "workclass", [b"Private", b"\xff\xfe", None])
    pq.write_table(events, landing / "1-events.parquet")
    plain = binary(pa.Table.from_pandas(rows.iloc[3:5].drop(columns=["income"]), preserve_index=False), "workclass", [b"State-gov", "Ça".encode()])
    pq.write_table(plain, landing / "2-text.parquet")
    _ingest(landing, adult_spec, log)
    labels = pa.table({"event_id": pa.array([b"adult-0", b"\xffx", b"adult-2"], pa.binary()), "income": pa.array([b">50K", b"<=50K", b"\xfe"], pa.binary())})
    pq.write_table(labels, landing / "3-labels.parquet")
    report = _ingest(landing, adult_spec, log)
    assert report.rejected == [] and report.total("labels_applied") == 1
    assert _quarantine(log)[["source", "row_number", "reason"]].values.tolist() == [
        ["1-events.parquet", 2, "workclass: binary data that is not UTF-8 text (invalid start byte at byte 0): expected a string, a number or null"],
        ["3-labels.parquet", 2, "event_id: binary data that is not UTF-8 text (invalid start byte at byte 0): expected a string, a number or null"],
        ["3-labels.parquet", 3, "income: binary data that is not UTF-8 text (invalid start byte at byte 0): expected a string, a number or null"],
    ]
    stored = log.get(["adult-0", "adult-2", "adult-3", "adult-4"])
    assert stored["workclass"].tolist() == ["Private", None, "State-gov", "Ça"] and stored["label"].tolist() == [">50K", None, None, None]


def test_a_dictionary_column_in_parquet_is_read_as_its_values(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    """A pandas category written to Parquet is a dictionary column: as a numeric feature it rejected the whole file with
    "TypeError: can only concatenate str (not "Categorical") to str"."""
    frame = rows.head(4).astype({"age": str, "workclass": object})
    frame.loc[3, "age"] = "old"
    pq.write_table(pa.Table.from_pandas(frame.astype({"age": "category", "workclass": "category"}), preserve_index=False), landing / "categories.parquet")
    report = _ingest(landing, adult_spec, log)
    assert report.rejected == [] and (report.total("ingested"), report.total("quarantined")) == (3, 1)
    assert _quarantine(log)["reason"].tolist() == ["age: 'old' is not a finite number"]
    stored = log.get(["adult-0", "adult-1", "adult-2"])
    assert stored["age"].tolist() == rows["age"].head(3).astype(float).tolist() and stored["workclass"].tolist() == rows["workclass"].head(3).tolist()


@pytest.mark.parametrize(("value", "problem"), [([1], "list"), ((1,), "list"), ({"a": 1}, "object"), ({1}, "list")])
def test_value_problem_names_the_kind(value: object, problem: str) -> None:
    assert value_problem(value) == f"a nested value ({problem}) is not allowed: expected a string, a number or null"


@pytest.mark.parametrize("value", ["[1, 2]", 1, 1.5, None, True])
def test_plain_values_are_not_nested(value: object) -> None:
    assert value_problem(value) is None


# 8. Entries not taken are reported.


def test_a_directory_and_a_fifo_with_landing_names_are_reported_and_left(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    (landing / "dir.csv").mkdir()
    os.mkfifo(landing / "pipe.csv")
    rows.head(2).to_csv(landing / "ok.csv", index=False)
    report = _ingest(landing, adult_spec, log)
    assert _skipped(report) == {"dir.csv": "a directory: landing takes files only", "pipe.csv": "not a regular file (a device, FIFO or socket)"}
    assert report.total("ingested") == 2 and _left(landing) == {"dir.csv", "pipe.csv"}


# 9. Decompression is capped while streaming.


def test_a_gzip_that_expands_past_the_cap_is_rejected(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    header = rows.head(0).to_csv(index=False).encode()
    (landing / "bomb.csv.gz").write_bytes(gzip.compress(header + b"0" * 5_000_000, compresslevel=9))
    two_members = gzip.compress(rows.head(3).to_csv(index=False).encode()) + gzip.compress(rows.iloc[3:5].to_csv(index=False, header=False).encode())
    (landing / "members.csv.gz").write_bytes(two_members)
    report = _ingest(landing, adult_spec, log, max_decompressed_bytes=1_000_000)
    assert _rejected(report) == {"bomb.csv.gz": "decompresses to more than 1000000 bytes, over the limit (MLPLATFORM_LANDING_MAX_DECOMPRESSED_BYTES)"}
    assert (landing / "rejected" / "bomb.csv.gz").exists() and log.counts().quarantined == 0
    assert report.total("ingested") == 5


def test_the_compressed_size_limit_still_applies(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    (landing / "big.csv.gz").write_bytes(gzip.compress(rows.to_csv(index=False).encode()))
    report = _ingest(landing, adult_spec, log, max_file_bytes=100)
    assert "over the limit of 100" in _rejected(report)["big.csv.gz"]


# 6. Who starts an ingestion: the landing sensor, or a person; never two at once on one folder.


def test_two_ingestions_of_one_folder_take_turns(landing: Path, log: EventLog, adult_spec: DatasetSpec, rows: pd.DataFrame) -> None:
    """A run the landing sensor started and one started by hand: the second waits for the first (a lock on the folder)."""
    from mlplatform.pipeline.landing import exclusive

    rows.to_csv(landing / "a.csv", index=False)
    reports: list[IngestReport] = []
    with exclusive(landing):  # the first ingestion, still running
        second = threading.Thread(target=lambda: reports.append(_ingest(landing, adult_spec, log)))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and _left(landing) == {"a.csv"} and log.counts().total == 0, "it waits, reading nothing"
    second.join(timeout=60)
    assert not second.is_alive() and reports[0].total("ingested") == len(rows) and _left(landing) == set()


def test_the_landing_sensor_requests_one_run_per_set_of_settled_files(tmp_path: Path, rows: pd.DataFrame) -> None:
    """Once while its run is queued, running or to be retried; again, with a new run key and a doubling back-off, once
    that run ended and left the files (a real failed run in a real Dagster instance); new files at once."""
    import dagster as dg

    from mlplatform.orchestration.names import ModelNames
    from mlplatform.orchestration.sensors import LOST_SECONDS, LandingCursor, landing_request
    from mlplatform.orchestration.trigger import AGAIN_SECONDS

    @dg.op
    def fails() -> None:
        raise RuntimeError("the event log is unavailable")

    @dg.job
    def landing_run() -> None:
        fails()

    def end_run(request: dg.RunRequest, **tags: str) -> float:
        landing_run.execute_in_process(instance=instance, raise_on_error=False, tags={RUN_KEY_TAG: request.run_key or "", **request.tags, **tags})
        return time.time()

    settings = Settings(state_dir=tmp_path / "state", landing_quiet_seconds=0.3)
    names = ModelNames("adult")
    instance = dg.DagsterInstance.ephemeral()
    settings.landing_dir.mkdir(parents=True)
    assert "no file waiting in" in str(landing_request(settings, None, names, instance).skip_reason)
    rows.to_csv(settings.landing_dir / "a.csv", index=False)
    (settings.landing_dir / "notes.txt").write_text("not a landing file", encoding="utf-8")
    assert "one changed within landing_quiet_seconds" in str(landing_request(settings, None, names, instance).skip_reason)
    time.sleep(0.4)
    first = landing_request(settings, None, names, instance)
    [request] = first.run_requests or []
    assert request.run_key.startswith("landing-") and request.tags[LAUNCHED_BY_TAG] == names.landing_sensor
    again = landing_request(settings, first.cursor, names, instance)
    assert not again.run_requests and "requested already" in str(again.skip_reason) and "not launched yet" in str(again.skip_reason)
    [lost] = landing_request(settings, first.cursor, names, instance, now=time.time() + LOST_SECONDS + 1).run_requests or []
    assert lost.run_key == f"{request.run_key}-again1", "a request whose run never came, or was deleted by retention, is made again"

    ended = end_run(request, **{WILL_RETRY_TAG: "true"})
    assert "is failure" in str(landing_request(settings, first.cursor, names, instance, now=ended + 10 * AGAIN_SECONDS).skip_reason), "its retry comes"
    ended = end_run(request)
    waiting = landing_request(settings, first.cursor, names, instance, now=ended)
    assert not waiting.run_requests and "ended (failure) and left them; requesting them again in" in str(waiting.skip_reason)
    [retry] = landing_request(settings, first.cursor, names, instance, now=ended + AGAIN_SECONDS + 1).run_requests or []
    assert retry.run_key == f"{request.run_key}-again1"
    cursor = LandingCursor(LandingCursor.from_json(first.cursor).files, 1).to_json()  # type: ignore[union-attr]
    ended = end_run(retry)
    assert not landing_request(settings, cursor, names, instance, now=ended + AGAIN_SECONDS + 1).run_requests, "the back-off doubled"
    [third] = landing_request(settings, cursor, names, instance, now=ended + 2 * AGAIN_SECONDS + 1).run_requests or []
    assert third.run_key == f"{request.run_key}-again2"
    bare = LandingCursor.from_json(first.cursor).files  # type: ignore[union-attr]
    assert "requested already" in str(landing_request(settings, bare, names, instance, now=ended).skip_reason), "the earlier cursor format"

    rows.head(5).to_csv(settings.landing_dir / "b.csv", index=False)
    time.sleep(0.4)
    [later] = landing_request(settings, first.cursor, names, instance).run_requests or []
    assert later.run_key != request.run_key and "-again" not in later.run_key


def test_a_row_wrong_in_several_columns_names_each_of_them_once() -> None:
    """A quarantined row named only its first wrong column: a file with two faults per row was mended, landed again, and
    quarantined again for the second. A value found unusable is not also said to be missing, nor an unread time an
    unusable offset."""
    from mlplatform.domain.validation import validate_frame

    spec = parse_spec({"name": "s", "task": "regression", "label": "y", "id_column": "id", "time_column": "day",
                       "time_offset": {"column": "hr", "unit": "hours"}, "features": {"x": "numeric", "hr": "numeric", "c": "categorical"}})
    raw = pd.DataFrame({"id": ["a", "b", None, "d"], "day": ["2020-01-01", "not a day", "2020-01-02", "2020-01-03"],
                        "hr": [1, 2, 3, "late"], "x": ["1.5", "one", "2", [1, 2]], "c": ["k", "k", "k", "\x00k"], "y": [1.0, 2.0, "two", 4.0]})
    result = validate_frame(raw, spec, generated_id_prefix="g", generated_time_start_us=0)
    reasons = dict(zip(result.quarantined["row_number"], result.quarantined["reason"]))
    assert list(result.events[EVENT_ID]) == ["a"] and sorted(reasons) == [2, 3, 4]
    assert reasons[2].startswith("day: missing, not a timestamp") and "; x: " in reasons[2] and "hr:" not in reasons[2], reasons[2]
    assert reasons[3].startswith("id: missing; label: ") and reasons[3].count("; ") == 1, reasons[3]
    assert reasons[4].startswith("x: ") and reasons[4].count("x: ") == 1 and "hr: " in reasons[4] and reasons[4].count("hr: ") == 1 and "c: " in reasons[4] and "x: missing" not in reasons[4], reasons[4]
