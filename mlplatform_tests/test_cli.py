"""`mlplatform materialize` and `status` after two versions, and the CLI's answer to a wrong spec, model or setting:
a message, exit code 2."""

import getpass
import hashlib
import json
import time
import os
import re
import shutil
import uuid
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlplatform.cli import main
from mlplatform.domain.spec import DatasetSpec
from mlplatform.pipeline.replay import write_batches
from mlplatform.domain.keys import REASON_TAG, RETRAIN_TAG
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.names import RAW_EVENTS, ModelNames
from mlplatform.settings import NOT_SETTINGS, REPO_ROOT, Settings


def test_a_failed_materialize_still_says_what_landing_took_and_refused(state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The new-user probe: a spec typo had the only file rejected, and the command printed no landing line, only the
    features step's "at least 200 are needed" with no setting named; a label column spelt `Status` was dropped in silence."""
    [written] = write_batches(adult_rows.iloc[:50], adult_spec, state.landing_dir, 50)
    pd.read_csv(written).rename(columns={"income": "Income"}).to_csv(written, index=False)
    pd.read_csv(written).drop(columns=["age"]).to_csv(state.landing_dir / "no-age.csv", index=False)
    assert main(["materialize", "--model", "adult"]) == 2
    printed = capsys.readouterr()
    assert ("raw_events: 2 files, 50 events ingested, 0 duplicates, 0 late labels applied; 1 file moved to landing/rejected, "
            "columns the spec does not name ignored: Income (the run's raw_events materialization in the UI says why)\n") in printed.out, printed.out
    assert printed.err.endswith("\nmaterialize: adult has no labelled events to train on: its 50 events landed without a label (the spec's label "
                                "column: 'income'); a label file can bring them\n"), "after landing's warning of the file it rejected"


def test_a_landing_that_found_no_file_says_where_it_looked_and_which_run_took_the_last_ones(
        state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    """The probe: `materialize` said "0 files, 0 events ingested" when the landing sensor's run had taken the files a
    moment before, read as the files being lost."""
    assert main(["materialize", "--model", "adult", "--select", "raw_events"]) == 0
    assert f"raw_events: no file waited in the landing folder {state.landing_dir}; no earlier run took one\n" in capsys.readouterr().out
    write_batches(adult_rows.iloc[:50], adult_spec, state.landing_dir, 50)
    assert main(["materialize", "--model", "adult", "--select", "raw_events"]) == 0
    assert "raw_events: 1 file, 50 events ingested" in capsys.readouterr().out
    [took] = [r.run_id for r in instance.get_runs(limit=1)]
    assert main(["materialize", "--model", "adult", "--select", "raw_events"]) == 0
    said = capsys.readouterr().out
    assert (f"raw_events: no file waited in the landing folder {state.landing_dir}; the newest files were taken by run {took} at ") in said, said
    assert ", started by hand or the UI: 1 file, 50 events ingested\n" in said, said
    assert main(["materialize", "--model", "adult"]) == 1, "50 events: too few to train on"
    said = capsys.readouterr().out
    assert f"no file waited in the landing folder {state.landing_dir}; the newest files were taken by run {took} at " in said, \
        "a failed run says which run took the files too (the review: it said none did, without looking)"


def test_a_model_whose_every_row_was_quarantined_is_one_line_pointing_at_the_quarantine(state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The new-user probe: a time column drafted with the wrong time_format had landing quarantine every row, and
    `materialize` printed Dagster's two stack traces, then "only 0 labelled events", with no word of the quarantine."""
    [written] = write_batches(adult_rows.iloc[:40], adult_spec, state.landing_dir, 40)
    pd.read_csv(written).assign(event_time="31/12/2024 10:00").to_csv(written, index=False)  # day first: not the ISO times the spec reads
    said = (f"adult has no labelled events to train on: landing quarantined all 40 rows it read (the most, 40 rows of {written.name}: event_time: "
            "missing, not a timestamp or out of range); `mlplatform quarantine --model adult` lists them\n")
    assert main(["materialize", "--model", "adult"]) == 2
    printed = capsys.readouterr()
    assert "40 rows quarantined (mlplatform quarantine)" in printed.out and printed.err == f"materialize: {said}"
    assert main(["materialize", "--model", "adult", "--select", "features,trained_model"]) == 2, "the rows landed before this run"
    assert capsys.readouterr().err == f"materialize: {said}"


def test_a_step_that_crashes_keeps_its_stack_and_the_steps_it_left_out(state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The console leaves out Dagster's "Dependencies for step ... not executed" lines after a finding (the command says
    it in one line); after a fault it had left them out too (the review), so what the crash stopped went unsaid."""
    import mlplatform.orchestration.assets as assets

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    write_batches(adult_rows.iloc[:400], adult_spec, state.landing_dir, 400)
    monkeypatch.setattr(assets, "train_challenger", crash)
    assert main(["materialize", "--model", "adult"]) != 0
    err = capsys.readouterr().err
    assert "RuntimeError: disk on fire" in err and "Dependencies for step" in err and "evaluation_report" in err.split("Dependencies for step", 1)[1], err[-3000:]


def test_a_retried_error_is_no_fault_and_a_failed_step_is() -> None:
    """The review: the filter counted a retry's error (the assets retry transient ones) as a crash, and kept the "not
    executed" lines of a later finding. Only a step's or a run's failure on an error that is no finding is a fault."""
    import logging
    from types import SimpleNamespace

    from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR

    from mlplatform.orchestration.console import NOT_RUN, WithoutFindings

    def record(event_type: str | None, cls_name: str | None = None, message: str = "") -> logging.LogRecord:
        line = logging.LogRecord("console", logging.INFO, __file__, 0, message, None, None)
        error = SimpleNamespace(cls_name=cls_name, cause=None) if cls_name else None
        event = None if event_type is None else SimpleNamespace(event_type_value=event_type, event_specific_data=SimpleNamespace(error=error))
        setattr(line, LOG_RECORD_METADATA_ATTR, {"dagster_event": event, "orig_message": message})
        return line

    not_run = record(None, message=f"{NOT_RUN}adult__evaluation_report were not executed")
    console = WithoutFindings()
    assert console.filter(record(dg.DagsterEventType.STEP_UP_FOR_RETRY.value, "OperationalError"))  # shown, and not a fault
    assert not console.filter(record(dg.DagsterEventType.STEP_FAILURE.value, "Failure")) and not console.filter(not_run), "a finding's"
    assert console.filter(record(dg.DagsterEventType.STEP_FAILURE.value, "RuntimeError")) and console.filter(not_run), "a fault's"


def test_status_json_after_two_versions(
    state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, capsys: pytest.CaptureFixture[str],
    tmp_path: Path
) -> None:
    bad = adult_rows.iloc[[0]].assign(event_id="broken", age="old")
    write_batches(pd.concat([adult_rows.iloc[:1500], bad]), adult_spec, state.landing_dir, 2000)
    assert main(["materialize", "--model", "adult"]) == 0
    printed = capsys.readouterr().out
    assert "materialized raw_events, features, trained_model, evaluation_report of adult in run" in printed
    assert "evaluation_report: challenger v1 promoted: no champion yet; challenger roc_auc " in printed, "what the run decided, without the UI"
    assert ("raw_events: 1 file, 1500 events ingested, 0 duplicates, 0 late labels applied; 1 row quarantined (mlplatform quarantine) "
            "(the run's raw_events materialization in the UI says why)") in printed, "what landing refused, without the UI (the own-dataset probe)"
    raw_events = ModelNames("adult").asset(RAW_EVENTS)
    reasons = str((latest_metadata(instance, raw_events) or {})["quarantine_reasons"])
    assert "| file | content | reason | rows | first_line |" in reasons and "| age: 'old' is not a finite number | 1 | 1502 |" in reasons, reasons
    write_batches(adult_rows.iloc[1500:2500], adult_spec, state.landing_dir, 1000, prefix="more")
    assert main(["--model", "adult", "materialize", "--select", "raw_events,features,trained_model,evaluation_report"]) == 0
    printed = capsys.readouterr().out
    assert "evaluation_report: challenger v2 " in printed and "raw_events: 1 file, 1000 events ingested, 0 duplicates, 0 late labels applied\n" in printed
    assert str((latest_metadata(instance, raw_events) or {})["quarantine_reasons"]) == "_none_", "a run shows its own files' reasons"
    assert len(instance.get_runs()) == 2, "the command's runs are in the state folder's instance, as UI runs are"
    assert [r.tags.get(RETRAIN_TAG) for r in instance.get_runs()] == ["adult", "adult"], "a retraining is tagged so: the queue and sensors wait for it"

    assert main(["status", "--json", "--model", "adult"]) == 0
    [status] = json.loads(capsys.readouterr().out)
    versions = {v["version"]: v for v in status["versions"]}
    assert sorted(versions) == [1, 2]
    assert status["champion"] in (1, 2) and "champion" in versions[status["champion"]]["aliases"]
    assert versions[1]["decision"] == "promoted" and versions[2]["decision"] in ("promoted", "rejected")
    assert versions[2]["reason"] and status["timeline"][0]["version"] == 1 and not status["pinned"]
    assert all(isinstance(v["holdout_score"], float) and 0 < v["holdout_score"] <= 1 for v in versions.values()), versions
    assert [v["decision_threshold"] for v in versions.values()] == [0.5, 0.5], "binary: the threshold each version carries"
    assert status["events"] == {"total": 2500, "labelled": 2500, "quarantined": 1, "label_watermark": 2500}
    assert status["model"] == "adult" and status["registered_model"] == "mlplatform-adult"

    assert main(["status", "--model", "adult"]) == 0
    human = capsys.readouterr().out
    assert f"champion: v{status['champion']}" in human and "2500 total, 2500 labelled, 1 quarantined" in human
    assert status["spec"]["label"] == "income" and status["spec"]["history"] == [] and "age" in status["spec"]["numeric"]
    assert "binary on 'income' from 5 numeric and 8 categorical features" in human and ", threshold" not in human, "0.5 goes unsaid"
    from mlplatform.cli.status import render_status

    tuned = render_status({**status, "versions": [{**versions[1], "aliases": [], "decision_threshold": 0.0213}]})
    assert "  v1: promoted (trigger by_hand, threshold 0.0213) " in tuned, tuned
    first = status["timeline"][0]  # "since when" was only in `champion show`
    assert f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(first['at']))} UTC  v1 by {first['by']}: {first['reason']}" in human.splitlines()

    write_batches(adult_rows.iloc[5000:6000], adult_spec, state.landing_dir, 1000, prefix="drifted")
    assert main(["--model", "adult", "materialize", "--select", "raw_events,drift_report"]) == 0
    printed = capsys.readouterr().out.splitlines()
    said = [line for line in printed if line.startswith("drift")]
    assert len(said) == 1 and said[0].startswith(f"drift against v{status['champion']}: share ") and "; report " in said[0], printed
    adult_rows.iloc[6000:6010].drop(columns=["age"]).to_csv(state.landing_dir / "noage.csv", index=False)  # rejected whole
    assert main(["--model", "adult", "materialize", "--select", "raw_events"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("drift")], "only what the run made"
    # A rejected file was in no count, and no command named it (the new-user probe): status does.
    assert main(["status", "--model", "adult"]) == 0
    [rejected] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("rejected files")]
    assert rejected.startswith(f"rejected files: 1 in {state.landing_dir}/rejected (newest, ") and \
        rejected.endswith("noage.csv: missing required feature columns: ['age']); fixed, move them back into the landing folder"), rejected

    # What was quarantined, without SQL on the log; and a file a corrected one replaced stops counting once released.
    assert main(["quarantine", "--model", "adult", "--json"]) == 0
    [found] = json.loads(capsys.readouterr().out)
    assert found["quarantined"] == 1 and [(r["reason"], r["rows"], r["first_line"]) for r in found["reasons"]] == [("age: 'old' is not a finite number", 1, 1502)]
    [row] = found["latest"]
    assert row["line"] == 1502 and "broken" in row["record"] and row["quarantined_at"].endswith("+00:00")
    assert main(["quarantine", "--model", "adult", "--file", row["file"]]) == 0
    shown = capsys.readouterr().out
    assert f"adult: 1 quarantined rows of file {row['file']!r}" in shown and f"{row['file']}:1502 (" in shown and "broken" in shown
    assert main(["quarantine", "--model", "adult", "--file", "other.csv"]) == 0
    assert f"adult: 0 quarantined rows of file 'other.csv'; files with some: {row['file']!r}" in capsys.readouterr().out
    assert main(["quarantine", "--model", "adult", "--release", "no-such.csv"]) == 2
    assert f"adult has no quarantined rows of file 'no-such.csv'; files with some: {row['file']!r}" in capsys.readouterr().err
    # A corrected file of the same name, with a bad row of its own: releasing by name alone would forget its refusal too.
    [written] = write_batches(adult_rows.iloc[2500:2502].assign(age=["41", "old again"]), adult_spec, tmp_path, 2)
    fresh = hashlib.sha256(written.read_bytes()).hexdigest()
    os.rename(written, state.landing_dir / row["file"])
    assert main(["--model", "adult", "materialize", "--select", "raw_events"]) == 0
    capsys.readouterr()
    assert main(["quarantine", "--model", "adult", "--json", "--file", row["file"]]) == 0
    contents = {r["content"]: r["rows"] for r in json.loads(capsys.readouterr().out)[0]["reasons"]}
    assert len(contents) == 2 and fresh[:12] in contents
    [old] = set(contents) - {fresh[:12]}
    assert main(["quarantine", "--model", "adult", "--release", row["file"]]) == 2
    assert f"file {row['file']!r} was landed as 2 contents with quarantined rows" in capsys.readouterr().err
    assert main(["quarantine", "--model", "adult", "--content", "ab"]) == 2, "--content says which content of a --release"
    assert main(["quarantine", "--model", "adult", "--release", row["file"], "--content", "xyz"]) == 2
    assert "--content 'xyz' is not the start of a SHA-256" in capsys.readouterr().err
    assert main(["quarantine", "--model", "adult", "--reason", "why"]) == 2, "--reason goes with a --release"
    assert "--reason goes with --release FILE" in capsys.readouterr().err
    assert main(["quarantine", "--model", "adult", "--release", row["file"], "--content", old, "--reason", "  "]) == 2, "an empty reason is none"
    assert "--reason is empty" in capsys.readouterr().err
    assert main(["quarantine", "--model", "adult", "--release", row["file"], "--content", old, "--reason", "ticket 42: the export was fixed"]) == 0
    assert f"adult: released 1 quarantined row of file {row['file']!r} (content {old}: 1 row); 1 quarantined rows left" in capsys.readouterr().out
    assert main(["quarantine", "--model", "adult", "--json"]) == 0
    [released] = json.loads(capsys.readouterr().out)[0]["released"]
    assert (released["file"], released["content"], released["rows"], released["reason"]) == (row["file"], old, 1, "ticket 42: the export was fixed")
    assert released["by"] == f"{getpass.getuser()} (mlplatform quarantine --release)" and released["released_at"].endswith("+00:00")
    typo = fresh[:12] + ("0" if fresh[12] != "0" else "1") + fresh[13:]
    assert main(["quarantine", "--model", "adult", "--release", row["file"], "--content", typo]) == 2, "its start is a content's, the rest is not"
    assert f"has no quarantined rows of a content starting {typo!r}" in capsys.readouterr().err
    assert main(["quarantine", "--model", "adult", "--release", row["file"], "--content", fresh.upper(), "--json"]) == 0, "the whole SHA-256, as sha256sum prints it"
    assert json.loads(capsys.readouterr().out) == {"model": "adult", "file": row["file"], "released": 1, "contents": {fresh[:12]: 1}, "grew": False, "left": 0}
    assert main(["quarantine", "--model", "adult"]) == 0, "the rows are gone; who released them, when and why is not"
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "adult: 0 quarantined rows" and shown[1] == "  released by hand, newest first:"
    assert shown[2].endswith(f"1 row of {row['file']} ({fresh[:12]}) by {getpass.getuser()} (mlplatform quarantine --release)")
    assert shown[3].endswith(f"1 row of {row['file']} ({old}) by {getpass.getuser()} (mlplatform quarantine --release): ticket 42: the export was fixed")
    assert main(["status", "--json", "--model", "adult"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["events"]["quarantined"] == 0


def test_the_refusals_of_a_file_that_grew_are_released_by_its_name(state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An export appended to and landed again is one file in two contents, each with a refused row: `--release NAME`
    asked which content (the operator probe), as for a corrected file that replaced it. A file that grew is released
    whole; a file of that name with other bytes still needs --content."""
    [first] = write_batches(adult_rows.iloc[:20].assign(age=["x"] + ["41"] * 19), adult_spec, tmp_path, 20, prefix="a")
    [more] = write_batches(adult_rows.iloc[20:40].assign(age=["41"] * 19 + ["y"]), adult_spec, tmp_path, 20, prefix="b")
    landed = state.landing_dir / "export.csv"
    state.landing_dir.mkdir(parents=True, exist_ok=True)
    landed.write_bytes(first.read_bytes())
    assert main(["--model", "adult", "materialize", "--select", "raw_events"]) == 0
    landed.write_bytes(first.read_bytes() + more.read_bytes().split(b"\n", 1)[1])  # appended: its rows, not its header
    assert main(["--model", "adult", "materialize", "--select", "raw_events"]) == 0
    capsys.readouterr()
    assert main(["quarantine", "--model", "adult", "--json", "--file", "export.csv"]) == 0
    assert len({r["content"] for r in json.loads(capsys.readouterr().out)[0]["reasons"]}) == 2, "two contents, one refused row each"
    assert main(["quarantine", "--model", "adult", "--release", "export.csv"]) == 0
    said = capsys.readouterr().out
    assert "adult: released 2 quarantined rows of file 'export.csv' (one file that grew: content " in said and "0 quarantined rows left" in said, said

    landed.write_bytes(first.read_bytes())  # read again: its refusal again, under the first content
    assert main(["--model", "adult", "materialize", "--select", "raw_events"]) == 0
    [other] = write_batches(adult_rows.iloc[40:45].assign(age=["z"] * 5), adult_spec, tmp_path, 5, prefix="c")
    os.replace(other, landed)  # other bytes under the name: a file that replaced it, not one that grew
    assert main(["--model", "adult", "materialize", "--select", "raw_events"]) == 0
    capsys.readouterr()
    assert main(["quarantine", "--model", "adult", "--release", "export.csv"]) == 2
    assert "file 'export.csv' was landed as 2 contents with quarantined rows" in capsys.readouterr().err


def test_status_on_an_empty_state_folder_lists_every_model(state: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"]) == 0
    statuses = json.loads(capsys.readouterr().out)
    assert [s["model"] for s in statuses] == ["adult", "bike-sharing"]
    assert all(s["champion"] is None and s["versions"] == [] and s["events"]["total"] == 0 for s in statuses)
    assert main(["status"]) == 0
    assert "spec " in capsys.readouterr().out
    assert main(["status", "--model", ""]) == 2, "an empty --model named every model"
    assert "no model named ''; this code location has: adult, bike-sharing" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["status"], ["quarantine"], ["quarantine", "--release", "a.csv"], ["champion", "show"]])
def test_a_state_folder_that_does_not_exist_is_refused_not_made(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --state-dir made a fresh state there, and status reported a model with no champion and no events."""
    missing = tmp_path / "typo"
    assert main([*argv, "--model", "adult", "--state-dir", str(missing)]) == 2
    error = capsys.readouterr().err
    assert f"state folder {missing} does not exist: nothing has run on it" in error
    assert error.rstrip().endswith(f"Landing folders it would have: adult: {missing / 'landing' / 'adult'}"), "the README sends a new user here for it"
    assert not missing.exists()


def test_an_event_log_that_cannot_be_reached_is_one_line_naming_the_setting(state: Settings, monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`status` against a PostgreSQL that is down printed a 40-line traceback."""
    from mlplatform.ports import free_port

    monkeypatch.setenv("MLPLATFORM_EVENT_LOG_URL", f"postgresql://postgres:secret@127.0.0.1:{free_port()}/eventlog")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlplatform status: event log: cannot connect (MLPLATFORM_EVENT_LOG_URL, postgresql://postgres:***@127.0.0.1:")
    assert "Traceback" not in err and "secret" not in err


def test_a_tracking_server_that_does_not_answer_is_one_line_naming_the_setting(state: Settings, monkeypatch: pytest.MonkeyPatch,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`status` with a stopped production stack's settings file still loaded printed 111 lines of MLflow tracebacks."""
    from mlplatform.ports import free_port

    monkeypatch.setenv("MLPLATFORM_MLFLOW_TRACKING_URI", f"http://ops:secret@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLPLATFORM_EXTERNAL_RETRY_BUDGET_SECONDS", "10")
    assert main(["status", "--model", "adult"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mlplatform status: the MLflow tracking server at http://ops:***@127.0.0.1:") and "(MLPLATFORM_MLFLOW_TRACKING_URI) cannot be reached (" in err
    assert "Traceback" not in err and "secret" not in err and len(err.splitlines()) == 1


def test_the_dagster_instance_database_failing_under_a_command_is_one_line_naming_the_setting(state: Settings) -> None:
    """The production probe: PostgreSQL stopped while `materialize` ran, and the command ended in a 200-line traceback
    ("too many retries for DB connection"). The chain the Dagster storage raises, from a real refused connection."""
    import sqlalchemy
    from dagster_postgres.utils import DagsterPostgresException
    from pydantic import SecretStr

    from mlplatform.cli import instance_unreachable
    from mlplatform.ports import free_port

    url = f"postgresql://ops:secret@127.0.0.1:{free_port()}/dagster"
    try:
        try:
            sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://")).connect()  # as dagster-postgres connects
        except sqlalchemy.exc.OperationalError as error:
            refused = error
            raise DagsterPostgresException("too many retries for DB connection") from error
    except DagsterPostgresException as failed:
        on_postgres = state.model_copy(update={"dagster_postgres_url": SecretStr(url)})
        wrapped = RuntimeError("the run's end could not be recorded")
        wrapped.__cause__ = failed
        said = instance_unreachable(wrapped, on_postgres)
        assert said is not None and said.startswith("the Dagster instance's PostgreSQL at postgresql://ops:***@127.0.0.1:")
        assert "(MLPLATFORM_DAGSTER_POSTGRES_URL) failed (DagsterPostgresException: too many retries for DB connection)" in said and "secret" not in said
        assert instance_unreachable(failed, state) is None, "the embedded instance has no server to be down"
        assert instance_unreachable(refused, on_postgres) is not None, "the storage's own error, before dagster-postgres's retries"
    try:
        sqlalchemy.create_engine(f"sqlite:///{state.state_dir}/missing/x.db").connect()
    except sqlalchemy.exc.OperationalError as sqlite_error:
        assert instance_unreachable(sqlite_error, on_postgres) is None, "another database's error (MLflow's SQLite store)"
    else:
        pytest.fail("a SQLite file in a folder that does not exist opened")
    assert instance_unreachable(ValueError("another error"), state.model_copy(update={"dagster_postgres_url": SecretStr(url)})) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--model", "churn"], "no model named 'churn'; this code location has: adult, bike-sharing"),
        (["materialize"], "this code location has 2 models (adult, bike-sharing): say which with --model"),
        (["materialize", "--model", "adult", "--select", "raw_events,weights"], "unknown asset(s) weights"),
        (["champion", "set", "--model", "adult", "--version", "1"], "say why (--reason)"),
    ],
)
def test_a_wrong_model_asset_or_missing_reason_is_a_message(state: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [(["dev", "--model", "adult"], "--model does not apply to dev: it runs the whole code location"),
                                               (["status", "--spec", "x.yaml"], "--spec applies to replay")])
def test_an_option_that_does_not_apply_is_refused_not_ignored(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`dev --model adult` started every model's sensors, silently."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_help_imports_nothing_heavy_shows_defaults_and_options_go_before_or_after_the_command() -> None:
    probe = ("import sys, contextlib, io\nfrom mlplatform.cli import main\nwith contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "    main(['replay', '--help'])\nprint(sorted(m for m in ('dagster', 'mlflow', 'pandas', 'lightgbm', 'pyarrow') if m in sys.modules))\n"
             "print(out.getvalue())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    heavy, _, text = out.partition("\n")
    assert heavy == "[]", f"--help imported {heavy}: it must print in well under 2 s on a busy machine"
    assert "(default: 1000)" in text and "--state-dir" in text and "--model" in text
    from mlplatform.cli import build_parser

    before = build_parser().parse_args(["--state-dir", "/a", "--model", "adult", "status"])
    after = build_parser().parse_args(["status", "--state-dir", "/b", "--model", "bike-sharing"])
    assert (before.state_dir, before.model, after.state_dir, after.model) == ("/a", "adult", "/b", "bike-sharing")


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        (None, "does not exist"),
        ("name: x\ntask: binary\nlabel: y\nclasses: [a, b]\npositive_class: c\nfeatures: {f: numeric}\n", "positive_class: 'c' is not one of classes"),
        ("- just\n- a list\n", "expected a mapping at the top level, got list"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_wrong_spec_is_a_message_not_a_traceback(
    state: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], spec_text: str | None, message: str
) -> None:
    path = tmp_path / "spec.yaml"
    if spec_text is not None:
        path.write_text(spec_text, encoding="utf-8")
    assert main(["replay", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlplatform replay: ") or err.startswith("replay failed: ") and message in err and "Traceback" not in err


def test_a_wrong_setting_names_the_variable(state: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Each wrong setting by its environment variable, the value given and the rule, in one line."""
    monkeypatch.setenv("MLPLATFORM_TUNING_TRIALS", "lots")
    monkeypatch.setenv("MLPLATFORM_CELERY_WORKER_CONCURRENCY", "0")
    monkeypatch.setenv("MLPLATFORM_TRAINING_WINDOW_CANDIDATES", "[5, 5]")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlplatform status: MLPLATFORM_TUNING_TRIALS='lots': Input should be a valid integer"), err
    assert "MLPLATFORM_CELERY_WORKER_CONCURRENCY='0': Input should be greater than or equal to 1" in err, err
    assert "errors.pydantic.dev" not in err and len(err.splitlines()) == 1, err
    monkeypatch.delenv("MLPLATFORM_TUNING_TRIALS")
    monkeypatch.delenv("MLPLATFORM_CELERY_WORKER_CONCURRENCY")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "MLPLATFORM_TRAINING_WINDOW_CANDIDATES" in err and "repeated window sizes [5]" in err, err


def test_an_mlplatform_variable_that_names_no_setting_is_refused_naming_it(state: Settings, monkeypatch: pytest.MonkeyPatch,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The new-user probe: a misspelt variable, and MLPLATFORM_DATASET_SPEC (which a shipped spec told users to set),
    were ignored without a word. Refused in one line with the settings spelt closest; the platform's own variables and
    any spelling pydantic-settings reads as a setting are taken."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVRY_N", "10")
    monkeypatch.setenv("MLPLATFORM_DATASET_SPEC", str(REPO_ROOT / "data" / "bike_sharing_history.yaml"))
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlplatform status: MLPLATFORM_DATASET_SPEC is no setting: a model's dataset spec is named by `spec:` in its defs.yaml"), err
    assert "MLPLATFORM_RETRAIN_EVRY_N is no setting (did you mean MLPLATFORM_RETRAIN_EVERY_N?)" in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    monkeypatch.delenv("MLPLATFORM_RETRAIN_EVRY_N")
    monkeypatch.delenv("MLPLATFORM_DATASET_SPEC")
    for name in NOT_SETTINGS:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("mlplatform_tuning_trials", "3")
    assert Settings().tuning_trials == 3


@pytest.mark.parametrize("command", ["serve", "status", "materialize", "replay", "champion", "dev", "demo"])
def test_each_command_helps_with_its_own_options_and_real_defaults(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An option left to a setting names it, without argparse adding "(default: None)"; --spec is in replay's help only,
    and --model in every help but dev's, which refuses it (the production probe)."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in shown and ("--spec" in shown) == (command == "replay"), shown
    assert ("--model" in shown) == (command != "dev"), shown


def test_dg_records_no_telemetry(tmp_path: Path) -> None:
    """dg decides on telemetry from its user config file alone: the venv points it at .venv/dg.toml (make install), so a
    dg command run from a home without any config writes no telemetry event (it would log to ~/.dagster/logs)."""
    env = {key: value for key, value in os.environ.items() if key not in ("DG_CLI_CONFIG", "DAGSTER_HOME")} | {"HOME": str(tmp_path)}
    subprocess.run([str(Path(sys.executable).parent / "dg"), "list", "components"], cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=300)
    assert not (tmp_path / ".dagster").exists(), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


def test_status_lists_a_retraining_by_hand_that_ended_before_deciding(state: Settings, instance: dg.DagsterInstance,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The operator probe: a `materialize` canceled (or killed) before its evaluation decided was missing from the runs
    `status --dagster` lists, which took only runs carrying the policy's tag, set once a decision is made."""
    from mlplatform.domain.policy import BY_HAND

    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.CANCELED,
                        tags={RETRAIN_TAG: "adult", REASON_TAG: BY_HAND})
    instance.add_run(run)
    # The new-user probe: a `materialize --select features` was listed as a retraining run; it trains nothing.
    features = dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.SUCCESS, tags={RETRAIN_TAG: "adult", REASON_TAG: BY_HAND},
                             asset_selection=frozenset({dg.AssetKey(["adult", "features"])}))
    instance.add_run(features)
    assert main(["status", "--model", "adult", "--dagster"]) == 0
    out = capsys.readouterr().out
    assert f"retraining run {run.run_id[:8]}: CANCELED reason=by_hand" in out and f"run of features {features.run_id[:8]}: SUCCESS reason=by_hand" in out, out


def test_status_on_a_store_another_process_keeps_locked_says_so_in_one_line(state: Settings, monkeypatch: pytest.MonkeyPatch,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The operator probe: with the MLflow store held in a transaction, `status` printed a 32-line traceback ending
    "database is locked"."""
    import sqlite3

    from mlplatform.stores import registry_tables

    monkeypatch.setattr(registry_tables, "LOCK_WAIT_SECONDS", 0.2)
    database = Path(state.tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("CREATE TABLE registered_model_aliases (alias TEXT)")
        holder.execute("BEGIN EXCLUSIVE")
        assert main(["status", "--model", "adult"]) == 1
    finally:
        holder.close()
    said = capsys.readouterr().err
    assert said.startswith(f"mlplatform status: a store in the state folder {state.state_dir} stayed locked by another process") and said.count("\n") == 1, said


def test_status_names_no_version_for_live_quality_measured_before_any_champion() -> None:
    """The production probe: right after the first promotion status said "live quality of v0 (not the champion v1 …)"."""
    from mlplatform.cli.status import monitor_lines

    before = {"model_version": 0, "events": 0, "verdict": "no champion yet"}
    assert monitor_lines({"champion": 1, "live_quality": before})["live_quality"] == "live quality: none measured yet (no champion yet when it last ran)"
    measured = monitor_lines({"champion": 1, "live_quality": {"model_version": 1, "events": 500, "verdict": "ok"}})["live_quality"]
    assert measured == "live quality of v1 on 500 labelled served predictions: ok"
    # The third new-user probe: "within floors" gave no value; a breach's own values are not said twice.
    values = {"accuracy": 0.91, "precision": 0.4, "recall": 0.8}
    within = monitor_lines({"champion": 1, "live_quality": {"model_version": 1, "events": 500, "verdict": "within floors", "metrics": values}})
    assert within["live_quality"].endswith(": within floors (accuracy 0.91, precision 0.4, recall 0.8)")
    breached = monitor_lines({"champion": 1, "live_quality": {"model_version": 1, "events": 500, "verdict": "live precision 0.4000 < floor 0.5000",
                                                              "metrics": values}})
    assert breached["live_quality"].endswith(": live precision 0.4000 < floor 0.5000 (accuracy 0.91, recall 0.8)")


def test_the_demo_resets_only_state_it_created_or_that_holds_no_file(tmp_path: Path) -> None:
    from mlplatform.cli.demo import DemoError, reset_state

    empty = tmp_path / "empty"
    (empty / "dagster").mkdir(parents=True)  # what loading the code location used to leave behind
    reset_state(Settings(state_dir=empty))
    assert (empty / ".mlplatform-demo").is_file()
    foreign = tmp_path / "foreign"
    (foreign / "events").mkdir(parents=True)
    (foreign / "events" / "adult.sqlite").write_text("someone's events", encoding="utf-8")
    with pytest.raises(DemoError, match="holds state the demo did not create"):
        reset_state(Settings(state_dir=foreign))
    assert (foreign / "events" / "adult.sqlite").read_text(encoding="utf-8") == "someone's events"


def test_the_demo_leaves_a_state_folder_in_use_alone(tmp_path: Path) -> None:
    """The operator probe: `demo` on the demo's own folder, with `dev` and `serve` running on it, deleted its event logs
    and versions; serving went on answering with a version that no longer existed."""
    from mlplatform.cli.demo import DemoError, reset_state
    from mlplatform.cli.stack import holding, in_use

    state = tmp_path / "state"
    reset_state(Settings(state_dir=state))
    (state / "events").mkdir()
    (state / "events" / "adult.sqlite").write_text("served events", encoding="utf-8")
    for use, user in ((in_use(state), "a prediction service (`mlplatform serve`)"), (holding(state, "embedded"), f"`mlplatform dev` (pid {os.getpid()}, embedded profile)")):
        with use, pytest.raises(DemoError, match=re.escape(f"is in use by {user}: the demo starts from an empty state folder")):
            reset_state(Settings(state_dir=state))
        assert (state / "events" / "adult.sqlite").exists()
    reset_state(Settings(state_dir=state))
    assert not (state / "events").exists(), "once nothing uses it, the demo's own folder is reset"


def test_a_serve_starting_while_the_demo_deletes_waits_and_then_holds_the_emptied_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check for users and the deletion were two steps: a `serve` that took its hold between them had its files
    deleted under it, and its hold was on a lock file deleted with them, which the next `demo` no longer saw."""
    from mlplatform.cli.demo import DemoError, reset_state
    from mlplatform.cli.stack import in_use

    state = tmp_path / "state"
    reset_state(Settings(state_dir=state))
    (state / "events").mkdir()
    delete, held, release = shutil.rmtree, threading.Event(), threading.Event()
    waited: list[bool] = []

    def serve() -> None:
        with in_use(state):
            held.set()
            release.wait(30)

    def deleting(path: Any, *args: Any, **kwargs: Any) -> None:
        starting = threading.Thread(target=serve, daemon=True)
        starting.start()
        waited.append(not held.wait(0.5))
        delete(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", deleting)
    reset_state(Settings(state_dir=state))
    assert waited == [True], "the serve waited for the deletion to end"
    assert held.wait(10) and not (state / "events").exists()
    try:
        with pytest.raises(DemoError, match=re.escape("is in use by a prediction service")):
            reset_state(Settings(state_dir=state))
    finally:
        release.set()


def test_loading_the_code_location_creates_no_state_and_prints_no_dagster_beta_notices(tmp_path: Path) -> None:
    """Dagster's notices that its component and sensor-owner API is beta or preview are not printed (about fifty lines
    per command); any other warning still is."""
    probe = ("import warnings; from mlplatform.orchestration.definitions import defs; defs(); "
             "warnings.warn('a warning of the platform', UserWarning)")
    loaded = subprocess.run([sys.executable, "-W", "default", "-c", probe], check=True, cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "MLPLATFORM_STATE_DIR": str(tmp_path / "state")})
    assert not (tmp_path / "state").exists()
    assert "is currently in" not in loaded.stderr and "UserWarning: a warning of the platform" in loaded.stderr, loaded.stderr[-2000:]


def test_state_dir_reaches_the_runs_the_command_executes(
    state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--state-dir` moves the runs too, not only the command: raw_events lands the other folder's files into its event log,
    and the variable the fixture set is back afterwards."""
    other = Settings(state_dir=tmp_path / "other")
    write_batches(adult_rows.iloc[:300], adult_spec, other.landing_dir / adult_spec.name, 300)
    assert main(["materialize", "--state-dir", str(other.state_dir), "--model", "adult", "--select", "raw_events"]) == 0
    capsys.readouterr()
    assert main(["status", "--json", "--state-dir", str(other.state_dir), "--model", "adult"]) == 0
    [status] = json.loads(capsys.readouterr().out)
    assert status["events"]["total"] == 300 and status["state_dir"] == str(other.state_dir)
    assert os.environ["MLPLATFORM_STATE_DIR"] == str(state.state_dir) and not any(state.events_dir.glob("*")), "the fixture's folder untouched"


def test_a_reader_that_leaves_the_pipe_gets_no_traceback(tmp_path: Path) -> None:
    """`mlplatform status | head -1` printed a BrokenPipeError traceback once the reader had left."""
    (tmp_path / "state").mkdir()
    process = subprocess.Popen([sys.executable, "-m", "mlplatform.cli", "--state-dir", str(tmp_path / "state"), "status"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader leaves before the first line
    errors = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and "Traceback" not in errors and "BrokenPipeError" not in errors, errors


def test_status_says_when_it_shows_only_the_latest_champion_moves() -> None:
    from mlplatform.cli.status import TIMELINE_SHOWN, render_status

    moves = [{"version": i, "at": float(i), "by": "someone", "reason": f"move {i}", "pinned": False} for i in range(1, 8)]
    status = {"model": "m", "registered_model": "mlplatform-m", "landing_dir": "/l", "champion": 7, "pinned": False, "pin_reason": None,
              "spec": {"path": "m.yaml", "task": "regression", "label": "y", "numeric": ["x"], "categorical": [], "history": ["hist__label_lag1"], "keys": []},
              "events": {"total": 0, "labelled": 0, "quarantined": 0, "label_watermark": 0}, "versions": [], "timeline": moves}
    shown = render_status(status)
    assert f"champion timeline: the latest {TIMELINE_SHOWN} of 7 moves (all: mlplatform champion show)" in shown
    assert "move 3" in shown and "move 2" not in shown
    assert "regression on 'y' from 1 numeric and 0 categorical features; history: hist__label_lag1" in shown
    status |= {"live_quality": {"model_version": 6, "events": 30, "verdict": "within floors"},
               "estimated_performance": {"skipped": False, "skip_reason": None, "champion_version": 7, "metric": "mae", "recent_estimate": 4.361218635214202,
                                         "floor_verdict": "within floors", "trust_verdict": "trusted"}}
    shown = render_status(status)
    assert "live quality of v6 (not the champion v7: not run since it changed) on 30" in shown
    assert "estimated performance of v7: mae 4.361 recently; within floors" in shown
    status["estimated_performance"] |= {"recent_lower": 4.1, "recent_upper": 4.6, "recent_events": 2000, "reference": 3.9}
    assert ("estimated performance of v7: mae 4.361 recently (95 % band 4.1-4.6, 2000 events) vs reference 3.9: 11.8% worse; within floors"
            in render_status(status)), "the estimation probe: 'roc_auc 0.7286 recently' said nothing of a reference of 0.9504"
    status["estimated_performance"] |= {"recent_labelled": 1800, "recent_estimate_on_labelled": 4.4, "recent_realized": 3.95}
    assert "vs reference 3.9: 11.8% worse; realized 3.95 on the 1800 of them labelled, estimated 4.4 there; within floors" in render_status(status), \
        "what supersedes an estimated drop is shown beside it"
    status["estimated_performance"] |= {"recent_estimate": None, "recent_note": "no events the champion did not train on"}
    assert "estimated performance of v7: mae not estimated recently (no events the champion did not train on); within floors" in render_status(status), \
        "it printed 'mae None recently'"


def test_status_shows_the_newest_versions_and_every_older_one_never_decided() -> None:
    """A retraining stopped before its decision leaves its version `pending`; status showed the newest 10 versions only,
    so an older undecided one was seen in MLflow alone."""
    from mlplatform.cli.status import VERSIONS_SHOWN, render_status

    def version(n: int, decision: str) -> dict[str, object]:
        return {"version": n, "aliases": [], "decision": decision, "reason": f"reason {n}", "trigger": "manual"}

    versions = [version(n, "pending" if n == 3 else "rejected") for n in range(VERSIONS_SHOWN + 5, 0, -1)]
    status = {"model": "m", "registered_model": "mlplatform-m", "landing_dir": "/l", "champion": None, "no_champion": "none yet", "pinned": False,
              "spec": {"path": "m.yaml", "task": "regression", "label": "y", "numeric": ["x"], "categorical": [], "history": [], "keys": []},
              "events": {"total": 0, "labelled": 0, "quarantined": 0, "label_watermark": 0}, "versions": versions, "timeline": []}
    lines = render_status(status).splitlines()
    start = lines.index(f"versions: the newest {VERSIONS_SHOWN} of {VERSIONS_SHOWN + 5} (all: mlplatform status --json)")
    assert lines[start + 1].startswith(f"  v{VERSIONS_SHOWN + 5}: rejected") and lines[start + VERSIONS_SHOWN].startswith("  v6: rejected")
    assert lines[start + VERSIONS_SHOWN + 1:] == ["  older, never decided (1):", "  v3: pending (trigger manual) reason 3"]
    assert "versions:" in render_status(status | {"versions": versions[-2:]}).splitlines()


def test_a_release_waits_for_the_landing_run_reading_the_folder(state: Settings) -> None:
    """The concurrency probe: released while a landing run was still reading the file, only the refusals so far went,
    "0 quarantined rows left" was said, and the later ones stayed. A release now waits for the folder's landing run."""
    import threading

    from mlplatform.cli.quarantine import Released, release
    from mlplatform.pipeline.landing import exclusive
    from mlplatform.root import platform as root_platform

    model = root_platform(state).only("adult")
    folder = model.settings.landing_dir
    assert folder is not None
    folder.mkdir(parents=True, exist_ok=True)
    bad = pd.DataFrame({"row_number": [2, 4], "reason": ["age: 'old' is not a finite number"] * 2, "record": ["{}", "{}"]})
    model.event_log.quarantine(bad.head(1), "export.csv", "ab" * 32)
    said: list[Released] = []
    waited = threading.Event()
    with exclusive(folder):  # a landing run reading the folder
        releasing = threading.Thread(target=lambda: said.append(release(model, "export.csv", by="ops", on_wait=waited.set)))
        releasing.start()
        assert waited.wait(30), "the release was told to wait"
        model.event_log.quarantine(bad.tail(1), "export.csv", "ab" * 32)  # the run's later batch refuses another row
        assert releasing.is_alive() and not said
    releasing.join(30)
    assert [r.line() for r in said] == [f"adult: released 2 quarantined rows of file 'export.csv' (content {'ab' * 6}: 2 rows); 0 quarantined rows left"]


def test_a_training_marks_failed_the_mlflow_runs_an_ended_dagster_run_left_running(state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec,
                                                                                  adult_rows: pd.DataFrame) -> None:
    """The production probe: a worker that died mid-training (PostgreSQL stopped under it) left its MLflow run RUNNING
    for ever. The next training marks FAILED those whose Dagster run ended or is gone; a run still going, or another
    tool's run without the tag, is left alone."""
    from dagster._core.test_utils import create_run_for_test

    from mlplatform.domain.keys import DAGSTER_RUN_TAG
    from mlplatform.root import platform as root_platform

    registry = root_platform(state).only("adult").registry
    failed = create_run_for_test(instance, job_name="adult_retrain", status=dg.DagsterRunStatus.FAILURE)
    going = create_run_for_test(instance, job_name="adult_retrain", status=dg.DagsterRunStatus.STARTED)
    runs = {name: registry.client.create_run(registry.experiment_id, tags=tags).info.run_id for name, tags in (
        ("abandoned", {DAGSTER_RUN_TAG: failed.run_id}), ("deleted", {DAGSTER_RUN_TAG: "0" * 36}), ("going", {DAGSTER_RUN_TAG: going.run_id}), ("other", {}))}
    write_batches(adult_rows.iloc[:1500], adult_spec, state.landing_dir, 1500)
    assert main(["materialize", "--model", "adult"]) == 0
    statuses = {name: registry.client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert statuses == {"abandoned": "FAILED", "deleted": "FAILED", "going": "RUNNING", "other": "RUNNING"}, statuses
    instance.report_run_canceled(going)


def test_a_retraining_is_refused_while_another_of_the_model_runs(state: Settings, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]) -> None:
    """The concurrency probe: two `materialize` of the retraining a second apart both ran (in process, past the run
    queue's one-per-model limit) and made two identical versions. Another command holding the model's retraining, or
    an unfinished retraining run of the daemon's, refuses it, exit 2, naming what runs; a run whose process is gone does not."""
    import logging

    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry

    lock = state.dagster_home / ".retraining-adult.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"import fcntl, os, sys, time; fd = os.open({str(lock)!r}, os.O_CREAT | os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, str(os.getpid()).encode(), 0); print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(["materialize", "--model", "adult", "--select", "features,trained_model,evaluation_report"]) == 2
        assert f"materialize: a retraining of adult is running in another command on this machine (pid {holder.pid})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()

    def started_by(pid: int, run_id: str) -> None:
        run = instance.add_run(dg.DagsterRun(job_name="adult_retrain", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags={RETRAIN_TAG: "adult"}))
        event = DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name, message="Started execution of run.", pid=pid)
        instance.store_event(EventLogEntry(error_info=None, level=logging.DEBUG, user_message="", run_id=run_id, timestamp=time.time(),
                                           dagster_event=event, job_name=run.job_name))

    started_by(os.getpid(), "a" * 36)  # the daemon's retraining, running
    assert main(["materialize", "--model", "adult", "--select", "evaluation_report"]) == 2
    assert f"materialize: a retraining of adult is already running (run {'a' * 36}): wait for it to end" in capsys.readouterr().err
    assert main(["materialize", "--model", "adult", "--select", "raw_events"]) == 0, "landing is no retraining"
    instance.report_run_failed(instance.get_run_by_id("a" * 36))  # type: ignore[arg-type]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    started_by(gone.pid, "b" * 36)  # a command killed mid-retraining
    assert main(["materialize", "--model", "adult", "--select", "features,trained_model"]) == 2
    assert "materialize: adult has no labelled events to train on" in capsys.readouterr().err, "not refused: it runs (and fails on no data)"
    assert instance.get_run_by_id("b" * 36).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]


def test_a_dagster_home_without_room_for_the_lock_leaves_the_runs_to_decide(state: Settings, instance: dg.DagsterInstance,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The second review: a Dagster home this user cannot write (a shared production one) made every retraining command
    end in a PermissionError traceback; the instance's runs alone decide then."""
    import mlplatform.orchestration.launch as launch

    def refused(path: object, *args: object) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(launch.os, "open", refused)
    with launch.retraining_slot(instance, "adult") as tags:
        assert tags[RETRAIN_TAG] == "adult"


def test_an_oversized_release_reason_is_kept_whole_and_shown_cut(tmp_path: Path) -> None:
    """A 100,000-character reason (pasted logs) is recorded whole (`--json`), and the terminal listing shows its start and
    its length, as it does a refused record."""
    from mlplatform.cli.quarantine import RECORD_CHARS, render_quarantine
    from mlplatform.domain.spec import load_spec
    from mlplatform.settings import DEFAULT_SPEC
    from mlplatform.stores.eventlog import EventLog

    log = EventLog(tmp_path / "events.sqlite", load_spec(DEFAULT_SPEC))
    try:
        log.quarantine(pd.DataFrame({"row_number": [2], "reason": ["bad"], "record": ["{}"]}), "export.csv", "ab" * 32)
        pasted = "é" * 100_000
        assert log.release_quarantined_file("export.csv", by="ops", reason=pasted) == 1
        [kept] = log.quarantine_releases().to_dict("records")
        assert kept["reason"] == pasted
    finally:
        log.close()
    found = {"model": "adult", "quarantined": 0, "file": None, "reasons": [], "latest": [], "released": [{**kept, "released_at": "2026-12-06T00:00:00+00:00"}]}
    [line] = [line for line in render_quarantine(found).splitlines() if "by ops" in line]
    assert line.endswith(f": {'é' * RECORD_CHARS}… (100000 characters)") and len(line) < RECORD_CHARS + 120


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, "terminate"])
def test_a_signal_stops_materialize_and_cancels_its_run(state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec,
                                                        adult_rows: pd.DataFrame, signum: int | str) -> None:
    """Ctrl-C (SIGINT), SIGTERM and Terminate in the UI (the run launcher's SIGTERM to the command, the run's worker) stop
    the command. Dagster retried the interrupted step under its retry policy: a Ctrl-C was retried away and the run
    succeeded; the launcher, seeing the retry, killed the command with no word (the probe: exit -9, nothing printed)."""
    write_batches(adult_rows.iloc[:1500], adult_spec, state.landing_dir, 1500)
    env = {**os.environ, "MLPLATFORM_TUNING_TRIALS": "100000", "MLPLATFORM_TUNING_SECONDS": "600"}  # a step still running when the signal comes
    process = subprocess.Popen([sys.executable, "-m", "mlplatform.cli", "materialize", "--model", "adult"], env=env, cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background child ignores SIGINT otherwise
    training = ModelNames("adult").asset("trained_model").to_python_identifier()
    deadline = time.monotonic() + 180
    while not any(r.step_key == training and r.user_message.startswith("training on ") for run in instance.get_runs(limit=1) for r in instance.all_logs(run.run_id)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    time.sleep(1.0)  # into the tuning trials (the review: a second after the step's start, the signal came before them)
    if signum == "terminate":
        [started] = instance.get_runs()
        assert instance.run_launcher.terminate(started.run_id), "the launcher knows the command as the run's worker"
        signum = signal.SIGTERM
    else:
        process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, (out, err)
    [run] = instance.get_runs()
    name = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM (Terminate in the Dagster UI"}[signum]
    assert f"stopped by {name}" in err and f"its interrupted step was to be retried; run {run.run_id} canceled" in err, err
    assert run.status == dg.DagsterRunStatus.CANCELED and "materialized" not in out
    assert main(["materialize", "--model", "adult", "--select", "raw_events"]) == 0, "the retraining lock went with the command"


AT_EITHER_END = """
import atexit, sys, time
import mlplatform.cli as cli

if sys.argv[1] == "starting":
    cli._main = lambda argv: (print("started", flush=True), time.sleep(30))  # importing, reading settings
elif sys.argv[1] == "ignoring":
    cli._main = lambda argv: (print("started", flush=True), time.sleep(2), 0)[2]
else:
    atexit.register(time.sleep, 30)  # the interpreter's teardown, about 1.5 s after a run
    cli._main = lambda argv: (print("started", flush=True), 0)[1]
cli.run()
"""


@pytest.mark.parametrize("when, signum, code, said", [("starting", signal.SIGTERM, 143, "mlplatform: interrupted (SIGTERM)"),
                                                       ("exiting", signal.SIGINT, 0, ""), ("exiting", signal.SIGTERM, 0, ""),
                                                       ("ignoring", signal.SIGTERM, 0, "")])
def test_a_signal_as_the_command_starts_or_exits_ends_it_at_once_and_says_so(when: str, signum: int, code: int, said: str) -> None:
    """The stop probe: a SIGTERM while the command started killed it silently, and a Ctrl-C after it had printed what its
    run did killed it during the interpreter's teardown (exit by the signal, no word). Now the first is said as a Ctrl-C
    is, and the second ends the command at once with its own exit code. A command started with SIGTERM ignored (`nohup`,
    a script's background job) leaves it ignored."""
    ignore = (lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)) if when == "ignoring" else None
    process = subprocess.Popen([sys.executable, "-c", AT_EITHER_END, when], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ignore)
    assert process.stdout is not None and process.stdout.readline() == "started\n"
    time.sleep(0.3)
    process.send_signal(signum)
    out, err = process.communicate(timeout=10)  # not the 30 s sleep
    assert process.returncode == code and err.strip() == said, (process.returncode, err)


SIGNALLED_WHILE_LOGGING = """
import os, signal, sys
from mlplatform.stores.registry import Registry

log_model = Registry.log_model

def signalled(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # a Terminate while the version is logged and registered
    return log_model(self, *args, **kwargs)

Registry.log_model = signalled
from mlplatform.cli import main
sys.exit(main(["materialize", "--model", "adult"]))
"""


def test_a_signal_while_the_version_is_logged_stops_the_run_before_its_evaluation(state: Settings, instance: dg.DagsterInstance,
                                                                                   adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The review: raised once logging was done, the signal failed trained_model after the version was registered and
    made @challenger, with no materialization of it. Now the step ends recorded, and the run stops as evaluation_report
    loads its input: the version is left unjudged (`pending`), the champion unchanged."""
    write_batches(adult_rows.iloc[:1500], adult_spec, state.landing_dir, 1500)
    done = subprocess.run([sys.executable, "-c", SIGNALLED_WHILE_LOGGING], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr[-3000:]
    assert done.stderr.rstrip().endswith("canceled") and "stopped by SIGTERM" in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.CANCELED
    names = ModelNames("adult")
    materialized = {record.asset_key for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records}
    assert names.asset("trained_model") in materialized and names.asset("evaluation_report") not in materialized, materialized
    assert main(["status", "--model", "adult", "--json"]) == 0
    [status] = json.loads(capsys.readouterr().out)
    [version] = status["versions"]
    assert status["champion"] is None and version["version"] == 1 and version["decision"] == "pending", status


SIGNALLED_AS_RECORDED = """
import os, signal, sys, time
import dagster as dg

handle_new_event = dg.DagsterInstance.handle_new_event
report_run_canceling = dg.DagsterInstance.report_run_canceling

def signalled(self, event, *args, **kwargs):
    handle_new_event(self, event, *args, **kwargs)
    materialized = event.dagster_event is not None and event.dagster_event.is_step_materialization
    if materialized and event.dagster_event.asset_key.path[-1] == "evaluation_report":
        os.kill(os.getpid(), signal.SIGTERM)  # a Terminate once the decision is recorded, as its step ends

def late(self, *args, **kwargs):
    time.sleep(2)  # the stop watcher's mark of canceling comes after the run ended, as it did once under load
    return report_run_canceling(self, *args, **kwargs)

dg.DagsterInstance.handle_new_event = signalled
dg.DagsterInstance.report_run_canceling = late
from mlplatform.cli import main
sys.exit(main(["materialize", "--model", "adult"]))
"""


def test_a_run_stopped_after_its_decision_was_recorded_says_the_decision(state: Settings, instance: dg.DagsterInstance,
                                                                         adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """The second stop probe: a SIGTERM just after evaluation_report's materialization was recorded canceled the run, and
    the command said only that, while v18 had been decided (rejected) and its report recorded. Under load, the mark of
    canceling came after the interrupted run had ended, and it failed (alerted, and retried by the daemon): the mark
    comes late here."""
    write_batches(adult_rows.iloc[:1500], adult_spec, state.landing_dir, 1500)
    done = subprocess.run([sys.executable, "-c", SIGNALLED_AS_RECORDED], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr[-3000:]
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert not instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records, "never failed: no failure alert or run retry"
    assert "evaluation_report: challenger v1 promoted: " in done.stdout and f"run {run.run_id} canceled" in done.stderr, (done.stdout, done.stderr[-3000:])


def test_a_retraining_with_no_new_labels_judges_the_refit_champion_out_of_sample(state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame,
                                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The concurrency probe: a hand retraining right after the champion's scored it in-sample on its own refit rows
    (challenger roc_auc 0.8922 against 0.9404), where the challenger's score is out of sample."""
    write_batches(adult_rows.iloc[:1500], adult_spec, state.landing_dir, 1500)
    assert main(["materialize", "--model", "adult"]) == 0
    capsys.readouterr()
    assert main(["materialize", "--model", "adult", "--select", "features,trained_model,evaluation_report"]) == 0
    decided = capsys.readouterr().out
    assert "evaluation_report: challenger v2 " in decided and "the refit champion judged out of sample: on 300 rows of its own hold-out" in decided, decided
    scores = re.search(r"challenger roc_auc (\d\.\d+) vs champion (\d\.\d+)", decided)
    assert scores is not None and abs(float(scores[1]) - float(scores[2])) < 0.03, "the same rows, both out of sample: close, not 0.05 apart"


def test_settings_lists_every_setting_with_its_value_default_and_where_it_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The estimation probe looked for min_training_rows' default (200) and the chunk sizes in the README and found them
    nowhere; a model's defs.yaml loop: and the environment both change settings, and nothing listed what a model ran with."""
    from mlplatform.cli.settings_list import render_settings, settings_rows
    from mlplatform.root import ModelDeclaration, build_model

    monkeypatch.setenv("mlplatform_min_training_rows", "150")  # pydantic-settings reads it in any case: so does the source
    monkeypatch.setenv("MLPLATFORM_SERVE_TOKEN", "s3cret-token")
    monkeypatch.setenv("MLPLATFORM_CELERY_BROKER_URL", "redis://:hunter2@127.0.0.1:6379/0")  # a plain setting holding a password
    declaration = ModelDeclaration.model_validate({"spec": str(REPO_ROOT / "data" / "adult.yaml"), "loop": {"retrain_every_n": 777}})
    model = build_model(Settings(state_dir=tmp_path), declaration, tmp_path / "defs.yaml")
    rows = {row["variable"]: row for row in settings_rows(model)}
    assert len(rows) == len(Settings.model_fields) - 1 and "MLPLATFORM_DATASET_SPEC" not in rows, "every setting but the per-model spec"
    assert {k: rows["MLPLATFORM_RETRAIN_EVERY_N"][k] for k in ("value", "default", "source")} == {"value": 777, "default": 5000, "source": "adult's defs.yaml loop:"}
    assert {k: rows["MLPLATFORM_MIN_TRAINING_ROWS"][k] for k in ("value", "default", "source")} == {"value": 150, "default": 200, "source": "environment"}
    assert rows["MLPLATFORM_SERVE_TOKEN"]["value"] == "(set)" and rows["MLPLATFORM_LANDING_DIR"]["source"] == "derived"
    assert rows["MLPLATFORM_DRIFT_EVERY_N_EVENTS"]["source"] == "default" and rows["MLPLATFORM_DRIFT_EVERY_N_EVENTS"]["description"]
    text = render_settings("adult", list(rows.values()))
    assert rows["MLPLATFORM_CELERY_BROKER_URL"]["value"] == "redis://:***@127.0.0.1:6379/0"
    assert text.startswith(f"settings of model adult: 7 of {len(rows)} changed from their default\n") and "s3cret" not in text and "hunter2" not in text
    assert "MLPLATFORM_RETRAIN_EVERY_N=777  (adult's defs.yaml loop:; default 5000)\n    New labelled events" in text
    monkeypatch.setenv("MLPLATFORM_STATE_DIR", str(tmp_path / "state"))
    assert main(["settings", "--json", "--model", "adult"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == ["adult"] and any(r["variable"] == "MLPLATFORM_MIN_TRAINING_ROWS" and r["value"] == 150 for r in listed["adult"])
