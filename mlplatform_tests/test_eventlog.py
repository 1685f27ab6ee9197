"""The event log on both backends (SQLite file, PostgreSQL): idempotent by event_id, late and conflicting labels,
watermarks, windows, many processes at once, and the same frames from both."""

import multiprocessing as mp
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from mlplatform.domain.spec import FEATURE_NAME_MAX, DatasetSpec, parse_spec
from mlplatform.domain.timeformat import iso_time
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL, not_a_number, reason_kind
from mlplatform.settings import Settings, redact
from mlplatform.stores.eventlog import BULK_CHECKPOINT_PAGES, CHECKPOINT_PAGES, SERVING_SOURCE, Arrival, Counts, EventIdsTaken, EventLog, EventLogError, EventStore, FileCounts, FileProgress
from mlplatform.stores.eventlog_factory import open_event_log
from mlplatform.stores.eventlog_postgres import EVENT_LOG_URL_SETTING, PostgresEventLog
from mlplatform_tests.support.postgres import PostgresCluster

SPEC = {
    "name": "mini",
    "task": "binary",
    "label": "y",
    "positive_class": "1",
    "classes": ["0", "1"],
    "features": {"x": "numeric", "c": "categorical"},
}
WRITERS = 3
BATCHES = 20
BATCH = 50


def _spec() -> DatasetSpec:
    return parse_spec(SPEC)


def _events(ids: list[str], times: list[int] | None = None, labels: list[str | None] | None = None) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            EVENT_ID: ids,
            EVENT_TIME: times if times is not None else list(range(n)),
            LABEL: labels if labels is not None else ["1" if i % 2 else "0" for i in range(n)],
            "x": np.arange(n, dtype="float64"),
            "c": ["a"] * n,
        }
    )


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings that put the event log on one backend: the SQLite file in the state folder, or a fresh PostgreSQL database."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return Settings(state_dir=tmp_path / "state", event_log_url=url)


@pytest.fixture
def log(settings: Settings) -> Iterator[EventStore]:
    event_log = open_event_log(settings, _spec())
    yield event_log
    event_log.close()


def test_existing_names_the_ids_the_log_holds(log: EventStore) -> None:
    """Serving's check of callers' ids: found ids once each, unknown ones left out, more than one statement's worth of ids."""
    log.append(_events(["a", "b", "c"]), "f1")
    asked = ["c", "x", "a", "a", *(f"n{i}" for i in range(1200)), "b"]
    assert sorted(log.existing(asked)) == ["a", "b", "c"] and log.existing([]) == [] and log.existing(["x"]) == []
    now = log.existing_now(asked)  # on serving's event loop: the embedded log answers, PostgreSQL leaves it to `existing`
    assert (sorted(now) == ["a", "b", "c"]) if isinstance(log, EventLog) else now is None
    log.append(_events(["late"]), "f2")
    assert log.existing_now(["late"]) == (["late"] if isinstance(log, EventLog) else None), "its own connection sees the latest commit"
    assert log.get(["c", "a", "x"])["event_id"].tolist() == ["a", "c"] and log.get([]).empty


def test_append_is_idempotent_by_event_id(log: EventStore) -> None:
    first = log.append(_events(["a", "b", "c"]), "f1")
    again = log.append(_events(["a", "b", "c", "d"]), "f2")
    assert (first.inserted, first.duplicates) == (3, 0)
    assert (again.inserted, again.duplicates, again.labels_applied) == (1, 3, 0)
    counts = log.counts()
    assert (counts.total, counts.labelled, counts.label_watermark) == (4, 4, 4)
    assert log.get(["d"]).iloc[0]["source"] == "f2"


def test_a_known_id_with_other_feature_values_is_written_nowhere_and_named(log: EventStore) -> None:
    """Across appends an id names one event: given again with the same features it is a duplicate (its label may still
    be news); with another feature value it is reported as changed, the first differing feature named, and neither its
    features nor its label are written."""
    log.append(_events(["a", "b", "c"], labels=[None, None, "1"]), "f1")
    again = _events(["a", "b", "c", "d"], labels=["1", "0", "1", "1"])
    again.loc[0, "x"] = 9.0
    again.loc[2, "c"] = None
    result = log.append(again, "f2")
    assert (result.inserted, result.duplicates, result.labels_applied) == (1, 1, 1) and result.conflicts.empty
    assert result.changed.to_dict("records") == [{"event_id": "a", "changed": "x: 0.0 logged, 9.0 here"},
                                                 {"event_id": "c", "changed": "c: 'a' logged, None here"}]
    kept = log.get(["a", "b", "c"]).set_index("event_id")
    assert kept.loc["a", "x"] == 0.0 and pd.isna(kept.loc["a", "label"]) and kept.loc["b", "label"] == "0" and kept.loc["c", "c"] == "a"


def test_a_known_id_landed_at_another_time_is_changed_when_the_file_gave_the_time(log: EventStore) -> None:
    """The probe: a re-export with a corrected time was counted as a duplicate, its time lost without a word. With times
    of the file's own (`timed`) a landed id at another time is changed, as another feature value is; times stamped at
    landing (no time column) say nothing, and neither does serving's clock against a file's."""
    log.append(_events(["a", "b", "c"], labels=[None, None, None]), "f1")
    log.append_served([("s", 5_000_000, "1", "0", 0.5, 1.0, "a")], SERVING_SOURCE)
    again = _events(["a", "b", "c", "s"], times=[0, 1, 2, 9], labels=[None, None, None, None])
    again.loc[3, ["x", "c"]] = [1.0, "a"]
    first = int(again.loc[0, "event_time"])
    again.loc[0, "event_time"] = first + 3_600_000_000
    untimed = log.append(again, "untimed.csv")
    assert untimed.changed.empty and untimed.duplicates == 4, "times generated at landing are no event's own"
    result = log.append(again, "timed.csv", timed=True)
    assert result.changed.to_dict("records") == [{"event_id": "a", "changed": f"event_time: {iso_time(first)} logged, {iso_time(first + 3_600_000_000)} here"}]
    assert result.duplicates == 3 and log.get(["a"]).iloc[0]["event_time"] == first, "the logged time stays"


def test_repeats_inside_one_append_count_once(log: EventStore) -> None:
    result = log.append(_events(["a", "a", "b"]), "f")
    assert (result.inserted, result.duplicates) == (2, 1)
    assert log.counts().total == 2


def test_the_contents_of_a_file_that_grew_name_its_first_content(log: EventStore) -> None:
    """An export landed whole, appended to and landed again, twice: three contents of one file; another file of that
    name, and one that went on from it, are another file."""
    bad = pd.DataFrame({"row_number": [3], "reason": ["bad x"], "record": ["{}"]})
    for sha, earlier in (("a1", None), ("a2", "a1"), ("ak", "a2"), ("a3", "ak"), ("b1", None), ("b2", "b1")):
        with log.transaction():
            if earlier is not None:
                log.hand_over(earlier, sha, FileProgress(position=10, line=3, parsed=2), sha, quarantine=False)
            if sha != "ak":  # a reading killed before its end: no record of it, nor any refusal (the review: the chain broke there)
                log.quarantine(bad, "export.csv", sha)
                log.record_file(sha, "export.csv", FileCounts(rows=3, quarantined=1))
    log.quarantine(bad, "other.csv", "c1")
    assert log.first_contents("export.csv") == {"a1": "a1", "a2": "a1", "a3": "a1", "b1": "b1", "b2": "b1"}
    assert log.first_contents("other.csv") == {"c1": "c1"} and log.first_contents("none.csv") == {}


def test_reasons_that_differ_only_in_their_values_are_counted_as_one(log: EventStore) -> None:
    """Each reason names its value (or its line): 400 bad amounts made a 400-line reasons table in `mlplatform
    quarantine` and a run's metadata (the own-dataset probe). Rows refused for one problem are one line: the reason
    itself where they share it, else what it says with the values left out."""
    reasons = ["age: 'old' is not a finite number", "age: 'young' is not a finite number", "line 8: malformed JSON (x)", "line 9: malformed JSON (x)",
               "x1: 'a' is not a finite number", "x2: 'b' is not a finite number", "label: 1 recorded, 0 here", "label: 1 recorded, 0 here"]
    log.quarantine(pd.DataFrame({"row_number": range(3, 11), "reason": reasons, "record": ["{}"] * 8}), "batch.csv", "sha-a")
    assert log.quarantine_reasons(limit=None)[["reason", "rows", "first_line"]].values.tolist() == [
        ["age: … is not a finite number", 2, 3], ["label: 1 recorded, 0 here", 2, 9], ["line …: malformed JSON (x)", 2, 5],
        ["x1: 'a' is not a finite number", 1, 7], ["x2: 'b' is not a finite number", 1, 8]], "a column named with a digit stays itself"
    assert log.quarantined_rows(1)["reason"].tolist() == ["label: 1 recorded, 0 here"], "each row keeps its own reason"
    assert reason_kind("2019: 'a' is not a finite number") == "2019: … is not a finite number", "a column named as a number stays itself (the review)"
    assert reason_kind('line 12: key "a" given twice') == "line …: key … given twice"
    long, short = not_a_number("9" * 400), not_a_number("9" * 40)  # the serving probe: 400 nines read as a finite 40-digit number
    assert long == f"{'9' * 40!r}… is not a finite number" and short == f"{'9' * 40!r} is not a finite number"
    assert reason_kind(f"age: {long}") == reason_kind(f"age: {short}") == "age: … is not a finite number", "cut short or not: one kind"


def test_a_file_read_again_releases_its_own_quarantine_alone(log: EventStore) -> None:
    """Each reading of the same bytes added its refusals to the earlier ones: the quarantined count grew with every landing."""
    bad = pd.DataFrame({"row_number": [3, 5], "reason": ["bad x", "bad y"], "record": ["{}", "{}"]})
    log.quarantine(bad, "batch.csv", "sha-a")
    log.quarantine(bad.head(1), "batch.csv", "sha-b")  # another file of the same name: not the one read again
    with log.transaction():
        assert log.release_quarantined("sha-a") == 2
        log.quarantine(bad.tail(1), "batch.csv", "sha-a")
    assert log.counts().quarantined == 2
    assert sorted(log.quarantine_reasons()[["reason", "rows"]].itertuples(index=False, name=None)) == [("bad x", 1), ("bad y", 1)]
    assert log.release_quarantined("sha-never-landed") == 0 and log.counts().quarantined == 2

    log.quarantine(bad, "other.csv", "sha-c")
    assert log.quarantined_rows(10, source="batch.csv")[["file", "line", "reason"]].values.tolist() == [["batch.csv", 5, "bad y"], ["batch.csv", 3, "bad x"]]
    assert log.quarantined_rows(1)["file"].tolist() == ["other.csv"], "newest first"
    assert log.quarantine_reasons(source="batch.csv")[["content", "reason"]].values.tolist() == [["sha-a", "bad y"], ["sha-b", "bad x"]]
    with pytest.raises(ValueError, match="not a SHA-256 prefix"):
        log.release_quarantined_file("batch.csv", "sha-")
    assert log.release_quarantined_file("other.csv", "ab") == 0, "a content of another name"
    assert log.release_quarantined_file("batch.csv", "ab") == 0 and log.counts().quarantined == 4
    log.quarantine(bad.head(1), "batch.csv", "ab12" * 16)
    assert log.quarantine_releases().empty, "a reading again releases by itself: no person's release"
    assert log.release_quarantined_file("batch.csv", "ab1", by="ops", reason="fixed upstream") == 1, "one content of the name, by the start of its SHA-256"
    assert log.release_quarantined_file("batch.csv", by="ops 'two'") == 2, "a corrected file took its place: every content of that name"
    assert log.counts().quarantined == 2 and log.quarantine_reasons(source="batch.csv").empty and len(log.quarantine_reasons(source="other.csv")) == 2
    assert log.release_quarantined_file("batch.csv") == 0
    releases = log.quarantine_releases(source="batch.csv")
    assert releases[["file", "content", "rows", "by", "reason"]].values.tolist() == [
        ["batch.csv", "sha-a", 1, "ops 'two'", ""], ["batch.csv", "sha-b", 1, "ops 'two'", ""], ["batch.csv", "ab12" * 3, 1, "ops", "fixed upstream"]]
    assert releases["released_at"].is_monotonic_decreasing and log.quarantine_releases(source="other.csv").empty


def test_labels_stored_before_their_class_was_renamed_read_as_the_class_the_label_map_names(tmp_path: Path) -> None:
    """A spec renaming its classes (label_map from the old names) left the stored labels in the old vocabulary: a binary
    window of four labels, and every retraining failed from then on."""
    old = _spec()
    log = EventLog(tmp_path / "events.sqlite", old)
    labels = list(old.classes or [])
    log.append(_events(["a", "b"], labels=labels), "f")
    log.close()
    renamed = old.model_copy(update={"classes": ["low", "high"], "positive_class": "high", "label_map": {labels[0]: "low", labels[1]: "high"}})
    log = EventLog(tmp_path / "events.sqlite", renamed)
    try:
        assert log.events_between().set_index(EVENT_ID)[LABEL].to_dict() == {"a": "low", "b": "high"}
        again = log.add_labels(["a", "b"], ["low", "high"])  # review: a label file landed again conflicted with its own labels
        assert (again.unchanged, again.conflicts) == (["a", "b"], [])
        assert log.append(_events(["a"], labels=["low"]), "f").conflicts.empty
    finally:
        log.close()


def test_a_feature_whose_type_the_spec_changed_keeps_its_values_in_the_new_type(settings: Settings) -> None:
    """Probe: after categorical → numeric every read of the log failed on a stored 'long'; after numeric → categorical
    the column stayed numeric, and a code '007' landed as 7.0."""
    log = open_event_log(settings, _spec())
    log.append(_events(["a", "b", "d"]).assign(x=[1.5, 2.0, 3.0], c=["long", "3.25", "1e400"]), "f")
    log.close()
    swapped = parse_spec({**SPEC, "features": {"x": "categorical", "c": "numeric"}})
    log = open_event_log(settings, swapped)
    try:
        log.append(_events(["z"]).assign(x=["007"], c=[4.0]), "f")
        read = log.events_between().set_index(EVENT_ID)
        assert pd.isna(read.loc["a", "c"]) and (read.loc["b", "c"], read.loc["z", "c"]) == (3.25, 4.0), "text that is no number: missing"
        assert pd.isna(read.loc["d", "c"]), "no double holds 1e400: missing (PostgreSQL's cast failed, and the log could not be opened)"
        assert read.loc["z", "x"] == "007" and (read.loc["a", "x"], read.loc["b", "x"]) == ("1.5", "2"), \
            "the old numbers kept, spelled as landing spells a category (SQLite wrote '2.0': the same file landed again was 'other values')"
    finally:
        log.close()
    log = open_event_log(settings, _spec())  # and back: the text no number held was kept, and returns as it landed
    try:
        log.append(_events(["y"]).assign(x=[8.0], c=["new"]), "f")
        read = log.events_between().set_index(EVENT_ID)
        assert read["c"].to_dict() == {"a": "long", "b": "3.25", "d": "1e400", "z": "4", "y": "new"}, \
            "a spec edit found by any command that opened the log cleared 'long' for good (the new-user probe)"
        assert read.loc["z", "x"] == 7.0 and read.loc["y", "x"] == 8.0
    finally:
        log.close()


def test_a_feature_flipped_back_and_forth_keeps_what_it_landed_with(settings: Settings) -> None:
    """The review: a 55-character feature's kept column (then `f_<name>__kept_text`) was cut short by PostgreSQL, its
    text not restored and the next flip failed to open the log; a column of whole numbers alone turning to text raised
    TypeError in SQLite."""
    long = "a" * 55
    specs = [parse_spec({**SPEC, "features": {"x": kinds[0], long: kinds[1]}}) for kinds in
             (("numeric", "categorical"), ("categorical", "numeric"))]
    for step, spec in enumerate([specs[0], specs[1], specs[0], specs[1], specs[0]]):
        log = open_event_log(settings, spec)
        try:
            if step == 0:
                log.append(_events(["a", "b"]).assign(x=[7.0, 5.0], **{long: ["True", "007"]}).drop(columns="c"), "f")
            if step == 1:
                log.append(_events(["n"]).assign(x=["9"], **{long: [4.5]}).drop(columns="c"), "f")
            read = log.events_between().set_index(EVENT_ID)
        finally:
            log.close()
        if spec is specs[0]:
            assert read[long].to_dict() == {"a": "True", "b": "007", **({"n": "4.5"} if step else {})}, (step, read[long].to_dict())
            assert read["x"].to_dict() == {"a": 7.0, "b": 5.0, **({"n": 9.0} if step else {})}
        else:
            assert pd.isna(read.loc["a", long]) and (read.loc["b", long], read.loc["n", long]) == (7.0, 4.5), "'True' no number: missing, kept"
            assert read["x"].to_dict() == {"a": "7", "b": "5", "n": "9"}, "whole numbers alone turned to text"


@pytest.mark.parametrize("hash_column", ["", ", file_sha256 TEXT"], ids=["before the column", "migrated, hashes left empty"])
def test_a_log_from_before_quarantine_knew_its_files_opens_and_keeps_its_rows(tmp_path: Path, hash_column: str) -> None:
    """A log written by an earlier version: its quarantine table gains the file's hash, filled in once from the files a
    name was landed as, where they tell it for sure: a row is the content first recorded at or after it (a reading
    recorded its file once it had quarantined its rows), and each content must get the rows its `quarantined` counts
    (the upgrade probe: a name landed as two contents kept none, a reading again counted its refusals twice, and no
    release could name either). A log the previous version migrated, leaving such rows empty, gets them too. Where the
    files cannot tell (the review), the name's rows keep no hash rather than be released with another content's: a
    content read again (its `at` moved to the later reading), a reading killed before its file was recorded, a name
    with no file recorded, or one landed again later."""
    path = tmp_path / "events.sqlite"
    rows = [("old.csv", 9), ("twice.csv", 10), ("twice.csv", 20),  # one content; two, each read once
            ("labels.csv", 9), ("labels.csv", 19), ("labels.csv", 29),  # L1 at 10, L2 at 20, L1 read again at 30: its at is 30
            ("daily.csv", 4), ("daily.csv", 8),  # C recorded at 5; the reading of another content killed at 8
            ("gone.csv", 1)]  # no file recorded
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE quarantine (id INTEGER PRIMARY KEY, source TEXT NOT NULL, row_number INTEGER, reason TEXT NOT NULL, record TEXT, "
                   f"quarantined_at INTEGER NOT NULL{hash_column})")
        db.executemany("INSERT INTO quarantine (source, row_number, reason, quarantined_at) VALUES (?, ?, 'bad', ?)", [(n, i, at) for i, (n, at) in enumerate(rows)])
        db.execute("CREATE TABLE files (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, rows INTEGER, ingested INTEGER, duplicates INTEGER, "
                   "quarantined INTEGER, at INTEGER NOT NULL)")
        db.executemany("INSERT INTO files VALUES (?, ?, 5, 4, 0, ?, ?)", [("sha-old", "old.csv", 1, 9), ("sha-t1", "twice.csv", 1, 10), ("sha-t2", "twice.csv", 1, 20),
                                                                          ("sha-l1", "labels.csv", 1, 30), ("sha-l2", "labels.csv", 1, 20), ("sha-c", "daily.csv", 1, 5)])
    log = EventLog(path, _spec())
    try:
        assert _contents(path) == ["sha-old", "sha-t1", "sha-t2", *[None] * 6]
        assert log.quarantine_reasons(limit=None, source="labels.csv")[["reason", "rows"]].values.tolist() == [["bad", 3]], "rows from before kinds: by reason"
        assert log.release_quarantined("sha-t1") == 1 and log.release_quarantined("sha-t2") == 1, "each content's own refusal, released as it is read again"
        log.record_file("sha-g", "gone.csv", FileCounts(rows=3, ingested=3))
        log.record_file("sha-l3", "labels.csv", FileCounts(rows=3, ingested=3))
    finally:
        log.close()
    log = EventLog(path, _spec())  # opened again after contents landed under those names: the fill was done once
    try:
        assert _contents(path) == ["sha-old", *[None] * 6] and log.release_quarantined("sha-l3") == 0
    finally:
        log.close()


def _contents(path: Path) -> list[str | None]:
    """The quarantine rows' file hashes, by row."""
    with closing(sqlite3.connect(path)) as db:
        return [sha for (sha,) in db.execute("SELECT file_sha256 FROM quarantine ORDER BY id")]


def test_a_log_from_before_progress_kept_its_prefix_digest_opens_and_resumes_as_before(tmp_path: Path) -> None:
    """An unfinished reading recorded by an earlier version has no digest of the bytes read: it reads as empty (landing
    then checks that a grown file begins with that reading's whole content; test_landing_streaming)."""
    path = tmp_path / "events.sqlite"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE file_progress (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, position INTEGER NOT NULL, line INTEGER NOT NULL, "
                   "parsed INTEGER NOT NULL, rows INTEGER NOT NULL, ingested INTEGER NOT NULL, duplicates INTEGER NOT NULL, "
                   "quarantined INTEGER NOT NULL, labels_applied INTEGER NOT NULL)")
        db.execute("INSERT INTO file_progress VALUES ('sha-old', 'old.csv', 100, 5, 4, 4, 4, 0, 0, 0)")
        db.execute("CREATE TABLE files (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, rows INTEGER, ingested INTEGER, duplicates INTEGER, "
                   "quarantined INTEGER, at INTEGER NOT NULL)")
        db.execute("INSERT INTO files VALUES ('sha-whole', 'old.csv', 7, 7, 0, 0, 1)")
    log = EventLog(path, _spec())
    try:
        old = FileProgress(position=100, line=5, parsed=4, counts=FileCounts(rows=4, ingested=4))
        assert log.file_progress("sha-old") == old and log.progress_named("old.csv") == [("sha-old", old)]
        assert log.lineage("sha-whole") == (FileProgress(), None)
        assert log.recorded_file("sha-whole") == FileCounts(rows=7, ingested=7) and log.completed_named("old.csv") == [], \
            "where a file landed before ended is unknown: one appended to is read whole, as before"
    finally:
        log.close()


def test_a_batch_commits_with_its_file_progress_or_not_at_all(log: EventStore) -> None:
    """What landing's exactly-once rests on: a batch's events, counters, quarantine and progress share one transaction."""
    bad = pd.DataFrame({"row_number": [3], "reason": ["bad x"], "record": ["{}"]})
    with pytest.raises(RuntimeError, match="killed"), log.transaction():
        log.append(_events(["a", "b"]), "f")
        log.quarantine(bad, "f", "sha")
        log.record_progress("sha", "f", FileProgress(position=10, line=4, parsed=2, counts=FileCounts(rows=3, ingested=2, quarantined=1)))
        raise RuntimeError("killed")
    assert log.counts() == Counts(0, 0, 0, 0) and log.file_progress("sha") == FileProgress() and log.get(["a"]).empty
    # Distinct values, so a column read back into the wrong counter shows.
    done = FileProgress(position=10, line=4, parsed=2, counts=FileCounts(rows=9, ingested=2, duplicates=3, quarantined=1, labels_applied=4),
                        prefix_sha256="5e1f")
    with log.transaction():
        log.append(_events(["a", "b"]), "f")
        log.quarantine(bad, "f", "sha")
        log.record_progress("sha", "f", done)
    assert log.counts() == Counts(2, 2, 1, 2) and log.file_progress("sha") == done and log.recorded_file("sha") is None
    log.record_file("sha", "f", done.counts)
    assert log.file_progress("sha") == FileProgress() and log.recorded_file("sha") == FileCounts(rows=9, ingested=2, duplicates=3, quarantined=1)
    assert log.completed_named("f") == [], "no line end said where it ended"
    log.record_file("sha", "f", done.counts, replace(done, prefix_sha256=""))
    assert log.completed_named("f") == [("sha", FileProgress(position=10, line=4, parsed=2, prefix_sha256="sha"))], "its own counts start anew"
    log.record_file("sha", "f", done.counts, done)
    assert log.completed_named("f") == [("sha", FileProgress(position=10, line=4, parsed=2, prefix_sha256="5e1f"))], "what goes on from it begins with"
    assert log.lineage("sha") == (FileProgress(), None), "from its start, under its own ids"
    with log.transaction():
        log.hand_over("sha-before", "sha", FileProgress(position=4, line=2, parsed=1), "sha-first", quarantine=False)
    assert log.lineage("sha") == (FileProgress(position=4, line=2, parsed=1), "sha-first")
    assert log.recorded_file("sha") == FileCounts(rows=9, ingested=2, duplicates=3, quarantined=1)
    log.quarantine(pd.DataFrame({"row_number": [1, 7], "reason": ["early", "late"], "record": ["{}", "{}"]}), "f", "sha")
    assert log.release_quarantined("sha", from_line=2) == 2 and list(log.quarantine_reasons()["reason"]) == ["early"], "rows before the line stay"


def test_a_bulk_load_checkpoints_the_sqlite_wal_at_its_end_not_at_every_commit(tmp_path: Path) -> None:
    """A landing file's batches commit inside one bulk load: each would otherwise copy its pages into the database file."""
    log = EventLog(tmp_path / "events.sqlite", _spec())

    def pragma(name: str) -> int:
        return int(log._conn.execute(f"PRAGMA {name}").fetchone()[0])

    def all_in_database_file() -> bool:
        return log.path.stat().st_size == pragma("page_count") * pragma("page_size")

    with log.bulk_load():
        for k in range(3):
            with log.transaction():
                log.append(_events([f"{k}-{i}" for i in range(2000)]), "f")
        assert pragma("wal_autocheckpoint") == BULK_CHECKPOINT_PAGES and not all_in_database_file()
    assert all_in_database_file() and pragma("wal_autocheckpoint") == CHECKPOINT_PAGES and log.counts().total == 6000
    with pytest.raises(RuntimeError, match="killed"), log.bulk_load():
        raise RuntimeError("killed")
    assert pragma("wal_autocheckpoint") == CHECKPOINT_PAGES
    log.close()


def test_late_labels_get_the_next_label_seq(log: EventStore) -> None:
    log.append(_events(["a", "b", "c"], labels=[None, None, "1"]), "events")
    assert (log.counts().labelled, log.counts().label_watermark) == (1, 1)
    result = log.add_labels(["b", "a"], ["0", "1"])
    assert (result.applied, result.unknown, result.conflicts) == (["b", "a"], [], [])
    seqs = log.get(["a", "b", "c"]).set_index(EVENT_ID)["label_seq"].to_dict()
    assert seqs == {"c": 1, "b": 2, "a": 3}
    assert log.labelled_since(1) == 2 and log.labelled_since(3) == 0


def test_labels_sent_again_conflicting_and_unknown(log: EventStore) -> None:
    log.append(_events(["a", "b"], labels=["1", None]), "events")
    result = log.add_labels(["a", "a", "b", "b", "zzz"], ["1", "0", "0", "1", "1"])
    assert result.unchanged == ["a"] and result.conflicts == ["a", "b"] and result.applied == ["b"] and result.unknown == ["zzz"]
    assert log.get(["a", "b"]).set_index(EVENT_ID)[LABEL].to_dict() == {"a": "1", "b": "0"}
    assert log.counts().labelled == 2


def test_append_with_labels_for_known_events(log: EventStore) -> None:
    log.append(_events(["a", "b", "c"], labels=[None, "0", "1"]), "events")
    result = log.append(_events(["a", "b", "c"], labels=["1", "0", "0"]), "relabel")
    assert (result.inserted, result.labels_applied) == (0, 1)
    assert result.conflicts[EVENT_ID].tolist() == ["c"] and result.conflicts["existing_label"].tolist() == ["1"]
    assert log.counts().label_watermark == 3


def test_labelled_window_is_time_ordered_and_capped(log: EventStore) -> None:
    times = [50, 10, 40, 20, 30, 60]
    log.append(_events(["e50", "e10", "e40", "e20", "e30", "e60"], times=times, labels=["1", "0", "1", "0", None, "1"]), "f")
    window = log.labelled_window(3)
    assert window[EVENT_ID].tolist() == ["e40", "e50", "e60"]
    assert log.labelled_window(10)[EVENT_TIME].is_monotonic_increasing
    capped = log.labelled_window(10, max_label_seq=2)
    assert sorted(capped[EVENT_ID]) == ["e10", "e50"]
    between = log.events_between(20, 50)
    assert between[EVENT_ID].tolist() == ["e20", "e30", "e40"]
    assert window["x"].dtype == "float64"


def test_events_that_arrived_later_count_whatever_their_time_once_each(log: EventStore) -> None:
    """Drift's current side: events timed in a range, or arrived after a given one (a file of older events landed
    late) with a time from a given moment on; an event matching both counts once, and sampling draws from the same set."""
    log.append(_events([f"a{i}" for i in range(10)], times=list(range(100, 110))), "f1")  # seq 1..10
    log.append(_events([f"b{i}" for i in range(6)], times=[50, 60, 105, 108, 200, 201]), "f2")  # seq 11..16: arrived later
    later = Arrival(seq=10, since_us=55)
    assert log.count_between(108, 1000) == 5  # by time only: a8, a9, b3, b4, b5
    assert log.count_between(108, 1000, arrived_after=later) == 7  # + b1, b2 (b0 is before since_us; b3..b5 once)
    sample = log.sample_between(108, 1000, 100, arrived_after=later)
    assert sorted(sample[EVENT_ID]) == ["a8", "a9", "b1", "b2", "b3", "b4", "b5"] and sample[EVENT_TIME].is_monotonic_increasing
    assert len(log.sample_between(108, 1000, 3, arrived_after=later)) == 3
    assert log.count_between(108, 1000, max_label_seq=0, arrived_after=later) == 0, "the label cut-off holds on both ranges"


def test_the_history_warmup_reads_the_count_or_the_longest_time_window_whichever_reaches_further(log: EventStore) -> None:
    times = [10, 20, 30, 40, 50, 60]
    log.append(_events([f"e{t}" for t in times], times=times), "f")

    def read(before: int | None, events: int, span: int) -> list[str]:
        return log.history_warmup(before, events, span)[EVENT_ID].tolist()

    assert read(None, 2, 0) == ["e50", "e60"] and read(50, 2, 0) == ["e30", "e40"]  # no time window: the count
    assert read(None, 2, 35) == ["e30", "e40", "e50", "e60"]  # the span from the log's end (60) holds more than the count
    assert read(50, 2, 25) == ["e30", "e40"] and read(50, 1, 25) == ["e30", "e40"]  # [25, 50): as many as the count, or more
    assert read(50, 3, 15) == ["e20", "e30", "e40"]  # the count reaches further back than the span
    assert read(None, 10, 15) == [f"e{t}" for t in times] and read(15, 0, 100) == ["e10"]  # the whole log; a count of 0
    assert "label_time" in log.history_warmup(None, 2, 35) and log.history_warmup(5, 2, 35).empty


def test_empty_append_and_reopen_keep_counts(settings: Settings) -> None:
    first = open_event_log(settings, _spec())
    assert first.append(_events([]), "empty").inserted == 0
    first.append(_events(["a", "b"]), "f")
    first.close()
    reopened = open_event_log(settings, _spec())
    assert reopened.counts().total == 2 and reopened.labelled_window(10)[EVENT_ID].tolist() == ["a", "b"]
    reopened.close()


def test_regression_labels_are_floats(settings: Settings) -> None:
    spec = parse_spec({"name": "reg", "task": "regression", "label": "y", "features": {"x": "numeric", "c": "categorical"}})
    log = open_event_log(settings, spec)
    events = _events(["a", "b"]).assign(label=[1.5, np.nan])
    log.append(events, "f")
    assert log.add_labels(["b"], [2.5]).applied == ["b"]
    window = log.labelled_window(10)
    assert window[LABEL].tolist() == [1.5, 2.5] and window[LABEL].dtype == "float64"
    log.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(EventLogError, match="garbage.sqlite"):
        EventLog(path, _spec())


def _writer(settings: Settings, worker: int, errors: "mp.Queue[str]") -> None:
    """One process appending batches, some of them overlapping with another writer's ids."""
    try:
        log = open_event_log(settings, _spec())
        for b in range(BATCHES):
            owner = (worker + b) % WRITERS  # every batch id range is written by two processes
            ids = [f"w{owner}-b{b}-{i}" for i in range(BATCH)]
            log.append(_events(ids, times=[b * BATCH + i for i in range(BATCH)]), f"writer-{worker}")
        log.close()
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"writer {worker}: {exc!r}")


def _reader(settings: Settings, errors: "mp.Queue[str]") -> None:
    """A process reading windows and counts while the writers write."""
    try:
        log = open_event_log(settings, _spec())
        last = 0
        for _ in range(60):
            counts = log.counts()
            window = log.labelled_window(500)
            if counts.total < last or len(window) > 500 or not window[EVENT_TIME].is_monotonic_increasing:
                errors.put(f"reader saw an inconsistent log: total {counts.total} after {last}")
            last = counts.total
        log.close()
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"reader: {exc!r}")


def _run_processes(targets: list[tuple[object, tuple[object, ...]]]) -> None:
    """Start every target in its own process at once; fail with what any of them reported."""
    ctx = mp.get_context("fork")  # separate processes and connections; fork skips re-importing pandas in each
    errors = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, errors)) for target, args in targets]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == [] and all(p.exitcode == 0 for p in procs)


def test_concurrent_writers_and_readers_in_separate_processes(settings: Settings) -> None:
    open_event_log(settings, _spec()).close()
    _run_processes([(_writer, (settings, w)) for w in range(WRITERS)] + [(_reader, (settings,)) for _ in range(2)])
    expected = WRITERS * BATCHES * BATCH
    log = open_event_log(settings, _spec())
    everything = log.labelled_window(expected + 10)
    assert len(everything) == everything[EVENT_ID].nunique() == expected
    assert sorted(everything["label_seq"]) == list(range(1, expected + 1))  # dense: no gap, no number twice
    assert (log.counts().total, log.counts().labelled, log.counts().label_watermark) == (expected, expected, expected)
    log.close()


SERVERS = 2
GROUPS = 60
GROUP = 25


def _served_rows(server: int, group: int) -> list[tuple[object, ...]]:
    """One group commit of served predictions, as the prediction log hands them over."""
    return [(f"s{server}-{group}-{i}", group * GROUP + i, "3", "1", 0.75, float(i), "a") for i in range(GROUP)]


def _server(settings: Settings, server: int, errors: "mp.Queue[str]") -> None:
    """A prediction service process committing its groups one transaction each."""
    try:
        log = open_event_log(settings, _spec())
        for group in range(GROUPS):
            log.append_served(_served_rows(server, group), SERVING_SOURCE)
        log.close()
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"server {server}: {exc!r}")


def _sensor(settings: Settings, errors: "mp.Queue[str]") -> None:
    """The sensor's reads while everything writes: the counters only ever grow, labelled never exceeds total."""
    try:
        log = open_event_log(settings, _spec())
        last = log.counts()
        for _ in range(100):
            counts = log.counts()
            if counts.total < last.total or counts.label_watermark < last.label_watermark or counts.labelled > counts.total:
                errors.put(f"sensor saw counters go back: {counts} after {last}")
            if log.labelled_since(last.label_watermark) < counts.label_watermark - last.label_watermark:  # read after: can only be more
                errors.put("labelled_since is behind the watermark")
            last = counts
        log.close()
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"sensor: {exc!r}")


def test_served_rows_from_several_processes_are_all_kept_and_counted(settings: Settings) -> None:
    open_event_log(settings, _spec()).close()
    _run_processes([(_server, (settings, s)) for s in range(SERVERS)] + [(_writer, (settings, 0)), (_sensor, (settings,))])
    log = open_event_log(settings, _spec())
    served = [row[0] for s in range(SERVERS) for g in range(GROUPS) for row in _served_rows(s, g)]
    assert len(log.get(served)) == len(served)
    landed = BATCHES * BATCH
    counts = log.counts()
    assert (counts.total, counts.labelled, counts.label_watermark) == (len(served) + landed, landed, landed)
    assert log.count_between(-(2**62), 2**62) == counts.total  # the counter agrees with a full count
    log.close()


def _exercise(log: EventStore) -> None:
    """The same history on any backend: fresh, repeated, late, conflicting and missing values, served rows, quarantine."""
    spec = log.spec
    labels = [1.5, None, 0.1 + 0.2, None, -2.0, 7.0] if not spec.is_classification else ["1", None, "0", None, "1", "0"]
    events = pd.DataFrame(
        {
            EVENT_ID: ["e1", "e2", "e3", "e4", "e5", "e6"],
            EVENT_TIME: [30, 10, 20, 20, 50, 40],
            LABEL: labels,
            "x": [1.0, np.nan, 1e-300, -0.0, 123456.789, np.inf],
            "c": ["a", None, "", 'quote " and, comma', "line\nbreak", "é"],
        }
    )
    log.append(events, "f1")
    log.append(events.assign(**{LABEL: [labels[4], labels[0], labels[2], labels[5], labels[4], labels[0]]}), "f2")
    log.add_labels(["e4", "zzz"], [labels[0], labels[0]])
    replayed = _events(["p1", "p2"], times=[70, 80], labels=[labels[0], None]).assign(model_version=[3, 3], prediction=[1, None], probability=[0.5, None])
    log.append(replayed, "replay")  # non-text values in text columns are stored as their text
    log.append_served([("s1", 25, "3", "1", 0.25, 2.0, "b"), ("s2", 60, "3", None, None, None, None)], SERVING_SOURCE)
    log.add_labels(["s1"], [labels[2]])
    log.quarantine(pd.DataFrame({"row_number": [3, 4], "reason": ["bad x", "bad x"], "record": ["{}", None]}), "f1", "sha1")
    log.quarantine(pd.DataFrame({"row_number": [9], "reason": ["bad x"], "record": ["{}"]}), "f2", "sha2")


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_both_backends_give_the_same_frames(tmp_path: Path, postgres_url: str, task: str) -> None:
    spec = _spec() if task == "binary" else parse_spec({"name": "reg", "task": "regression", "label": "y", "features": {"x": "numeric", "c": "categorical"}})
    sqlite_log = open_event_log(Settings(state_dir=tmp_path / "state", event_log_url=None), spec)
    postgres_log = open_event_log(Settings(state_dir=tmp_path / "state", event_log_url=postgres_url), spec)
    reads = {
        "events_between": lambda log: log.events_between(),
        "events_between capped": lambda log: log.events_between(15, 55, limit=3),
        "nothing between": lambda log: log.events_between(1000, 2000),
        "labelled_window": lambda log: log.labelled_window(4),
        "labelled_window point in time": lambda log: log.labelled_window(10, max_label_seq=3),
        "served_window": lambda log: log.served_window(10, 3),
        "get": lambda log: log.get(["e3", "s2", "nope", "e1"]),
        "get nothing": lambda log: log.get([]),
        "sample of everything": lambda log: log.sample_between(0, 100, 100),
        "quarantine_reasons": lambda log: log.quarantine_reasons(),
        "quarantine_reasons of nothing": lambda log: log.quarantine_reasons(since_us=2**62),
        "quarantined_rows": lambda log: log.quarantined_rows(10).drop(columns="quarantined_at"),
        "quarantined_rows of one file": lambda log: log.quarantined_rows(10, source="f2").drop(columns="quarantined_at"),
        "current side of a drift report": lambda log: log.sample_between(60, 100, 100, arrived_after=Arrival(seq=3, since_us=15)),
    }
    for log in (sqlite_log, postgres_log):
        _exercise(log)
    for name, read in reads.items():
        pd.testing.assert_frame_equal(read(sqlite_log), read(postgres_log), obj=name)
    for name in ("counts", "time_range"):
        assert getattr(sqlite_log, name)() == getattr(postgres_log, name)(), name
    assert sqlite_log.quarantine_reasons().to_dict("records") == [{"file": "f1", "content": "sha1", "reason": "bad x", "rows": 2, "first_line": 3},
                                                                 {"file": "f2", "content": "sha2", "reason": "bad x", "rows": 1, "first_line": 9}]
    assert not reads["current side of a drift report"](sqlite_log).empty
    clocks = ("ingested_at", "label_time")  # each log's own clock
    for event_id in ("e3", "e4", "s1", "s2"):  # one event as plain values (serving's /feedback): the frame's values, either backend
        (columns, features), (other_columns, other_features) = sqlite_log.record(event_id), postgres_log.record(event_id)  # type: ignore[misc]
        assert features == other_features and {k: v for k, v in columns.items() if k not in clocks} == {k: v for k, v in other_columns.items() if k not in clocks}
        expected = sqlite_log.get([event_id], label_times=True).astype(object).iloc[0]
        assert set(columns) | set(features) == set(expected.index) and (columns["label_time"] is None) == (columns["label_seq"] is None)
        assert all(value == expected[name] or (value is None and pd.isna(expected[name])) for name, value in {**columns, **features}.items()), event_id
    assert sqlite_log.record("nope") is postgres_log.record("nope") is None
    assert sqlite_log.count_between(15, 55, max_label_seq=3) == postgres_log.count_between(15, 55, max_label_seq=3)
    assert sqlite_log.recorded_file("abc") is postgres_log.recorded_file("abc") is None
    for log in (sqlite_log, postgres_log):
        log.record_file("abc", "f1", FileCounts(rows=6, ingested=6, quarantined=2))
        log.record_file("abc", "f1", FileCounts(rows=6, ingested=6, quarantined=2))
        assert log.recorded_file("abc") == FileCounts(rows=6, ingested=6, quarantined=2)
        log.close()


def test_without_a_url_the_factory_opens_the_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", event_log_url=None)
    log = open_event_log(settings, _spec())
    assert isinstance(log, EventLog) and log.path == settings.events_dir / "mini.sqlite"
    log.close()


@pytest.mark.parametrize("problem", ["wrong password", "closed port", "missing database", "not a URL"])
def test_a_wrong_event_log_url_fails_at_open_naming_the_setting(tmp_path: Path, postgres_cluster: PostgresCluster, problem: str) -> None:
    url = {
        "wrong password": postgres_cluster.url(password="not-the-password"),
        "closed port": postgres_cluster.url().replace(f":{postgres_cluster.port}/", ":1/"),
        "missing database": postgres_cluster.url("no_such_database"),
        "not a URL": f"postgresql://postgres:{postgres_cluster.password}@[127.0.0.1",
    }[problem]
    with pytest.raises(EventLogError, match=EVENT_LOG_URL_SETTING) as raised:
        open_event_log(Settings(state_dir=tmp_path / "state", event_log_url=url), _spec())
    assert postgres_cluster.password not in str(raised.value)


def test_postgres_log_lives_in_its_datasets_schema(postgres_url: str) -> None:
    log = open_event_log(Settings(event_log_url=postgres_url), _spec())
    assert isinstance(log, PostgresEventLog) and log.schema == "eventlog_mini" and "***" in log.location
    log.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@127.0.0.1:5432/db", "postgresql://u:***@127.0.0.1:5432/db"),
        ("postgresql://u@127.0.0.1/db?password=secret&sslmode=disable", "postgresql://u@127.0.0.1/db?password=***&sslmode=disable"),
        ("host=127.0.0.1 password=secret user=u", "host=127.0.0.1 password=*** user=u"),
        ("postgresql://u@127.0.0.1/db", "postgresql://u@127.0.0.1/db"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_dropped_postgres_connection_costs_one_call(postgres_url: str) -> None:
    log = open_event_log(Settings(event_log_url=postgres_url), _spec())
    log.append(_events(["a", "b"]), "f")
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # what a server restart or failover does to the log's session
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(EventLogError, match=r"event log: unavailable \(MLPLATFORM_EVENT_LOG_URL, postgresql://postgres:\*\*\*@"):
        log.counts()  # named as the event log's trouble: what landing keeps a file for and serving answers 503 for
    log.append(_events(["c"]), "f")
    assert log.counts().total == 3
    log.close()


def test_a_feature_added_to_the_spec_becomes_a_column(settings: Settings) -> None:
    open_event_log(settings, _spec()).close()
    wider = parse_spec({**SPEC, "features": {**SPEC["features"], "z": "numeric"}})
    log = open_event_log(settings, wider)
    log.append(_events(["a"]).assign(z=[2.5]), "f")
    assert log.get(["a"])["z"].tolist() == [2.5]
    log.close()


def test_a_write_probe_commits_and_changes_nothing(log: EventStore) -> None:
    """What serving's readiness asks after a failed commit, on both backends."""
    log.append(pd.DataFrame({EVENT_ID: ["probe-1"], EVENT_TIME: [1], "label": [None], **{f: [None] for f in _spec().features}}), "test")
    before = log.counts()
    assert log.probe_writable() is None and log.counts() == before


def test_served_rows_commit_without_waiting_only_where_nothing_holds_the_write_lock(log: EventStore, settings: Settings) -> None:
    """The embedded log commits served rows at once when its write lock is free and answers None, writing nothing, while
    another connection holds it; PostgreSQL never commits without waiting (each commit is a round trip)."""
    rows = [(f"n{i}", 100 + i, "1", "0", 0.5, float(i), "a") for i in range(3)]
    if settings.event_log_url is not None:
        assert log.append_served_now(rows, SERVING_SOURCE) is None and log.counts().total == 0
        return
    assert isinstance(log, EventLog)
    assert log.append_served_now(rows, SERVING_SOURCE) == 3 and log.append_served_now([], SERVING_SOURCE) == 0
    assert log.get(["n0", "n1", "n2"])["model_version"].tolist() == ["1", "1", "1"] and log.counts().total == 3
    with closing(sqlite3.connect(log.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        assert log.append_served_now([("n3", 200, "1", "0", 0.5, 3.0, "a")], SERVING_SOURCE) is None
        other.execute("ROLLBACK")
    assert log.append_served_now([("n9", 200, "1", "0", 0.5, 3.0, "a"), rows[0]], SERVING_SOURCE) is None, "a taken id: left to append_served"
    assert log.existing(["n9"]) == [] and log.append_served_now([("n3", 200, "1", "0", 0.5, 3.0, "a")], SERVING_SOURCE) == 1
    log.checkpoint()
    assert log.counts().total == 4 and log.get(["n3"])[EVENT_ID].tolist() == ["n3"]


def test_served_rows_with_an_id_already_in_the_log_write_nothing_and_name_the_taken_ids(log: EventStore) -> None:
    """What a caller's id raced for by two serving processes comes to: the loser's whole call is refused naming the id, and
    the rest of it can be committed again on its own."""
    log.append(_events(["landed"]), "f1")
    log.append_served([("served", 100, "1", "0", 0.5, 1.0, "a")], SERVING_SOURCE)
    before = log.counts()
    rows = [("new", 101, "1", "0", 0.5, 2.0, "a"), ("served", 102, "2", "1", 0.9, 3.0, "b"), ("landed", 103, "2", "1", 0.9, 3.0, "b")]
    with pytest.raises(EventIdsTaken) as taken:
        log.append_served(rows, SERVING_SOURCE)
    assert sorted(taken.value.event_ids) == ["landed", "served"] and log.counts() == before and log.existing(["new"]) == []
    assert log.get(["served"])["model_version"].tolist() == ["1"], "the event already logged is untouched"
    assert log.append_served(rows[:1], SERVING_SOURCE) == 1 and log.counts().total == before.total + 1


def test_an_id_served_between_the_look_up_of_known_ids_and_the_insert_makes_the_append_try_again(log: EventStore,
                                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The review: on PostgreSQL the served path takes no label lock, so a caller's id can be committed by serving between
    a landing batch's look-up of the known ids and its insert. The insert's unique violation then failed the append,
    which landing took for the file's fault: a good file rejected. The look-up missing it is staged here (the served
    row is in, the first look-up answers as before it); the append, rolled back, is tried again and finds it."""
    log.append_served([("raced", 100, "1", "0", 0.5, 1.0, "a")], SERVING_SOURCE)
    looked_up = type(log)._known
    calls: list[int] = []

    def before_the_served_commit(self: EventStore, db: Any, events: pd.DataFrame, timed: bool) -> pd.DataFrame:
        calls.append(1)
        found = looked_up(self, db, events, timed)
        return found.iloc[:0] if len(calls) == 1 else found

    monkeypatch.setattr(type(log), "_known", before_the_served_commit)
    result = log.append(_events(["new", "raced"]), "f1")
    assert len(calls) == 2 and result.inserted == 1 and result.duplicates + len(result.changed) == 1
    assert log.counts().total == 2 and sorted(log.existing(["new", "raced"])) == ["new", "raced"]
    # A constraint other than the id's is no race, not tried again: NOT NULL (SQLite's IntegrityError is its too;
    # PostgreSQL's binary COPY refuses the None before the server), and the label_seq index's uniqueness (a 'unique'
    # violation, which the first fix's match of the message retried), staged by a counter read as 0 again: seq 1 is taken.
    if isinstance(log, EventLog):
        calls.clear()
        with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
            log.append(_events(["untimed"]).astype({"event_time": object}).assign(event_time=None), "f2")
        assert len(calls) == 1
    calls.clear()
    monkeypatch.setattr(type(log), "_label_base", lambda self, db: 0)
    with pytest.raises(Exception, match="label_seq"):
        log.append(_events(["relabelled"]), "f3")
    assert len(calls) == 1 and log.existing(["relabelled"]) == []


def test_shadow_predictions_join_the_served_labelled_events_of_the_champion(log: EventStore) -> None:
    """A shadow prediction counts as evidence once its event was served by the named champion and labelled; a repeat keeps
    the first prediction, another version's rows and unknown or unlabelled events are not counted, and `events` is untouched."""
    log.append_served([(f"s{i}", 100 + i, "1", "1" if i % 2 else "0", 0.1 * i, float(i), "a") for i in range(6)], SERVING_SOURCE)
    log.append_served([("other", 200, "7", "1", 0.9, 1.0, "a")], SERVING_SOURCE)  # served by another champion
    log.append(_events(["landed"], times=[5]), "f1")  # labelled, but never served
    total = log.counts().total
    shadow = [(f"s{i}", "2", "0", 0.05 * i) for i in range(6)] + [("other", "2", "0", 0.5), ("landed", "2", "1", 0.5), ("ghost", "2", "1", 0.5)]
    assert log.append_shadow(shadow) == 9
    log.append_shadow([("s0", "2", "1", 0.99), ("s1", "3", "1", 0.99)])  # a repeat of (v2, s0) keeps the first; v3 is another challenger
    assert log.shadow_labelled(2, 1) == 0  # nothing labelled yet
    log.add_labels(["s0", "s1", "s2", "s3", "other", "ghost"], ["1", "0", "1", "1", "1", "1"])
    assert log.shadow_labelled(2, 1) == 4 and log.shadow_labelled("3", "1") == 1 and log.shadow_labelled(2, 7) == 1
    window = log.shadow_window(3, 2, 1)
    assert window[EVENT_ID].tolist() == ["s1", "s2", "s3"]  # the latest 3 by event time, oldest first
    assert window[LABEL].tolist() == ["0", "1", "1"] and window["prediction"].tolist() == ["1", "0", "1"]
    assert window["shadow_prediction"].tolist() == ["0", "0", "0"] and window["shadow_probability"].tolist() == pytest.approx([0.05, 0.1, 0.15])
    assert log.shadow_window(10, 2, 1).iloc[0]["shadow_probability"] == 0.0  # s0: the first prediction kept
    assert log.counts().total == total and log.append_shadow([]) == 0


def test_the_longest_feature_names_a_spec_accepts_are_columns_on_both_backends(settings: Settings) -> None:
    """PostgreSQL cuts identifiers at 63 bytes: with the log's `f_` before a 63-character name, the column it created was
    not the one it looked for, and the log could not be opened again; two names alike in their first 61 were one column."""
    long = {"x" * (FEATURE_NAME_MAX - 1) + end: kind for end, kind in (("a", "numeric"), ("b", "categorical"))}
    spec = parse_spec({**SPEC, "features": long})
    frame = _events(["a", "b"]).drop(columns=["x", "c"]).assign(**{name: [1.0, 2.0] if kind == "numeric" else ["p", "q"] for name, kind in long.items()})
    for _ in range(2):
        event_log = open_event_log(settings, spec)
        event_log.append(frame, "f")
        window = event_log.labelled_window(10)
        event_log.close()
        assert window[list(long)].values.tolist() == [[1.0, "p"], [2.0, "q"]]
