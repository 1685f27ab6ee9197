"""`mlplatform replay` as a stream simulator: order, drift from a row, delayed labels, landing and the serving API."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlplatform import cli
from mlplatform.stores.eventlog import EventLog
from mlplatform.pipeline.landing import ingest_pending
from mlplatform.pipeline.replay import (GENERATED_INTERVAL_S, STREAM_START_US, json_records, write_batches, ApiSink, DriftScenario, LandingSink, ReplayError, ReplaySummary,
                                        canonical_labels, run_stream, select_stream, stream_start_us)
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec
from mlplatform_tests.serving_support import TOKEN, free_port, register_versions, running_server, state_settings

ADULT_SPEC = Path(__file__).resolve().parent.parent / "data" / "adult.yaml"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shift", "age"], "expected COLUMN=VALUE"),
        (["--shift", "age=x"], "'x' is not a float"),
        (["--shift", "workclass=1"], "'workclass' is not a numeric feature"),
        (["--shift", "nope=1"], "'nope' is not a numeric feature"),
        (["--category", "age=3"], "'age' is not a categorical feature"),
        (["--category", "sex=Male", "--category-share", "0"], "category share must be in (0, 1]"),
        (["--flip-labels", "1.5"], "flip-labels must be in [0, 1]"),
        (["--flip-where", "sex=Male"], "flip-where needs flip-labels > 0"),
        (["--flip-labels", "0.5", "--flip-where", "nope=1"], "'nope' is not a feature"),
        (["--shift", "age=nan"], "shift: age=nan is not a finite number of standard deviations"),
        (["--shift", "age=inf"], "shift: age=inf is not a finite number"),
        (["--rate", "0"], "rate must be a finite number > 0"),
        (["--rate", "nan"], "rate must be a finite number > 0 events/s, got nan"),
        (["--label-delay", "-1"], "label delay must be a finite number ≥ 0"),
        (["--label-delay", "nan"], "label delay must be a finite number ≥ 0"),
        (["--batch-size", "0"], "batch size must be ≥ 1"),
        (["--start", "999999"], "past the end of adult"),
        (["--count", "-5"], "must be ≥ 0"),
        (["--shift", "age=1", "--drift-from", "100"], "drift-from 100 is past the end of the replayed slice (100 rows)"),
        (["--to", "api", "--url", "ftp://127.0.0.1"], "must start with http:// or https://"),
    ],
)
def test_bad_replay_options_fail_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code = cli.main(["--state-dir", str(tmp_path), "replay", "--model", "adult", "--count", "100", "--quiet", *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "landing").exists() or not any((tmp_path / "landing").iterdir())


def test_unreachable_serving_api_and_missing_spec_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert cli.main(["--state-dir", str(tmp_path), "--model", "adult", "replay", "--to", "api", "--url", url, "--count", "10", "--quiet",
                     "--reconnect-seconds", "1"]) == 2
    error = capsys.readouterr().err
    assert f"cannot reach the serving API at {url}/models/adult/predict" in error and ", for 1 s (is `mlplatform serve` running?)" in error, error
    assert "to go on" not in error, "nothing was sent: nothing to go on from"
    assert time.monotonic() - started >= 0.7, "a refused connection is tried again for the time given"
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["--state-dir", str(tmp_path), "--model", "adult", "replay", "--to", "api", "--url", url, "--reconnect-seconds", bad, "--quiet"])
        assert exited.value.code == 2 and "argument --reconnect-seconds: expected a" in capsys.readouterr().err
    assert cli.main(["--state-dir", str(tmp_path), "--spec", str(tmp_path / "missing.yaml"), "replay", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


class _Breaks(BaseHTTPRequestHandler):
    """A serving API that drops the connection of a request without an answer, as a service killed mid-request does:
    the third batch of predictions, or (`server.feedback_left`) the /feedback after that many."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server: Any = self.server
        server.paths.add(self.path)
        if self.path.endswith("/feedback"):
            if server.feedback_left == 0:
                return self._drop()
            server.feedback_left -= 1
            answer: object = {"applied": True}
        elif len(server.batches) == 2:
            return self._drop()
        else:
            server.batches.append([r["event_id"] for r in body["records"]])
            answer = {"predictions": [{"event_id": r["event_id"], "prediction": "<=50K"} for r in body["records"]]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args: object) -> None:
        pass


def _replay_against(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], feedback_left: int = -1) -> tuple[int, Any, str]:
    """`replay --to api` of adult rows 5 to 54, in batches of 10, against a `_Breaks` service on loopback."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Breaks)
    server.batches, server.paths, server.feedback_left = [], set(), feedback_left
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = cli.main(["--state-dir", str(tmp_path), "--model", "adult", "replay", "--to", "api", "--url", f"http://127.0.0.1:{server.server_port}",
                         "--start", "5", "--count", "50", "--batch-size", "10", "--quiet", *argv])
    finally:
        server.shutdown()
        server.server_close()
    return code, server, capsys.readouterr().err


@pytest.mark.parametrize(("scenario", "go_on", "past_it"), [
    ([], "--start 25 --count 30", "--start 35 --count 20"),
    (["--shift", "age=1", "--drift-from", "30", "--ramp"], "--start 25 --count 30 --drift-from 10", "--start 35 --count 20 --drift-from 0"),
])
def test_a_replay_the_service_drops_says_how_far_it_got_and_how_to_go_on(tmp_path: Path, capsys: pytest.CaptureFixture[str], scenario: list[str],
                                                                          go_on: str, past_it: str) -> None:
    """The operator probe: a connection reset stopped `replay --to api` with the error alone, and nothing said which rows
    were sent or how to go on without sending them twice. And (the new-user probe) a --url naming the service alone gets
    the model's routes, where it posted to the service's root and stopped on a 404. With a drift, the resume keeps its
    dataset row (the review)."""
    code, server, err = _replay_against(tmp_path, capsys, scenario)
    assert code == 2 and len(server.batches) == 2 and "replay failed: cannot reach the serving API" in err, err
    assert server.paths == {"/models/adult/predict", "/models/adult/feedback"}
    assert (f"replay: stopped after sending 20 of 50 events (rows 5–24 of the ordered stream); to go on, run the same command with {go_on}; "
            f"if that is refused as already known (409), the 10 events sent as the connection broke reached the service: {past_it}") in err, err
    assert ("a --ramp grows again from nothing" in err) == ("--ramp" in scenario), "the drift's point is kept; a ramp cannot be"


def test_a_replay_stopped_while_sending_labels_counts_those_the_service_answered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The review: /feedback failing after 7 of a batch's 10 labels was said as 10 labels not sent."""
    code, server, err = _replay_against(tmp_path, capsys, [], feedback_left=7)
    assert code == 2 and len(server.batches) == 1, err
    assert ("replay: stopped after sending 10 of 50 events (rows 5–14 of the ordered stream); 3 labels of sent events were not sent (a resumed "
            "replay does not send them); to go on, run the same command with --start 15 --count 40\n") in err, err


@pytest.mark.parametrize("argv", [["--order", "random"], ["--to", "kafka"], ["--rate", "fast"]])
def test_malformed_choices_are_argparse_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay", *argv])
    assert exc.value.code == 2


def test_a_stream_without_times_never_ends_in_the_future() -> None:
    """A million rows a minute apart from 2026-01-01 ended in 2027, where landing quarantines events as in the future."""
    assert stream_start_us(48_842) == STREAM_START_US, "Adult's stream starts where it always did"
    rows = 1_000_000
    last = stream_start_us(rows) + (rows - 1) * GENERATED_INTERVAL_S * 1_000_000
    assert last <= time.time() * 1_000_000 and stream_start_us(rows) < STREAM_START_US


def test_shuffled_order_and_drift_are_reproducible_by_seed(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    scenario = DriftScenario(shift_numeric={"age": 2.0}, category_mix={"workclass": "Private"}, flip_labels=1.0, flip_where={"sex": "Female"}, seed=5)
    first = select_stream(adult_rows, adult_spec, order="shuffled", seed=3, count=2000, scenario=scenario, drift_from=1000)
    again = select_stream(adult_rows, adult_spec, order="shuffled", seed=3, count=2000, scenario=scenario, drift_from=1000)
    other = select_stream(adult_rows, adult_spec, order="shuffled", seed=4, count=2000)
    clean = select_stream(adult_rows, adult_spec, order="shuffled", seed=3, count=2000)
    pd.testing.assert_frame_equal(first, again)
    assert list(first["event_id"]) == list(clean["event_id"]) and list(first["event_id"]) != list(other["event_id"])
    pd.testing.assert_frame_equal(first.iloc[:1000], clean.iloc[:1000])
    after, before = first.iloc[1000:], clean.iloc[1000:]
    assert (pd.to_numeric(after["age"]) > pd.to_numeric(before["age"])).all()
    assert (after["workclass"] == "Private").mean() > 0.6
    flipped = canonical_labels(after, adult_spec) != canonical_labels(before, adult_spec)
    female = before["sex"].str.strip() == "Female"
    assert flipped[female].all() and not flipped[~female].any()


def test_a_ramped_drift_grows_from_nothing_to_the_full_amounts(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    scenario = DriftScenario(shift_numeric={"age": 2.0}, category_mix={"workclass": "Self-emp-inc"}, category_share=1.0, flip_labels=1.0, ramp=True, seed=5)
    clean = select_stream(adult_rows, adult_spec, count=4000)
    ramped = select_stream(adult_rows, adult_spec, count=4000, scenario=scenario, drift_from=1000)
    pd.testing.assert_frame_equal(ramped.iloc[:1000], clean.iloc[:1000])
    shift = pd.to_numeric(ramped["age"]).iloc[1000:] - pd.to_numeric(clean["age"]).iloc[1000:]
    std = pd.to_numeric(clean["age"].iloc[:1000]).std()
    assert shift.iloc[0] == pytest.approx(2.0 * std / 3000) and shift.iloc[-1] == pytest.approx(2.0 * std) and shift.is_monotonic_increasing
    flipped = (canonical_labels(ramped, adult_spec) != canonical_labels(clean, adult_spec)).iloc[1000:]
    mixed = (ramped["workclass"] == "Self-emp-inc").iloc[1000:]
    for changed in (flipped, mixed):  # a quarter of the way: about an eighth changed; the last quarter: about seven eighths
        assert changed.iloc[:750].mean() < 0.25 and changed.iloc[-750:].mean() > 0.75


def test_time_order_sorts_by_event_time_and_keeps_ties_in_file_order(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    rows = adult_rows.iloc[:6].copy()
    rows["event_time"] = ["2026-01-03T00:00:00+00:00", "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"] * 2
    ordered = select_stream(rows, adult_spec, order="time")
    assert list(ordered["event_id"]) == ["adult-1", "adult-4", "adult-2", "adult-5", "adult-0", "adult-3"]


def test_landing_replay_with_delayed_labels_is_ingested_as_events_then_labels(state: Settings, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    rows = select_stream(adult_rows, adult_spec, count=900)
    summary = run_stream(rows, adult_spec, LandingSink(adult_spec, state.landing_dir), batch_size=300, rate=20_000, label_delay=0.05, progress=False)
    assert (summary.events, summary.labels) == (900, 900)
    names = sorted(p.name for p in state.landing_dir.iterdir())
    assert len([n for n in names if "-labels-" in n]) >= 1 and len(names) >= 4
    log = EventLog.for_dataset(state.events_dir, adult_spec)
    try:
        report = ingest_pending(state.landing_dir, adult_spec, log)
        assert report.total("ingested") == 900 and report.total("labels_applied") == 900 and report.total("quarantined") == 0
        counts = log.counts()
        assert (counts.total, counts.labelled) == (900, 900)
    finally:
        log.close()


def test_api_records_carry_the_numbers_a_landing_file_of_the_same_rows_does(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """Probe: drifted rows replayed to the API, then to landing for their labels: 47 of 1,500 were quarantined as events
    with other values (94.7517571039814 logged, 94.75175710398139 here), pandas' parser one ulp off the file's text."""
    rows = select_stream(adult_rows, adult_spec, count=1500, scenario=DriftScenario(shift_numeric={"hours-per-week": 2.0}, seed=0))
    sent = [record["hours-per-week"] for record in json_records(rows, adult_spec)]
    assert sent == [None if pd.isna(text) else float(text) for text in rows["hours-per-week"]]  # Python's float: correctly rounded


def test_a_replay_never_replaces_a_file_still_in_the_landing_folder(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    """The same rows replayed again, with other drift, were written under the same name: the first file, not landed yet,
    was replaced without a word."""
    rows = select_stream(adult_rows, adult_spec, count=10)
    first = write_batches(rows, adult_spec, tmp_path, 10)
    shifted = write_batches(rows.assign(age=rows["age"].astype(float) + 50), adult_spec, tmp_path, 10)
    third = write_batches(rows, adult_spec, tmp_path, 10)
    assert [p.name for p in first + shifted + third] == ["replay-adult-0-adult-9.csv", "replay-adult-0-adult-9-2.csv", "replay-adult-0-adult-9-3.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in first + shifted + third), "no temporary file left"
    assert pd.read_csv(first[0])["age"].tolist() == rows["age"].astype(int).tolist()


def test_api_replay_predicts_then_sends_feedback_to_the_real_service(tmp_path: Path, adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> None:
    settings = state_settings(tmp_path / "serve", ADULT_SPEC)
    register_versions(settings, adult_spec, adult_rows, 1)
    scenario = DriftScenario(shift_numeric={"hours-per-week": 1.0}, seed=1)
    rows = select_stream(adult_rows, adult_spec, start=5000, count=120, scenario=scenario, drift_from=60)
    with running_server(settings) as server:
        with pytest.raises(ReplayError, match="401"):
            run_stream(rows.iloc[:10], adult_spec, ApiSink(adult_spec, server.url), batch_size=10, label_delay=0.0, progress=False)
        sink = ApiSink(adult_spec, server.url, token=TOKEN)
        summary = run_stream(rows, adult_spec, sink, batch_size=50, label_delay=0.05, progress=False)
        # The dataset's ids travel with the records: the same rows again are refused, not served twice under new ids.
        with pytest.raises(ReplayError, match="409.*already"):
            run_stream(rows.iloc[:10], adult_spec, sink, batch_size=10, label_delay=0.0, progress=False)
        sink.close()
        metrics = httpx.get(server.url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert (summary.events, summary.labels) == (120, 120)
    log = EventLog.for_dataset(settings.events_dir, adult_spec)
    try:
        assert log.counts().total == 120 and sorted(log.get(rows["event_id"].tolist())["event_id"]) == sorted(rows["event_id"])
    finally:
        log.close()
    assert 'mlplatform_feedback_total{model="adult",outcome="applied"} 120.0' in metrics
    # Serving restarting: a replay started while nothing listens waits for it (the operator probe: the replay stopped at
    # the first refused connection, and the labels waiting for their delay were never sent).
    later = select_stream(adult_rows, adult_spec, start=6000, count=40)
    port = free_port()
    replayed: list[ReplaySummary] = []
    waiting = threading.Thread(target=lambda: replayed.append(run_stream(later, adult_spec, ApiSink(adult_spec, f"http://127.0.0.1:{port}", token=TOKEN),
                                                                         batch_size=20, label_delay=0.0, progress=False)))
    waiting.start()
    with running_server(settings, port=port):
        waiting.join(timeout=120)
    assert [(r.events, r.labels) for r in replayed] == [(40, 40)]
