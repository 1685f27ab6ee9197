"""The whole loop with real processes: the daemon's sensor launches a retraining, serving switches to the new champion.

This is `benchmarks/bench_reaction.py` with one trigger: `dagster-daemon run` and `mlplatform serve` in their own
processes on a fresh state folder, events and labels through the HTTP API, nothing evaluated by hand.
"""

import argparse
import os
import sys

import pytest

from benchmarks.bench_reaction import Reaction, main, run, summary, tick_note
from benchmarks.results import RESULTS


@pytest.fixture(scope="module")
def one_trigger(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Reaction], dict[str, object]]:
    import sklearn  # noqa: F401  (on import it sets KMP_* in the environment for good: not the benchmark's doing)

    before = dict(os.environ)
    work = tmp_path_factory.mktemp("reaction")
    result = run(argparse.Namespace(model="adult", triggers=1, every=500, drift_triggers=0, drift_events=1500, timeout=300.0, work_dir=work))
    changed = {k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k)}
    assert not changed, f"the benchmark must leave this process's environment as it found it: {changed}"
    assert not any(work.iterdir()), "the temporary state folder and the servers' logs are removed after the run"
    return result


def test_the_sensor_launched_retraining_is_served_without_a_restart(one_trigger: tuple[list[Reaction], dict[str, object]]) -> None:
    (reaction,), context = one_trigger
    assert context["other_models"] == ["bike-sharing"] and context["other_runs"] == 0, "bike-sharing's sensors tick beside adult's and launch nothing"
    assert reaction.reason == "new_observations" and reaction.decision == "promoted"
    assert (reaction.version_before, reaction.version_after) == (1, 2)
    phases = [reaction.sensor_s, reaction.queue_s, reaction.launch_s, reaction.steps_s, reaction.serving_s]
    assert all(p is not None and p >= 0 for p in phases), phases
    assert set(reaction.step_s) == {"features", "trained_model", "evaluation_report"}
    # The steps phase ends when @champion moves, inside evaluation_report (MLflow's evaluation is recorded after it).
    before_decision = reaction.step_s["features"] + reaction.step_s["trained_model"]
    assert before_decision <= reaction.steps_s <= sum(reaction.step_s.values()) + 1.0


def test_summary_reports_median_max_and_the_goal(one_trigger: tuple[list[Reaction], dict[str, object]]) -> None:
    reactions, _ = one_trigger
    rows, verdict = summary(reactions)
    assert rows[-1]["phase"] == "trigger → new champion served" and rows[-1]["share of median total"] == "100%"
    assert f"{reactions[0].total_s:.1f} s" in verdict and "over 1 triggers that promoted (of 1)" in verdict
    assert summary([])[1] == "No trigger ended with a new champion served."


def test_the_retraining_sensors_tick_gaps_come_from_the_daemons_records(one_trigger: tuple[list[Reaction], dict[str, object]]) -> None:
    _, context = one_trigger
    gaps = context["tick_gaps_s"]
    assert isinstance(gaps, list) and gaps and min(gaps) > 0, gaps
    assert f"{len(gaps)} gaps above 1.5 daemon loops" in tick_note(gaps)
    assert tick_note([]) == "The retraining sensor recorded fewer than two ticks."



@pytest.mark.parametrize(("argv", "message"), [
    (["--triggers", "0"], "--triggers must be ≥ 1"),
    (["--every", "50"], "--every ≥ 100"),
    (["--drift-triggers", "-1"], "--drift-triggers ≥ 0"),
    (["--every", "ten"], "invalid int value"),
    (["--drift-events", "200"], "--drift-events must be at least DRIFT_EVERY_N_EVENTS (1000)"),
    (["--triggers", "60"], "too few for 60 new labels triggers"),
    (["--model", "churn"], "no model named 'churn'"),
])
def test_bad_options_are_refused_before_any_server_starts(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    results = RESULTS.read_text(encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["bench_reaction.py", *argv, "--work-dir", "/nonexistent-work-dir"])
    with pytest.raises(SystemExit) as refused:
        main()
    said = str(refused.value) + capsys.readouterr().err
    assert message in said, said
    assert RESULTS.read_text(encoding="utf-8") == results, "a refused run records nothing"
