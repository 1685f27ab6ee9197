"""A new user's dataset, taken through the README alone: spec from YAML text, files generated here, replayed into
the landing folder and ingested into a real event log. Each trap of issue 18 has its test."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.domain.spec import DatasetSpec, load_spec
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL
from mlplatform.pipeline.landing import IngestReport, ingest_pending
from mlplatform.pipeline.replay import LandingSink, read_source, run_stream, select_stream
from mlplatform.stores.eventlog import EventLog


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
