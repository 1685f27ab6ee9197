"""`mlplatform demo --model <a user's model>`: what stops it is said in one line. The user's models live in a copy of
the project (its defs folder), as `dg scaffold` would have put them there."""

from pathlib import Path

import numpy as np
import pandas as pd

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


def _declare(project: Path, name: str, rows: pd.DataFrame, time_format: str = "") -> None:
    """A model of `rows` in the copy's defs folder: its defs.yaml, dataset.yaml and source file."""
    folder = project / "mlplatform" / "defs" / name
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_csv(folder / "readings.csv", index=False)
    (folder / "dataset.yaml").write_text(SPEC.format(name=name, time_format=time_format), encoding="utf-8")
    (folder / "defs.yaml").write_text("type: mlplatform.RetrainingLoop\nattributes:\n  spec: dataset.yaml\n", encoding="utf-8")


def _demo(project: Path, model: str, state: Path) -> tuple[int, str, str]:
    done = _run(project, "mlplatform", "demo", "--model", model, env={"MLPLATFORM_STATE_DIR": str(state), **DEFAULT_THRESHOLDS}, check=False)
    return done.returncode, done.stdout, done.stderr


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
    assert (code, err) == (1, "demo failed: glut has no labelled events to train on: landing quarantined all 1000 rows it read (the most, 1000 rows "
                              "of replay-r0-r999.csv: flow: 'lots' is not a finite number); `mlplatform quarantine --model glut` lists them\n")
