"""Landing files read in batches: the same events as one pass, whatever the batch size, and exactly once when the
ingesting process is killed mid-file and the file is taken again."""

import gc
import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import ID_NUMBER_PROBLEM
from mlplatform.pipeline.landing import LandingPolicy, NotSettled, ingest_file
from mlplatform.settings import DEFAULT_SPEC, Settings
from mlplatform.stores.eventlog import Counts, EventLog
from mlplatform.stores.eventlog_postgres import PostgresEventLog

from mlplatform_tests.conftest import ADULT_COLUMNS as COLUMNS

KILLED_ROWS = 10_000
# About six batches of the 1.2 MB CSV: enough to be killed between two.
KILLED_BATCH_BYTES = 200_000
BAD_EVERY = 997  # one row in this many has a wrong-typed age, so quarantine is counted across the kill too


def _policy(batch_bytes: int) -> LandingPolicy:
    return replace(LandingPolicy.from_settings(Settings()), quiet_seconds=0.0, batch_bytes=batch_bytes)


def _bare(adult_rows: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The first `rows` Adult rows as an export without ids or times."""
    return adult_rows[COLUMNS].head(rows).drop(columns=["event_id", "event_time"])


def _events(log: EventLog) -> pd.DataFrame:
    return pd.read_sql_query("SELECT event_id, event_time, label, label_seq, f_age, f_workclass FROM events ORDER BY event_id", log._conn)


def _quarantine(log: EventLog) -> pd.DataFrame:
    return pd.read_sql_query("SELECT row_number, reason FROM quarantine ORDER BY row_number", log._conn)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    name = path.name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False, row_group_size=max(1, len(frame) // 7))
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    else:
        text = frame.to_csv(index=False).encode()
        path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    return path


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz", "a.jsonl", "a.parquet"])
def test_small_batches_give_the_same_events_quarantine_and_line_numbers(
    tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, name: str
) -> None:
    frame = adult_rows[COLUMNS].head(300).astype({"age": object}).reset_index(drop=True)
    frame.loc[[5, 150, 299], "age"] = "old"
    results = []
    for batch_bytes in (1 << 20, 3000):
        (tmp_path / str(batch_bytes)).mkdir()
        log = EventLog(tmp_path / str(batch_bytes) / "events.sqlite", adult_spec)
        outcome = ingest_file(_write(frame, tmp_path / str(batch_bytes) / name), adult_spec, log, _policy(batch_bytes))
        assert (outcome.rows, outcome.ingested, outcome.quarantined, outcome.rejected) == (300, 297, 3, None)
        results.append((_events(log).drop(columns="label_seq"), _quarantine(log), log.counts()))
        log.close()
    pd.testing.assert_frame_equal(results[0][0], results[1][0])
    pd.testing.assert_frame_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]
    first_line = 1 if name.endswith((".jsonl", ".parquet")) else 2  # Parquet: row numbers; CSV: after the header
    assert results[1][1]["row_number"].tolist() == [5 + first_line, 150 + first_line, 299 + first_line]


def test_a_full_collection_runs_when_memory_grew_not_after_every_batch(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """A full pass walks every object of every loaded library: after every batch it cost a test process 24-47 s a file."""
    path = _write(adult_rows[COLUMNS].head(1000), tmp_path / "a.csv")
    batches = path.stat().st_size // 3000
    full: list[int] = []

    def count_full(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    gc.callbacks.append(count_full)
    try:
        outcome = ingest_file(path, adult_spec, log, _policy(3000))
    finally:
        gc.callbacks.remove(count_full)
    log.close()
    assert outcome.ingested == 1000 and batches >= 30
    assert len(full) < batches // 3, f"{len(full)} full collections for {batches} batches"


def test_a_stray_quote_costs_its_line_in_any_batch_size(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """A row is a line: a quote left open took in the lines after it (up to another quote, or the file's end, whatever
    the batches), and kept the rest of the file in one batch. Now its line is quarantined, alone, in any batch size."""
    lines = adult_rows[COLUMNS].head(300).to_csv(index=False).splitlines(keepends=True)
    lines[100] = lines[100].replace(",", ',"', 1)  # opened, never closed
    fields = lines[150].split(",")
    fields[COLUMNS.index("workclass")] = 'Sta"te-gov'  # a quote inside a value: literal, it closes nothing
    lines[150] = ",".join(fields)
    for batch_bytes in (1 << 20, 1500):
        folder = tmp_path / str(batch_bytes)
        folder.mkdir()
        (folder / "stray.csv").write_text("".join(lines), encoding="utf-8")
        log = EventLog(folder / "events.sqlite", adult_spec)
        outcome = ingest_file(folder / "stray.csv", adult_spec, log, _policy(batch_bytes))
        assert (outcome.rows, outcome.ingested, outcome.quarantined) == (300, 299, 1), batch_bytes
        assert _quarantine(log)["row_number"].tolist() == [101]
        log.close()


def test_a_file_without_ids_gets_the_same_generated_ids_in_any_batch_size(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    frame = _bare(adult_rows, 100)
    ids = []
    for batch_bytes in (1 << 20, 1500):
        (tmp_path / str(batch_bytes)).mkdir()
        log = EventLog(tmp_path / str(batch_bytes) / "events.sqlite", adult_spec)
        ingest_file(_write(frame, tmp_path / str(batch_bytes) / "noid.csv"), adult_spec, log, _policy(batch_bytes))
        ids.append(_events(log)["event_id"].tolist())
        log.close()
    assert ids[0] == ids[1] and len(set(ids[1])) == 100


def test_a_schema_problem_first_seen_mid_file_keeps_the_rows_before_and_says_so(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """JSON Lines batches each have their own keys: a later batch with a column that is not text is rejected there."""
    good = adult_rows[COLUMNS].head(40).to_json(orient="records", lines=True)
    path = tmp_path / "late.jsonl"
    path.write_text(good + '{"event_id": "x", "event_id ": "y"}\n', encoding="utf-8")
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    outcome = ingest_file(path, adult_spec, log, _policy(4000))
    assert outcome.rejected is not None and "duplicated column names" in outcome.rejected
    assert "rows before it were kept" in outcome.rejected and log.counts().total > 0
    assert (tmp_path / "rejected" / "late.jsonl").exists()


# The second batch's progress waits half a second inside its transaction: the parent, which kills once the first batch's
# progress is committed, kills within it. Unslowed, a Parquet file of few batches was read whole between two of the
# parent's looks once (CI), and the test found nothing to resume.
KILLED_SCRIPT = """
import sys
import time
from dataclasses import replace
from pathlib import Path
from mlplatform.domain.spec import load_spec
from mlplatform.pipeline.landing import LandingPolicy, ingest_file
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventLog


class SlowSecondBatch(EventLog):
    batches = 0

    def record_progress(self, sha256, name, progress):
        SlowSecondBatch.batches += 1
        if SlowSecondBatch.batches == 2:
            time.sleep(0.5)
        super().record_progress(sha256, name, progress)


spec = load_spec(sys.argv[3])
policy = replace(LandingPolicy.from_settings(Settings()), quiet_seconds=0.0, batch_bytes=int(sys.argv[4]))
ingest_file(Path(sys.argv[1]), spec, SlowSecondBatch(Path(sys.argv[2]), spec), policy)
"""


def _progress(db_path: Path) -> int:
    """Rows committed so far by the ingesting process, read on a connection of our own."""
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            row = db.execute("SELECT rows FROM file_progress").fetchone()
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    return int(row[0]) if row else 0


@pytest.mark.parametrize("name", ["big.csv", "big.csv.gz", "big.parquet"])
def test_a_run_killed_mid_file_is_resumed_and_every_row_lands_once(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, name: str) -> None:
    frame = pd.concat([adult_rows[COLUMNS]] * (KILLED_ROWS // len(adult_rows) + 1), ignore_index=True).head(KILLED_ROWS)
    frame["event_id"] = [f"k{i}" for i in range(KILLED_ROWS)]
    frame["age"] = frame["age"].astype(object)
    frame.loc[frame.index % BAD_EVERY == 0, "age"] = "old"
    frame.loc[frame.index % 3 == 0, "income"] = None  # unlabelled rows: label_seq must stay dense over the kill
    landing = tmp_path / "landing"
    landing.mkdir()
    path = _write(frame, landing / name)
    db_path = tmp_path / "events.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(path), str(db_path), str(DEFAULT_SPEC), str(KILLED_BATCH_BYTES)], env=env)
    try:
        deadline = time.monotonic() + 120
        while _progress(db_path) == 0 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the ingesting process ended before it could be killed mid-file"
    kept = _progress(db_path)
    assert 0 < kept < KILLED_ROWS and path.exists()

    log = EventLog(db_path, adult_spec)
    outcome = ingest_file(path, adult_spec, log, _policy(KILLED_BATCH_BYTES))
    bad = len(range(0, KILLED_ROWS, BAD_EVERY))
    labelled = int(frame.loc[frame.index % BAD_EVERY != 0, "income"].notna().sum())
    assert (outcome.rows, outcome.ingested, outcome.duplicates, outcome.quarantined) == (KILLED_ROWS, KILLED_ROWS - bad, 0, bad)
    events = _events(log)
    assert events["event_id"].is_unique and len(events) == KILLED_ROWS - bad
    assert sorted(events["label_seq"].dropna().astype(int)) == list(range(1, labelled + 1))
    counts = log.counts()
    assert (counts.total, counts.labelled, counts.quarantined, counts.label_watermark) == (KILLED_ROWS - bad, labelled, bad, labelled)
    assert len(_quarantine(log)) == bad
    assert pd.read_sql_query("SELECT count(*) AS n FROM file_progress", log._conn)["n"].iloc[0] == 0
    assert (landing / "processed" / name).exists()
    log.close()


def test_batches_commit_with_their_progress_on_postgresql(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, postgres_url: str) -> None:
    """The production event log takes the same batches: nested writes join the batch's transaction there too."""
    frame = adult_rows[COLUMNS].head(120).astype({"age": object})
    frame.loc[7, "age"] = "old"
    log = PostgresEventLog(postgres_url, adult_spec)
    first = ingest_file(_write(frame, tmp_path / "a.csv"), adult_spec, log, _policy(2000))
    again = ingest_file(_write(frame, tmp_path / "again.csv"), adult_spec, log, _policy(2000))
    assert (first.rows, first.ingested, first.quarantined) == (120, 119, 1)
    assert again.read_again.startswith("landed before with 1 of its 120 rows quarantined") and (again.rows, again.duplicates, again.quarantined) == (120, 119, 1)
    assert log.counts() == Counts(119, 119, 1, 119), "the row still refused is quarantined once, not once per reading"
    assert log._query("SELECT count(*) FROM file_progress")[1][0][0] == 0
    log.close()


@pytest.mark.parametrize("name", ["a.csv", "a.jsonl", "a.parquet"])
def test_a_nul_in_an_id_or_a_category_quarantines_its_row_on_postgresql(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                         postgres_url: str, name: str) -> None:
    """PostgreSQL's text holds no NUL: one in an id or a category failed its batch's insert, and the file was rejected
    whole. It quarantines its row now, in an event file and in a label file alike."""
    frame = adult_rows[COLUMNS].head(40).assign(event_id=[f"nul-{i}" for i in range(40)])
    frame.loc[3, "event_id"] = "nul-\x003"
    frame.loc[5, "workclass"] = "Pri\x00vate"
    log = PostgresEventLog(postgres_url, adult_spec)
    events = ingest_file(_write(frame.drop(columns="income"), tmp_path / name), adult_spec, log, _policy(2000))
    labels = ingest_file(_write(frame[["event_id", "income"]].head(8), tmp_path / f"labels-{name}"), adult_spec, log, _policy(2000))
    assert not events.rejected and (events.ingested, events.quarantined) == (38, 2)
    assert not labels.rejected and (labels.labels_applied, labels.quarantined) == (6, 2), "the row whose event was refused: unknown"
    reasons = sorted(reason for (reason,) in log._query("SELECT reason FROM quarantine")[1])
    assert reasons == ["event_id: contains a NUL character (U+0000), which the event log cannot store"] * 2 + [
        "label for an unknown event_id", "workclass: contains a NUL character (U+0000), which the event log cannot store"], reasons
    log.close()


@pytest.mark.parametrize("name", ["a.jsonl", "a.parquet"])
def test_an_id_that_is_a_number_but_no_integer_is_quarantined_as_predict_refuses_it(tmp_path: Path, adult_spec: DatasetSpec,
                                                                                    adult_rows: pd.DataFrame, name: str) -> None:
    """A JSON Lines or Parquet id 1.5 landed as the id "1.5", which /predict refuses (and 1e300 as "1e+300"): one event had
    an id on one surface only. An integral 7.0 is the id "7" everywhere; text "1.5" is an id like any text."""
    frame = adult_rows[COLUMNS].head(6).assign(event_id=[7.0, 1.5, 1e300, 8.0, 9.0, 10.0])
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    events = ingest_file(_write(frame.drop(columns="income"), tmp_path / name), adult_spec, log, _policy(2000))
    labels = ingest_file(_write(frame[["event_id", "income"]], tmp_path / f"labels-{name}"), adult_spec, log, _policy(2000))
    text = ingest_file(_write(frame.drop(columns="income").head(2).assign(event_id=["1.5", "x"]), tmp_path / f"text-{name}"), adult_spec, log, _policy(2000))
    assert (events.ingested, events.quarantined) == (4, 2) and (labels.labels_applied, labels.quarantined) == (4, 2)
    assert text.ingested == 2 and sorted(log.get(["7", "8", "1.5", "x"])["event_id"]) == ["1.5", "7", "8", "x"]
    big = ingest_file(_write(frame.drop(columns="income").head(2).assign(event_id=[2**53 - 1, 2**60]), tmp_path / f"big-{name}"), adult_spec, log, _policy(2000))
    assert (big.ingested, big.quarantined) == (1, 1) and len(log.get([str(2**53 - 1)])) == 1, "an integer beyond JSON's exact ones, as /predict refuses it"
    reasons = [reason for (reason,) in log._query("SELECT reason FROM quarantine")[1]]
    assert reasons == [f"event_id: {ID_NUMBER_PROBLEM}"] * 5, reasons
    log.close()


@contextmanager
def _appending(log: EventLog, path: Path, chunk: bytes) -> Iterator[None]:
    """`chunk` appended to `path` once the reading's first batch committed: a writer appending while the file is read."""
    writes = log.record_progress

    def append_after_the_first_batch(*args: object) -> None:
        writes(*args)  # type: ignore[arg-type]
        if not path.read_bytes().endswith(chunk):
            with path.open("ab") as handle:
                handle.write(chunk)

    log.record_progress = append_after_the_first_batch  # type: ignore[method-assign]
    try:
        yield
    finally:
        log.record_progress = writes  # type: ignore[method-assign]


def _rows_text(frame: pd.DataFrame, name: str) -> bytes:
    """`frame`'s rows as a landing file of that format spells them, without a CSV header."""
    return frame.to_json(orient="records", lines=True).encode() if name.endswith(".jsonl") else frame.to_csv(index=False, header=False).encode()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("name", ["grows.csv", "grows.jsonl"])
def test_a_file_appended_to_while_it_is_read_lands_each_row_once(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, backend: str,
                                                                  name: str, request: pytest.FixtureRequest) -> None:
    """Probe: rows appended while a file without ids was read were read too, under the ids of the content hashed without
    them; the file, changed, was left, and the next run read it whole again as a new file: 250,001 rows landed twice. Now
    a reading stops where the hashed content ends, and the grown file goes on from there, however often it grew (the
    review: a third reading went on from the first one's end, and the second's rows landed twice)."""
    frame = _bare(adult_rows, 70).astype({"age": object})
    frame.loc[3, "age"] = "old"  # quarantined by the first reading: the grown file's, once it is read to its end
    path = _write(frame.head(50), tmp_path / name)
    log = EventLog(tmp_path / "events.sqlite", adult_spec) if backend == "sqlite" else PostgresEventLog(request.getfixturevalue("postgres_url"), adult_spec)
    try:
        for upto in (60, 70):
            with _appending(log, path, _rows_text(frame.iloc[upto - 10 : upto], name)), pytest.raises(NotSettled, match="changed while being read"):
                ingest_file(path, adult_spec, log, _policy(1500))
            assert log.counts().total == upto - 11, "what was hashed, no more: appended rows were read under the shorter content's ids"
        grown = ingest_file(path, adult_spec, log, _policy(1500))
        assert grown.note.startswith("grew after its first ") and (grown.rows, grown.ingested, grown.quarantined) == (70, 69, 1), grown
        assert log.counts() == Counts(69, 69, 1, 69) and log._query("SELECT count(*) FROM file_progress")[1][0][0] == 0
        path.write_bytes((tmp_path / "processed" / name).read_bytes())  # the grown file's bytes again
        again = ingest_file(path, adult_spec, log, _policy(1500))
        assert again.read_again and again.quarantined == 1 and log.counts().quarantined == 1, "its first reading's refusals are the grown file's"
        rewritten = _write(frame.head(55).iloc[::-1], path)  # the same name, other content: no prefix of what was read
        assert ingest_file(rewritten, adult_spec, log, _policy(1500)).ingested == 54
    finally:
        log.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("name", ["export.csv", "export.jsonl"])
@pytest.mark.parametrize("landed_by", ["this version", "an earlier version"])
def test_a_file_landed_whole_then_appended_to_and_landed_again_lands_only_the_new_rows(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                                       backend: str, name: str, landed_by: str,
                                                                                       request: pytest.FixtureRequest) -> None:
    """The upgrade probe: a team's export without ids, landed, then appended to and landed again under its name, was a
    new content read from its start, and its first rows landed twice with nothing said. It now goes on where the landed
    content ended, however often it grows; the same bytes again are nothing new, and a rewritten file of that name is
    still read whole."""
    frame = _bare(adult_rows, 90)
    path = tmp_path / name
    log = EventLog(tmp_path / "events.sqlite", adult_spec) if backend == "sqlite" else PostgresEventLog(request.getfixturevalue("postgres_url"), adult_spec)
    try:
        content = first = _write(frame.head(50), path).read_bytes()
        assert ingest_file(path, adult_spec, log, _policy(1500)).ingested == 50
        if landed_by == "an earlier version":  # which kept no place where a landed content ended: found once, then kept
            with log._write() as db:
                db.execute("UPDATE files SET position = NULL, line = NULL, parsed = NULL")
        for before, upto in ((50, 80), (80, 90)):
            landed = len(content)
            if landed_by == "an earlier version" and upto == 90:
                assert log._query("SELECT count(*) FROM files WHERE position IS NULL")[1][0][0] == 0, "the place found was recorded"
            content += _rows_text(frame.iloc[before:upto], name)
            path.write_bytes(content)
            grown = ingest_file(path, adult_spec, log, _policy(1500))
            assert grown.note.startswith(f"grew after its first {landed} bytes were read: read on from line "), grown
            assert (grown.rows, grown.ingested, grown.duplicates, log.counts().total) == (upto - before, upto - before, 0, upto), "counts of its own"
        path.write_bytes(content)
        assert ingest_file(path, adult_spec, log, _policy(1500)).already_ingested and log.counts().total == 90
        rewritten = _write(frame.head(55).iloc[::-1], path)  # the same name, other content: no prefix of what was read
        replaced = ingest_file(rewritten, adult_spec, log, _policy(1500))
        assert replaced.ingested == 55 and log.counts().total == 145
        assert replaced.note.startswith(f"another file named {name!r} was landed before (") and "rows the two share are events of both" in replaced.note
        path.write_bytes(first + _rows_text(frame.iloc[::-1].head(10), name))  # the first 50 rows grown apart from the 90: other rows after them
        apart = ingest_file(path, adult_spec, log, _policy(1500))
        assert apart.note.startswith("grew after its first ") and (apart.ingested, apart.quarantined, log.counts().total) == (10, 0, 155), \
            "its rows under ids of its own: not taken for the other growth's rows with other values"
    finally:
        log.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_parquet_export_landed_then_exported_again_with_more_rows_lands_only_the_new_rows(tmp_path: Path, adult_spec: DatasetSpec,
                                                                                           adult_rows: pd.DataFrame, backend: str,
                                                                                           request: pytest.FixtureRequest) -> None:
    """A cumulative Parquet export without ids, written again under its name with more rows (other bytes from the first
    on: other row groups, a new footer), was read whole each time: its earlier rows landed again, with nothing said. It
    now goes on where the landed rows ended, whatever row groups it is cut into; its own refusals are its own; an
    export whose first rows changed is read whole, and said."""
    frame = _export_refusing(adult_rows, 100, [75]).astype({"age": str})  # one column type: Parquet's
    path = tmp_path / "export.parquet"
    log = EventLog(tmp_path / "events.sqlite", adult_spec) if backend == "sqlite" else PostgresEventLog(request.getfixturevalue("postgres_url"), adult_spec)
    try:
        frame.head(50).to_parquet(path, index=False, row_group_size=20)
        assert ingest_file(path, adult_spec, log, _policy(1500)).ingested == 50
        for before, upto, groups in ((50, 80, 33), (80, 90, 90)):
            frame.head(upto).to_parquet(path, index=False, row_group_size=groups)
            grown = ingest_file(path, adult_spec, log, _policy(1500))
            assert grown.note.startswith(f"grew after its first {before} rows were landed: read on from row {before + 1}"), grown
            assert (grown.rows, grown.ingested, grown.quarantined, log.counts().total) == (upto - before, upto - before - (upto == 80), upto == 80,
                                                                                           upto - 1), grown
        frame.head(90).to_parquet(path, index=False, row_group_size=90)
        assert ingest_file(path, adult_spec, log, _policy(1500)).already_ingested and log.counts().total == 89
        changed = frame.head(95).copy()
        changed.loc[0, "age"] = "99"  # an earlier row other than landed: not the landed content, gone on
        changed.to_parquet(path, index=False)
        replaced = ingest_file(path, adult_spec, log, _policy(1500))
        assert (replaced.ingested, log.counts().total) == (94, 183) and "rows the two share are events of both" in replaced.note, replaced
    finally:
        log.close()


def test_a_parquet_export_killed_mid_reading_then_exported_again_goes_on_from_its_rows(tmp_path: Path, adult_spec: DatasetSpec, log: EventLog,
                                                                                       adult_rows: pd.DataFrame) -> None:
    """The digest of a Parquet file's rows, kept when its reading ends, covers the rows before a kill too: a reading
    resumed after one, and then an export with more rows, lands each row once. Resumed with smaller batches, two or more
    into its row group: the first batch after the place was taken for the rows from there on (6 rows landed twice)."""
    frame = _bare(adult_rows, 300)
    path = tmp_path / "export.parquet"
    frame.head(200).to_parquet(path, index=False)  # one row group
    _killed_after_the_first_batch(path, adult_spec, log)
    assert log.counts().total == 11, "a first batch of 11 rows (1500 bytes)"
    assert ingest_file(path, adult_spec, log, _policy(700)).rows == 200 and log.counts().total == 200
    frame.to_parquet(path, index=False, row_group_size=70)
    grown = ingest_file(path, adult_spec, log, _policy(1500))
    assert grown.note.startswith("grew after its first 200 rows were landed") and (grown.ingested, log.counts().total) == (100, 300), grown


def test_a_parquet_export_goes_on_only_from_rows_it_begins_with_and_says_what_it_may_land_twice(tmp_path: Path, adult_spec: DatasetSpec, log: EventLog,
                                                                                                  adult_rows: pd.DataFrame) -> None:
    """The review of the Parquet exports: the same rows written again as other bytes were recorded as a content of no
    rows, and those bytes landed again were read whole (100 events became 200); a column of bytes made the digest depend
    on the batches (29 rows landed twice, nothing said); an export that changed a row of the newer content went on from
    an older one with only "grew"; one landed by an earlier version, which kept no digest, was read whole with nothing
    said; and a resumed reading of an export that went on said its rows might be events of both."""
    frame = _bare(adult_rows, 100).reset_index(drop=True)
    frame["blob"] = [b"\xfe" if i == 61 else b"ok" for i in range(100)]  # bytes, one not UTF-8: an ignored column, in the digest
    path = tmp_path / "export.parquet"
    frame.head(50).to_parquet(path, index=False, row_group_size=20)
    assert ingest_file(path, adult_spec, log, _policy(1500)).ingested == 50
    frame.head(50).to_parquet(path, index=False, row_group_size=7)  # the same rows, other bytes
    other_bytes = path.read_bytes()
    same = ingest_file(path, adult_spec, log, _policy(1500))
    assert same.already_ingested and (same.rows, same.duplicates) == (50, 50), same
    path.write_bytes(other_bytes)
    assert ingest_file(path, adult_spec, log, _policy(1500)).already_ingested and log.counts().total == 50, "and again: still nothing new"
    frame.head(80).to_parquet(path, index=False, row_group_size=33)
    assert ingest_file(path, adult_spec, log, _policy(1500)).ingested == 30
    frame.head(90).to_parquet(path, index=False, row_group_size=90)
    grown = ingest_file(path, adult_spec, log, _policy(700))
    assert grown.note == "grew after its first 80 rows were landed: read on from row 81" and log.counts().total == 90, grown
    changed = frame.copy()
    changed.loc[70, "hours-per-week"] = "99"  # a row of the 80-row content corrected: goes on from the 50-row one, and says so
    changed.to_parquet(path, index=False)
    apart = ingest_file(path, adult_spec, log, _policy(1500))
    assert apart.note.startswith("grew after its first 50 rows were landed: read on from row 51; another file named 'export.parquet' was landed before ("), apart
    assert "rows the two share are events of both" in apart.note and apart.ingested == 50


def test_a_parquet_export_landed_by_an_earlier_version_is_read_whole_and_said(tmp_path: Path, adult_spec: DatasetSpec, log: EventLog, adult_rows: pd.DataFrame) -> None:
    """A Parquet content landed by a version that kept no digest of its rows is never gone on from: an export with more
    rows is read whole, and now says that its rows without ids may be events of both (it said nothing)."""
    frame = _bare(adult_rows, 80)
    path = tmp_path / "export.parquet"
    frame.head(50).to_parquet(path, index=False)
    ingest_file(path, adult_spec, log, _policy(1500))
    with log._write() as db:
        db.execute("UPDATE files SET position = NULL, line = NULL, parsed = NULL, ended_sha256 = NULL")
    frame.to_parquet(path, index=False)
    whole = ingest_file(path, adult_spec, log, _policy(1500))
    assert whole.ingested == 80 and "rows the two share are events of both" in whole.note, whole


@pytest.mark.parametrize("killed", ["its first reading", "the reading that went on"])
def test_a_parquet_export_killed_mid_reading_goes_on_once_exported_again(tmp_path: Path, adult_spec: DatasetSpec, log: EventLog, adult_rows: pd.DataFrame,
                                                                         killed: str) -> None:
    """The review: a Parquet reading killed mid-file, then the file exported again with more rows, was read whole (11
    rows twice, nothing said); a reading that went on from a landed export, killed and resumed, said its rows might be
    events of both. Each row lands once, and nothing is said of a resumed reading."""
    frame = _bare(adult_rows, 90)
    path = tmp_path / "export.parquet"
    if killed == "its first reading":
        frame.head(60).to_parquet(path, index=False)
        _killed_after_the_first_batch(path, adult_spec, log)
        frame.to_parquet(path, index=False, row_group_size=25)
        grown = ingest_file(path, adult_spec, log, _policy(1500))
        assert grown.note.startswith("grew after its first 11 rows were landed") and (grown.rows, log.counts().total) == (90, 90), grown
    else:
        frame.head(30).to_parquet(path, index=False)
        ingest_file(path, adult_spec, log, _policy(1500))
        frame.to_parquet(path, index=False, row_group_size=25)
        _killed_after_the_first_batch(path, adult_spec, log)
        resumed = ingest_file(path, adult_spec, log, _policy(1500))
        assert resumed.note == "" and (resumed.rows, log.counts().total) == (60, 90), resumed
    assert log._query("SELECT count(*) FROM file_progress")[1][0][0] == 0


@pytest.mark.parametrize("name", ["export.csv.gz", "export.jsonl.gz"])
def test_a_gzipped_export_written_again_with_more_rows_lands_only_the_new_rows(tmp_path: Path, adult_spec: DatasetSpec, log: EventLog, adult_rows: pd.DataFrame,
                                                                               name: str) -> None:
    """A .gz export without ids, compressed again under its name with more rows (other bytes from the first on), was read
    whole each time: its earlier rows landed again. It goes on where the landed text ended, as a plain file does, read in
    its decompressed text; the same text compressed again is nothing new; a reading killed mid-file goes on too."""
    frame = _bare(adult_rows, 120)
    path = tmp_path / name
    text = _write(frame.head(50), tmp_path / name.removesuffix(".gz")).read_bytes()
    path.write_bytes(gzip.compress(text, compresslevel=9))
    assert ingest_file(path, adult_spec, log, _policy(1500)).ingested == 50
    path.write_bytes(gzip.compress(text, compresslevel=1))  # the same text, other bytes
    same = ingest_file(path, adult_spec, log, _policy(1500))
    assert same.already_ingested and log.counts().total == 50, same
    text += _rows_text(frame.iloc[50:80], name.removesuffix(".gz"))
    path.write_bytes(gzip.compress(text))
    grown = ingest_file(path, adult_spec, log, _policy(1500))
    assert grown.note.startswith("grew after its first ") and "(decompressed)" in grown.note and (grown.ingested, log.counts().total) == (30, 80), grown
    text += _rows_text(frame.iloc[80:120], name.removesuffix(".gz"))
    path.write_bytes(gzip.compress(text))
    _killed_after_the_first_batch(path, adult_spec, log)
    assert 80 < log.counts().total < 120
    path.write_bytes(gzip.compress(text, compresslevel=3))  # the killed reading's text, compressed again
    assert ingest_file(path, adult_spec, log, _policy(1500)).note.startswith("grew after its first ") and log.counts().total == 120


def test_a_gzipped_export_cut_short_while_its_text_is_digested_is_not_settled_and_an_old_one_is_said(tmp_path: Path, adult_spec: DatasetSpec, log: EventLog,
                                                                                                     adult_rows: pd.DataFrame) -> None:
    """The third review: a .gz cut short while the digest of its text read was taken raised EOFError, and the file was
    rejected, where a plain file is left as still changing; a .gz an earlier version landed (its place unkept) landed
    again whole, nothing said."""
    from mlplatform.pipeline.landing import _PrefixDigest

    path = tmp_path / "export.csv.gz"
    noise = b"".join(os.urandom(32).hex().encode() + b"\n" for _ in range(100_000))  # compresses to several read blocks
    path.write_bytes(gzip.compress(noise))
    with path.open("rb") as handle:
        digest = _PrefixDigest(handle, path.stat().st_size, gzipped=True)
        digest.upto(1000)
        os.truncate(path, path.stat().st_size // 3)
        with pytest.raises(NotSettled, match="changed while being read"):
            digest.upto(len(noise))
    text = _write(_bare(adult_rows, 400), tmp_path / "export.csv").read_bytes()
    path.write_bytes(gzip.compress(text[: text.index(b"\n", 5000) + 1]))
    ingest_file(path, adult_spec, log, _policy(1 << 20))
    with log._write() as db:
        db.execute("UPDATE files SET position = NULL, line = NULL, parsed = NULL, ended_sha256 = NULL")
    path.write_bytes(gzip.compress(text))
    whole = ingest_file(path, adult_spec, log, _policy(1 << 20))
    assert whole.rows == 400 and "rows the two share are events of both" in whole.note, whole


def _export_refusing(adult_rows: pd.DataFrame, rows: int, bad: list[int]) -> pd.DataFrame:
    """An export without ids of `rows` rows, those at `bad` refused (an age that is no number)."""
    frame = _bare(adult_rows, rows).astype({"age": object})
    frame.loc[bad, "age"] = "old"
    return frame


def _land_first_20(frame: pd.DataFrame, path: Path, spec: DatasetSpec, log: EventLog) -> bytes:
    """`frame`'s first 20 rows landed whole as `path` (one of them refused); the bytes landed."""
    first = _write(frame.head(20), path).read_bytes()
    assert ingest_file(path, spec, log, _policy(1500)).quarantined == 1
    return first


def test_an_appended_file_read_again_reads_its_own_rows_and_each_content_keeps_its_refusals(tmp_path: Path, adult_spec: DatasetSpec,
                                                                                           adult_rows: pd.DataFrame) -> None:
    """The review: an appended file with a refused row of its own is read again when landed again; read from its start,
    the rows its first content landed came back under its own ids (28 events became 47). The first content's refusals
    stay its own: moved to the appended file, landing the first content again quarantined its bad row twice."""
    frame, path = _export_refusing(adult_rows, 30, [3, 25]), tmp_path / "export.csv"
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    try:
        first = _land_first_20(frame, path, adult_spec, log)
        path.write_bytes(first + _rows_text(frame.iloc[20:], path.name))
        grown = ingest_file(path, adult_spec, log, _policy(1500))
        assert (grown.rows, grown.ingested, grown.quarantined, log.counts().total, log.counts().quarantined) == (10, 9, 1, 28, 2), grown
        path.write_bytes(first + _rows_text(frame.iloc[20:], path.name))
        again = ingest_file(path, adult_spec, log, _policy(1500))
        assert again.read_again and (again.rows, again.duplicates, again.quarantined) == (10, 9, 1), again
        assert (log.counts().total, log.counts().quarantined) == (28, 2), "its first content's rows are not landed again"
        path.write_bytes(first)
        assert ingest_file(path, adult_spec, log, _policy(1500)).quarantined == 1 and log.counts().quarantined == 2, "each content its own refusal"
    finally:
        log.close()


@pytest.mark.parametrize("name", ["export.csv", "export.jsonl"])
def test_an_export_whose_last_line_had_no_line_end_goes_on_once_appended_to_from_a_new_line(tmp_path: Path, adult_spec: DatasetSpec,
                                                                                            adult_rows: pd.DataFrame, name: str) -> None:
    """The acceptance probe: an export without a line end after its last row, landed, then appended to starting with
    one, was read whole again and its first rows landed twice, with no note. Appended bytes that extend its last line
    instead are no rows of their own: that file is read whole."""
    frame = _bare(adult_rows, 12)
    path = tmp_path / name
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    try:
        content = _write(frame.head(5), path).read_bytes().rstrip(b"\r\n")
        path.write_bytes(content)
        assert ingest_file(path, adult_spec, log, _policy(1500)).ingested == 5
        content += b"\n" + _rows_text(frame.iloc[5:10], name)
        path.write_bytes(content)
        grown = ingest_file(path, adult_spec, log, _policy(1500))
        assert grown.note.startswith("grew after its first ") and (grown.rows, grown.ingested, log.counts().total) == (5, 5, 10), grown
        content += _rows_text(frame.iloc[10:12], name)
        path.write_bytes(content)
        assert ingest_file(path, adult_spec, log, _policy(1500)).ingested == 2 and log.counts().total == 12, "and grows on"
    finally:
        log.close()


@pytest.mark.parametrize("then", ["resumed", "grew again"])
def test_an_appended_file_killed_mid_reading_still_knows_where_its_own_rows_began(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                                 then: str) -> None:
    """The second review: where an appended file's own rows began was kept only once its reading finished. Killed,
    resumed and then read again, the first content's rows landed twice (68 events became 87); grown again after the
    kill, the rows of the killed reading came back under the grown file's ids (14 of them). A grown file's rows are
    numbered on under its first content's ids, and where its own rows begin is kept from its first batch."""
    frame, path = _export_refusing(adult_rows, 100, [3, 40]), tmp_path / "export.csv"
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    try:
        content = _land_first_20(frame, path, adult_spec, log)
        content += _rows_text(frame.iloc[20:70], path.name)
        path.write_bytes(content)
        _killed_after_the_first_batch(path, adult_spec, log)
        if then == "grew again":
            content += _rows_text(frame.iloc[70:], path.name)
            path.write_bytes(content)
        ingest_file(path, adult_spec, log, _policy(1500))
        landed = (log.counts().total, log.counts().quarantined)
        assert landed == ((70 if then == "resumed" else 100) - 2, 2)
        path.write_bytes(content)  # the same bytes again: read again, for its refused row
        again = ingest_file(path, adult_spec, log, _policy(1500))
        assert again.read_again and again.quarantined == 1 and (log.counts().total, log.counts().quarantined) == landed, again
    finally:
        log.close()


def test_a_label_file_appended_to_is_read_whole_so_its_waiting_labels_are_applied(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """The review: labels whose events had not landed wait in quarantine, and a label file landed again is read whole for
    them; appended to, it went on after its first content, and those labels stayed waiting."""
    rows = adult_rows[COLUMNS].head(20)
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    try:
        assert ingest_file(_write(rows.head(10).drop(columns=["income"]), tmp_path / "events-1.csv"), adult_spec, log, _policy(1500)).ingested == 10
        labels = rows[["event_id", "income"]]
        early = _write(labels.head(15), tmp_path / "labels.csv").read_bytes()
        assert ingest_file(tmp_path / "labels.csv", adult_spec, log, _policy(1500)).labels_applied == 10
        assert ingest_file(_write(rows.iloc[10:20].drop(columns=["income"]), tmp_path / "events-2.csv"), adult_spec, log, _policy(1500)).ingested == 10
        (tmp_path / "labels.csv").write_bytes(early + _rows_text(labels.iloc[15:], "labels.csv"))
        grown = ingest_file(tmp_path / "labels.csv", adult_spec, log, _policy(1500))
        assert grown.labels_applied == 10 and not grown.note and log.counts().labelled == 20, grown
    finally:
        log.close()


def test_a_line_cut_by_a_writer_is_read_whole_once_the_file_grew(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """The review: a file hashed while its writer was mid-line ended in half a row; the reading took that half as a row
    (quarantined, or a truncated last value landed), and the grown file went on from the middle of the line, its other
    half one more bad row. A reading commits an unended last line only while the file is unchanged."""
    frame = adult_rows[COLUMNS].head(60)
    whole = _write(frame, tmp_path / "cut.csv").read_bytes()
    cut = whole.index(b"\n", len(whole) // 2) + 20  # 20 bytes into a line
    path = tmp_path / "cut.csv"
    path.write_bytes(whole[:cut])
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    try:
        with _appending(log, path, whole[cut:]), pytest.raises(NotSettled, match="changed while being read"):
            ingest_file(path, adult_spec, log, _policy(1500))
        assert log.counts().quarantined == 0, "the half line was not taken for a row"
        grown = ingest_file(path, adult_spec, log, _policy(1500))
        assert (log.counts().total, log.counts().quarantined, grown.quarantined) == (60, 0, 0), grown
    finally:
        log.close()


def test_a_nul_in_a_malformed_line_is_quarantined_on_postgresql(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, postgres_url: str) -> None:
    """The review: a malformed line's raw text is its quarantined record; with a NUL in it PostgreSQL refused the insert,
    and the file was rejected whole."""
    lines = _write(adult_rows[COLUMNS].head(6), tmp_path / "n.csv").read_bytes().split(b"\n")
    lines[3] += b",extra\x00field"
    path = tmp_path / "n.csv"
    path.write_bytes(b"\n".join(lines))
    log = PostgresEventLog(postgres_url, adult_spec)
    try:
        outcome = ingest_file(path, adult_spec, log, _policy(1 << 20))
        assert not outcome.rejected and (outcome.ingested, outcome.quarantined) == (5, 1), outcome
        assert "extra\\x00field" in log._query("SELECT record FROM quarantine")[1][0][0]
    finally:
        log.close()


class _Killed(BaseException):
    """The process dying between two batches: nothing after it runs (not an Exception, so nothing catches it)."""


def _killed_after_the_first_batch(path: Path, spec: DatasetSpec, log: EventLog | PostgresEventLog) -> None:
    """A reading of `path` whose process dies right after its first batch committed."""
    writes = log.record_progress
    calls: list[object] = []

    def dies_after_the_first(*args: object) -> None:
        if calls:
            raise _Killed
        calls.append(args)
        writes(*args)  # type: ignore[arg-type]

    log.record_progress = dies_after_the_first  # type: ignore[method-assign]
    try:
        with pytest.raises(_Killed):
            ingest_file(path, spec, log, _policy(1500))
    finally:
        log.record_progress = writes  # type: ignore[method-assign]


@pytest.mark.parametrize(("backend", "recorded_by"), [("sqlite", "this version"), ("postgres", "this version"), ("sqlite", "an earlier version"),
                                                    ("postgres", "an earlier version")])
def test_a_file_killed_mid_reading_then_appended_to_lands_each_row_once(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                        backend: str, recorded_by: str, request: pytest.FixtureRequest) -> None:
    """A reading of a file without ids killed after its first batch, then the file appended to: the grown file was a new
    content, read from its start under ids of its own hash, and the first batch's rows landed twice. The grown file now
    goes on where the killed reading stopped, as it does after a reading that ended at the content's end; also where an
    earlier version, which kept no digest of the bytes read, recorded the reading (the upgrade probe)."""
    frame = _bare(adult_rows, 80)
    path = _write(frame.head(60), tmp_path / "killed.csv")
    log = EventLog(tmp_path / "events.sqlite", adult_spec) if backend == "sqlite" else PostgresEventLog(request.getfixturevalue("postgres_url"), adult_spec)
    try:
        _killed_after_the_first_batch(path, adult_spec, log)
        if recorded_by == "an earlier version":
            with log._write() as db:
                db.execute("UPDATE file_progress SET prefix_sha256 = ''")
        kept = log.counts().total
        assert 0 < kept < 60
        with path.open("ab") as handle:
            handle.write(_rows_text(frame.iloc[60:], path.name))
        grown = ingest_file(path, adult_spec, log, _policy(1500))
        assert grown.note.startswith("grew after its first "), grown
        assert (grown.rows, grown.ingested, grown.duplicates, log.counts().total) == (80, 80, 0, 80), "the file's counts cover both readings"
        assert log._query("SELECT count(*) FROM file_progress")[1][0][0] == 0
    finally:
        log.close()


def test_another_file_of_a_landed_name_is_noted_only_when_its_rows_have_no_ids(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """The third review: the note read the spec's id column alone (the log's own `event_id` column is one too), named the
    file itself when it was landed again, and hid the ignored-columns note."""
    rows = adult_rows[COLUMNS].head(25)
    log = EventLog(tmp_path / "events.sqlite", adult_spec)
    try:
        ingest_file(_write(rows.head(20), tmp_path / "ids.csv"), adult_spec, log, _policy(1500))
        with_ids = ingest_file(_write(rows.iloc[::-1], tmp_path / "ids.csv"), adult_spec, log, _policy(1500))
        assert (with_ids.ingested, with_ids.duplicates, with_ids.note) == (5, 20, ""), with_ids
        bare = rows.drop(columns=["event_id", "event_time"])
        ingest_file(_write(bare.head(20), tmp_path / "bare.csv"), adult_spec, log, _policy(1500))
        other = ingest_file(_write(bare.iloc[::-1].assign(comment="x"), tmp_path / "bare.csv"), adult_spec, log, _policy(1500))
        assert other.note.startswith("another file named 'bare.csv' was landed before (") and other.note.endswith("; ignored columns: comment"), other
        header = tmp_path / "empty.csv"
        for _ in range(2):
            header.write_text(",".join(bare.columns) + "\n")
            assert ingest_file(header, adult_spec, log, _policy(1500)).note in ("no rows", "already ingested")
    finally:
        log.close()
