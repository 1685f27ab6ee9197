"""`mlplatform demo --model <a user's model>`: its acts fitted to the model's source, refused up front when the source
is too small, and what stops it said in one line. The user's models live in a copy of the project (its defs folder),
as `dg scaffold` would have put them there."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.cli.demo import DemoError, plan_demo
from mlplatform.domain.spec import load_spec
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventLog
from mlplatform_tests.test_models import _run, project  # project: a fixture, this module's own copy of the project

SPEC = """\
name: {name}
task: binary
label: leak
classes: ["no", "yes"]
positive_class: "yes"
id_column: reading_id
time_column: taken_at
{time_format}
features:
  flow: numeric
  pressure: numeric
  temp: numeric
  humidity: numeric
  wear: numeric
  site: categorical
source:
  files: [readings.csv]
  format: csv
"""
DEFAULT_THRESHOLDS = {"MLPLATFORM_RETRAIN_EVERY_N": "5000", "MLPLATFORM_MIN_NEW_LABELLED_FOR_DRIFT": "500"}  # a new user's: the settings' defaults


def _readings(n: int) -> pd.DataFrame:
    """A meter's hourly readings; a leak shows in `wear`, the fifth numeric column, which the demo's drift leaves as it
    is (it shifts the first four): its drifted events stay learnable, as Adult's do."""
    rng = np.random.default_rng(n)
    wear = rng.uniform(0, 1, n)
    times = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="h")
    return pd.DataFrame({"reading_id": [f"r{i}" for i in range(n)], "taken_at": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "flow": rng.normal(10, 2, n).round(3), "pressure": rng.normal(3, 0.5, n).round(3), "temp": rng.normal(15, 5, n).round(2),
                         "humidity": rng.uniform(20, 90, n).round(1), "wear": wear.round(4), "site": rng.choice(list("abcd"), n, p=[0.4, 0.3, 0.2, 0.1]),
                         "leak": np.where((wear > 0.7) ^ (rng.random(n) < 0.05), "yes", "no")})


def _declare(project: Path, name: str, rows: pd.DataFrame, time_format: str = "", loop: str = "") -> None:
    """A model of `rows` in the copy's defs folder: its defs.yaml (with `loop`, its own settings), dataset.yaml and source file."""
    folder = project / "mlplatform" / "defs" / name
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_csv(folder / "readings.csv", index=False)
    (folder / "dataset.yaml").write_text(SPEC.format(name=name, time_format=time_format), encoding="utf-8")
    (folder / "defs.yaml").write_text(f"type: mlplatform.RetrainingLoop\nattributes:\n  spec: dataset.yaml\n  loop: {{{loop}}}\n", encoding="utf-8")


def _demo(project: Path, model: str, state: Path) -> tuple[int, str, str]:
    done = _run(project, "mlplatform", "demo", "--model", model, env={"MLPLATFORM_STATE_DIR": str(state), **DEFAULT_THRESHOLDS}, check=False)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(("events", "every_n", "acts", "thresholds"), [
    (48_842, 5000, (10_000, 5000, 4000), {}),  # Adult, as `make demo` runs it
    (48_842, 1000, (10_000, 1000, 999), {}),  # Adult at a smaller N: the drifted events stay fewer than N, as before
    (17_379, 1000, (9146, 1000, 999), {}),  # Bike Sharing at that N: only the first window is its share
    (17_379, 5000, (9146, 4575, 3658), {"retrain_every_n": 4575}),
    (6379, 5000, (3357, 1680, 1342), {"retrain_every_n": 1680}),
    (1268, 5000, (667, 335, 266), {"retrain_every_n": 335, "min_new_labelled_for_drift": 266}),  # the probe's water-flow
])
def test_the_demo_keeps_adults_acts_and_gives_a_smaller_source_its_shares(events: int, every_n: int, acts: tuple[int, int, int],
                                                                          thresholds: dict[str, int]) -> None:
    """The new-user probe: the demo replayed 10,000, 5,000 and 4,000 events whatever the source held. Each act now fits
    the events, the drifted ones fewer than the new labelled ones (only their drift report calls for the last
    retraining), and the sensor's ticks take the thresholds the acts need."""
    settings = Settings(retrain_every_n=every_n, min_new_labelled_for_drift=500)
    plan = plan_demo("m", events, settings)
    assert (plan.first, plan.new_labelled, plan.drifted) == acts and sum(acts) <= events
    assert plan.drift_bar <= plan.drifted < plan.new_labelled
    assert plan.thresholds(settings) == thresholds


def test_a_source_too_small_for_the_demo_is_refused_before_anything_runs(project: Path, tmp_path: Path) -> None:
    """Below the events its acts need, the demo says how many the source has and needs, in one line, and leaves the
    state folder alone (it is not even made); so it does for a model whose own loop: holds a threshold the demo would
    set, where the sensor would read the model's own and not fire as the demo says."""
    _declare(project, "trickle", _readings(600))
    _declare(project, "metered", _readings(1268), loop="retrain_every_n: 5000")
    state = tmp_path / "state"
    code, _, err = _demo(project, "trickle", state)
    assert (code, err) == (1, "demo failed: model trickle's source has 600 labelled events; the demo needs at least 1000 (a first champion's "
                              "window, new labelled events that call for a retraining, then drifted events for a drift report)\n")
    code, _, err = _demo(project, "metered", state)
    assert (code, err) == (1, "demo failed: model metered's source has 1268 labelled events, for which the demo sets retrain_every_n 335 and "
                              f"min_new_labelled_for_drift 266; {project / 'mlplatform' / 'defs' / 'metered' / 'defs.yaml'} sets its own in "
                              "loop:, which the demo cannot change\n")
    _declare(project, "patient", _readings(1268), loop="retrain_cooldown_seconds: 3600")
    code, _, err = _demo(project, "patient", state)
    assert (code, err) == (1, f"demo failed: {project / 'mlplatform' / 'defs' / 'patient' / 'defs.yaml'} sets retrain_cooldown_seconds 3600 in "
                              "loop:, which the demo cannot lift and would wait out twice; it waits out at most 300 s: run the demo on a copy of "
                              "the model without it\n")
    assert not state.exists()
    with pytest.raises(DemoError, match=r"source has 3000 labelled events; the demo needs at least 3800 "):
        plan_demo("m", 3000, Settings(min_training_rows=2000))  # a first window of its share must hold min_training_rows


def test_a_source_the_demo_cannot_replay_is_one_line(project: Path, tmp_path: Path) -> None:
    """A spec whose time_format does not read its time column: the demo ended in a ReplayError's traceback."""
    _declare(project, "clock", _readings(1268), time_format='time_format: "%d/%m/%Y %H:%M"')
    code, _, err = _demo(project, "clock", tmp_path / "state")
    assert code == 1 and err.startswith("demo failed: model clock's source cannot be replayed: time_column 'taken_at': 1268 of 1268 rows are "
                                        "missing, not a timestamp or out of range in time_format '%d/%m/%Y %H:%M'") and len(err.splitlines()) == 1, err


def test_a_demo_whose_events_landing_quarantines_says_where_they_went(project: Path, tmp_path: Path) -> None:
    """Every row's `flow` is text, which landing quarantines: the demo's first training found no labelled event, and
    said only "only 0 labelled events in the window", as `materialize` did."""
    _declare(project, "glut", _readings(1000).assign(flow="lots"))
    code, _, err = _demo(project, "glut", tmp_path / "state")
    assert (code, err) == (1, "demo failed: glut has no labelled events to train on: landing quarantined all 526 rows it read (the most, 526 rows "
                              "of replay-r0-r525.csv: flow: 'lots' is not a finite number); `mlplatform quarantine --model glut` lists them\n")


def test_the_demo_on_a_small_source_replays_what_it_says_and_its_sensor_fires_as_told(project: Path, tmp_path: Path) -> None:
    """The probe's 1,268 events: the demo printed "1. replayed 10000 events", then failed: no retraining came after
    5,000 new labelled events that were never there. Now every count printed is what landed, and each act ends as told;
    the acts count labelled events, as the sensor does, so rows without a label are left out, and said."""
    readings = _readings(1300)
    readings.loc[(readings.index % 40 == 39) & (readings.index < 1280), "leak"] = None
    _declare(project, "water", readings, loop="retrain_cooldown_seconds: 20")  # its own, which the demo waits out (the River probe: "demo failed")
    state = tmp_path / "state"
    code, out, err = _demo(project, "water", state)
    assert code == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert "the model's own cool-down, which the demo waits out" in out
    assert "mlplatform demo · model water (1268 labelled events)" in out and "   source: 32 of 1300 rows have no label the spec reads in 'leak': left out\n" in out
    assert ("the acts fit the source's events: 667, 335 and 266; the sensor's ticks take retrain_every_n 335 (the model's: 5000), "
            "min_new_labelled_for_drift 266 (the model's: 500)") in out
    assert f"1. replayed 667 events into {state / 'landing' / 'water'}\n" in out
    assert "   replayed 335 more labelled events; the sensor asks for a retraining: reason=new_observations\n" in out
    assert "3. replayed 266 drifted events: " in out and "the sensor asks for a retraining: reason=drift, drift share " in out
    log = EventLog(state / "events" / "water.sqlite", load_spec(project / "mlplatform" / "defs" / "water" / "dataset.yaml"))
    try:
        assert (log.counts().total, log.counts().labelled) == (667 + 335 + 266, 1268)
    finally:
        log.close()


def test_a_drift_retraining_the_quality_floor_refuses_is_said_and_the_demo_goes_on(project: Path, tmp_path: Path) -> None:
    """The demo's review: on a user's data the drift retraining's challenger may hold too little signal for the quality
    floor; the evaluation decided "rejected", the blocking check failed the run, and the demo ended in "demo failed"."""
    readings = _readings(1268)
    noise = np.random.default_rng(5).random(1268) < 0.5
    readings.loc[1002:, "leak"] = np.where(noise[1002:], "yes", "no")  # the drifted act's labels: a coin toss
    _declare(project, "coin", readings)
    code, out, err = _demo(project, "coin", tmp_path / "state")
    assert code == 0 and "demo failed" not in err, f"{out[-3000:]}\n{err[-3000:]}"
    third = out.split("3. replayed ")[1]
    assert "rejected" in third and "quality floor" in third and "champion is v2;" in third, third


def test_the_demo_s_drift_reaches_dataset_drift_on_a_wide_spec(tmp_path: Path) -> None:
    """The yeast probe: act 3 shifted four numeric and four categorical columns, 11 % of a 103-column spec, so its drift
    report found no dataset drift and the demo failed. The scenario now drifts more than the share threshold of the
    columns drift compares, in proportion to their kinds, and leaves constant columns alone."""
    from mlplatform.cli.demo import drift_scenario
    from mlplatform.domain.spec import parse_spec
    from mlplatform.pipeline.drift import compare
    from mlplatform.pipeline.replay import inject_drift

    rng = np.random.default_rng(3)
    wide = {f"x{i}": "numeric" for i in range(40)} | {f"c{i}": "categorical" for i in range(6)}
    spec = parse_spec({"name": "wide", "task": "regression", "label": "y", "features": {**wide, "k": "key"},
                       "history": {"features": [{"kind": "lag", "by": "k"}]}})
    frame = pd.DataFrame({f"x{i}": rng.normal(size=2000).round(4) for i in range(40)} | {f"c{i}": rng.choice(list("abc"), 2000) for i in range(6)})
    frame["x0"], frame["k"] = 1.0, rng.choice(list("pq"), 2000)
    reference, later = frame.iloc[:1000].astype(str), frame.iloc[1000:].astype(str)
    scenario = drift_scenario(spec, reference, seed=1, share_threshold=0.5)
    assert "x0" not in scenario.shift_numeric and len(scenario.shift_numeric) + len(scenario.category_mix) >= 24 + 46 // 20
    assert len(scenario.category_mix) == 4, "at least four of a kind where the spec has them"
    drifted_rows = inject_drift(later, spec, scenario, reference=reference)
    typed = [side.astype({c: "float64" for c in spec.numeric_features}) for side in (reference, drifted_rows)]  # as the event log reads them
    columns, *_ = compare(spec, *typed, 0.5, tmp_path / "drift.json")
    drifted = [c.column for c in columns if c.drifted]
    assert len(columns) == 46 and len(drifted) / len(columns) >= 0.5, drifted
