"""The event log: idempotent by event_id, late and conflicting labels, watermarks, windows, and many processes at once."""

import multiprocessing as mp
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.stores.eventlog import EventLog, EventLogError
from mlplatform.domain.spec import DatasetSpec, parse_spec
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL

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


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    event_log = EventLog(tmp_path / "log.sqlite", _spec())
    yield event_log
    event_log.close()


def test_append_is_idempotent_by_event_id(log: EventLog) -> None:
    first = log.append(_events(["a", "b", "c"]), "f1")
    again = log.append(_events(["a", "b", "c", "d"]), "f2")
    assert (first.inserted, first.duplicates) == (3, 0)
    assert (again.inserted, again.duplicates, again.labels_applied) == (1, 3, 0)
    counts = log.counts()
    assert (counts.total, counts.labelled, counts.label_watermark) == (4, 4, 4)
    assert log.get(["d"]).iloc[0]["source"] == "f2"


def test_repeats_inside_one_append_count_once(log: EventLog) -> None:
    result = log.append(_events(["a", "a", "b"]), "f")
    assert (result.inserted, result.duplicates) == (2, 1)
    assert log.counts().total == 2


def test_late_labels_get_the_next_label_seq(log: EventLog) -> None:
    log.append(_events(["a", "b", "c"], labels=[None, None, "1"]), "events")
    assert (log.counts().labelled, log.counts().label_watermark) == (1, 1)
    result = log.add_labels(["b", "a"], ["0", "1"])
    assert (result.applied, result.unknown, result.conflicts) == (["b", "a"], [], [])
    seqs = log.get(["a", "b", "c"]).set_index(EVENT_ID)["label_seq"].to_dict()
    assert seqs == {"c": 1, "b": 2, "a": 3}
    assert log.labelled_since(1) == 2 and log.labelled_since(3) == 0


def test_labels_sent_again_conflicting_and_unknown(log: EventLog) -> None:
    log.append(_events(["a", "b"], labels=["1", None]), "events")
    result = log.add_labels(["a", "a", "b", "b", "zzz"], ["1", "0", "0", "1", "1"])
    assert result.unchanged == ["a"] and result.conflicts == ["a", "b"] and result.applied == ["b"] and result.unknown == ["zzz"]
    assert log.get(["a", "b"]).set_index(EVENT_ID)[LABEL].to_dict() == {"a": "1", "b": "0"}
    assert log.counts().labelled == 2


def test_append_with_labels_for_known_events(log: EventLog) -> None:
    log.append(_events(["a", "b", "c"], labels=[None, "0", "1"]), "events")
    result = log.append(_events(["a", "b", "c"], labels=["1", "0", "0"]), "relabel")
    assert (result.inserted, result.labels_applied) == (0, 1)
    assert result.conflicts[EVENT_ID].tolist() == ["c"] and result.conflicts["existing_label"].tolist() == ["1"]
    assert log.counts().label_watermark == 3


def test_labelled_window_is_time_ordered_and_capped(log: EventLog) -> None:
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


def test_empty_append_and_reopen_keep_counts(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    first = EventLog(path, _spec())
    assert first.append(_events([]), "empty").inserted == 0
    first.append(_events(["a", "b"]), "f")
    first.close()
    reopened = EventLog(path, _spec())
    assert reopened.counts().total == 2 and reopened.labelled_window(10)[EVENT_ID].tolist() == ["a", "b"]
    reopened.close()


def test_regression_labels_are_floats(tmp_path: Path) -> None:
    spec = parse_spec({"name": "reg", "task": "regression", "label": "y", "features": {"x": "numeric", "c": "categorical"}})
    log = EventLog(tmp_path / "reg.sqlite", spec)
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


def _writer(path: str, worker: int, errors: "mp.Queue[str]") -> None:
    """One process appending batches, some of them overlapping with another writer's ids."""
    try:
        log = EventLog(Path(path), _spec())
        for b in range(BATCHES):
            owner = (worker + b) % WRITERS  # every batch id range is written by two processes
            ids = [f"w{owner}-b{b}-{i}" for i in range(BATCH)]
            log.append(_events(ids, times=[b * BATCH + i for i in range(BATCH)]), f"writer-{worker}")
        log.close()
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"writer {worker}: {exc!r}")


def _reader(path: str, errors: "mp.Queue[str]") -> None:
    """A process reading windows and counts while the writers write."""
    try:
        log = EventLog(Path(path), _spec())
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


def test_concurrent_writers_and_readers_in_separate_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    EventLog(path, _spec()).close()
    ctx = mp.get_context("fork")  # separate processes and connections; fork skips re-importing pandas in each
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), w, errors)) for w in range(WRITERS)]
    procs += [ctx.Process(target=_reader, args=(str(path), errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == [] and all(p.exitcode == 0 for p in procs)
    expected = WRITERS * BATCHES * BATCH
    with sqlite3.connect(path) as db:
        rows, distinct, seqs, max_seq = db.execute("SELECT count(*), count(DISTINCT event_id), count(DISTINCT label_seq), max(label_seq) FROM events").fetchone()
    assert rows == distinct == seqs == max_seq == expected
    log = EventLog(path, _spec())
    assert (log.counts().total, log.counts().labelled, log.counts().label_watermark) == (expected, expected, expected)
    log.close()
