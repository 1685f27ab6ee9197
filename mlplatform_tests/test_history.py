"""History features: declared in the spec, point in time, equal in training and serving, carried by the model."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform.domain.features import HistoryFeaturesMissing
from mlplatform.domain.history import Backdated, HistoryState, history_frame, label_known_at, timeline
from mlplatform.domain.spec import DatasetSpec, SpecError, load_spec, parse_spec
from mlplatform.pipeline.retraining import change_window
from mlplatform.root import Platform
from mlplatform.settings import REPO_ROOT, Settings
from mlplatform.stores.eventlog import SERVING_SOURCE, EventStore, now_us

BIKE_HISTORY_SPEC = REPO_ROOT / "data" / "bike_sharing_history.yaml"
UNTIMED: dict[str, Any] = {"name": "tiny", "task": "regression", "label": "y", "features": {"x": "numeric", "c": "categorical"}}
BASE: dict[str, Any] = {**UNTIMED, "time_column": "t"}  # `since` and time windows read event times: only a spec with a time column has them


def _spec_file(tmp_path: Path, history: Any, **changes: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**BASE, **changes, "history": history}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({"features": [{"kind": "lag", "k": 0}]}, "history.features.0.k: Input should be greater than or equal to 1"),
        ({"warmup_events": 0, "features": [{"kind": "events"}]}, "history.features.0.kind: events counts a key's events among the last warmup_events; warmup_events is 0"),
        ({"features": [{"kind": "lag", "k": -2}]}, "history.features.0.k: Input should be greater than or equal to 1"),
        ({"features": [{"kind": "lag", "k": 100_000}]}, "history.features.0.k: Input should be less than or equal to 100"),
        ({"features": [{"kind": "mean", "n": 10**9}]}, "history.features.0.n: Input should be less than or equal to 100000"),
        ({"features": [{"kind": "mean", "of": "nope", "n": 3}]}, "history.features.0.of: 'nope' is neither 'label' nor a feature of the spec"),
        ({"features": [{"kind": "max", "of": "c", "n": 3}]}, "history.features.0.of: 'c' is categorical; max needs a numeric feature or the label"),
        ({"features": [{"kind": "lag", "by": "station"}]}, "history.features.0.by: 'station' is not a feature of the spec"),
        ({"features": [{"kind": "since"}, {"kind": "mean"}]}, "history.features.1.n: kind mean needs n"),
        ({"features": [{"kind": "lag", "n": 4}]}, "history.features.0.n: only for kinds mean, sum, count, min, max"),
        ({"features": [{"kind": "sum", "n": 4, "k": 2}]}, "history.features.0.k: only for kind lag"),
        ({"features": [{"kind": "since", "of": "x"}]}, "history.features.0.of: since reads event times, not a column"),
        ({"features": [{"kind": "lag"}, {"kind": "lag", "k": 2}]}, "history.features.1: ['hist__label_lag1'] is declared twice"),
        ({"features": [{"kind": "median", "n": 3}]}, "history.features.0.kind: Input should be 'lag', 'mean'"),
        ({"features": [{"kind": "lag", "k": "two"}]}, "history.features.0.k: Input should be a valid integer"),
        ({"features": [{"kind": "lag", "k": True}]}, "history.features.0.k: Input should be a valid integer"),
        ({"features": [{"kind": "mean", "n": 2.5}]}, "history.features.0.n: Input should be a valid integer"),
        ({"features": [{"kind": "lag"}], "warmup_events": "100"}, "history.warmup_events: Input should be a valid integer"),
        ({"features": [{"kind": "lag", "window": "1h"}]}, "history.features.0.window: only for kinds mean, sum, count, min, max"),
        ({"features": [{"kind": "mean", "n": 3, "window": "1h"}]}, "history.features.0.window: give n (the last n values) or window (a time span), not both"),
        ({"features": [{"kind": "sum", "window": "0m"}]}, "history.features.0.window: '0m': a window must be longer than 0"),
        ({"features": [{"kind": "sum", "window": "-6h"}]}, "history.features.0.window: '-6h': a window must be longer than 0"),
        ({"features": [{"kind": "min", "window": "6 hours"}]}, "history.features.0.window: '6 hours' is not a duration: a whole number and a unit s, m, h or d"),
        ({"features": [{"kind": "min", "window": "1.5h"}]}, "history.features.0.window: '1.5h' is not a duration"),
        ({"features": [{"kind": "max", "window": 3600}]}, "history.features.0.window: 3600 is not a duration"),
        ({"features": [{"kind": "max", "window": None, "of": "x"}]}, "history.features.0.n: kind max needs n, the number of last values it summarises, or window"),
        ({"features": [{"kind": "count", "window": ["1h"]}]}, "history.features.0.window: ['1h'] is not a duration"),
        ({"features": [{"kind": "count", "window": "1h" * 10_000}]}, "history.features.0.window: '1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1…"),
        ({"features": [{"kind": "mean", "window": "36501d"}]}, "history.features.0.window: '36501d': a window is at most 36500d"),
        ({"features": [{"kind": "mean", "of": "c", "window": "1h"}]}, "history.features.0.of: 'c' is categorical; mean needs a numeric feature or the label"),
        ({"features": [{"kind": "mean", "window": "6h"}, {"kind": "mean", "window": " 6h"}]}, "history.features.1: ['hist__label_mean_6h'] is declared twice"),
        ({"features": []}, "history.features: List should have at least 1 item"),
        ({"features": [{"kind": "lag"}], "warmup_events": -1}, "history.warmup_events: Input should be greater than or equal to 0"),
        ([{"kind": "lag"}], "history: Input should be a valid dictionary or instance of HistorySpec"),
    ],
)
def test_a_wrong_history_section_is_refused_naming_the_field(tmp_path: Path, history: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(_spec_file(tmp_path, history))
    assert message in str(caught.value)


KEYED: dict[str, Any] = {**BASE, "features": {"x": "numeric", "c": "categorical", "k": "key"}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "features: ['k'] is of type key, which only history features read (`by:` it), and none does: make it categorical"),
        ({"history": {"features": [{"kind": "lag", "by": "c"}]}}, "features: ['k'] is of type key, which only history features read"),
        ({"history": {"features": [{"kind": "lag", "by": "k"}, {"kind": "mean", "of": "k", "n": 3, "by": "k"}]}},
         "history.features.1.of: 'k' is key; mean needs a numeric feature or the label"),
        ({"history": {"features": [{"kind": "lag", "by": "k"}]}, "optional": ["k"]}, "history.features.0.by: 'k' is optional, and a key must be sent"),
        ({"history": {"features": [{"kind": "lag", "by": "k"}]}, "crosses": [["c", "k"]]}, "crosses: 'k' is not a categorical feature"),
        ({"history": {"features": [{"kind": "lag", "by": "k"}]}, "time_offset": {"column": "k", "unit": "hours"}},
         "time_offset.column: 'k' is a key feature; an offset is a number of hours"),
        ({"features": {"x": "numeric", "k": "entity"}}, "features.k: Input should be 'numeric', 'categorical' or 'key'"),
    ],
)
def test_a_key_feature_is_read_by_history_alone(changes: dict[str, Any], message: str) -> None:
    """A key keys history features and nothing else: one no history feature reads, or read as a number, is refused."""
    keyed = parse_spec({**KEYED, "history": {"features": [{"kind": "lag", "by": "k"}, {"kind": "events", "by": "k"}]}})
    assert keyed.entity_keys == ["k"] and keyed.modelled_features == ["x", "c"]
    assert keyed.model_inputs == (["x", "hist__label_lag1__by_k", "hist__events__by_k"], ["c"])
    with pytest.raises(SpecError) as caught:
        parse_spec({**KEYED, **changes})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"kind": "since", "by": "c"}, "history.features.1.kind: since (time since the key's previous event) needs the spec's time_column; without one"),
        ({"kind": "mean", "window": "3d"}, "history.features.1.window: 3d is a time span and needs the spec's time_column; without one"),
        ({"kind": "count", "of": "x", "window": "6h", "by": "c"}, "history.features.1.window: 6h is a time span and needs the spec's time_column"),
    ],
)
def test_history_over_time_needs_the_spec_s_time_column(feature: dict[str, Any], message: str) -> None:
    """Without a time column, landing times events by ingestion (1 µs a row), replay and the benchmarks from 2026-01-01 a
    minute a row, serving by its clock: `since` and `window: 3d` meant three things, silently (the new-user probe).
    History over counts of events stays allowed."""
    counted = [{"kind": "lag", "k": 2, "by": "c"}, {"kind": "mean", "n": 5}, {"kind": "count", "of": "x", "n": 3}, {"kind": "diff"}, {"kind": "events", "by": "c"}]
    assert len(parse_spec({**UNTIMED, "history": {"features": counted}}).history_numeric) == 6
    with pytest.raises(SpecError) as caught:
        parse_spec({**UNTIMED, "history": {"features": [{"kind": "lag"}, feature]}})
    assert message in str(caught.value)
    assert parse_spec({**BASE, "history": {"features": [{"kind": "lag"}, feature]}}).history_features[1].reads_time


@pytest.mark.parametrize(
    ("changes", "feature", "message"),
    [
        ({"task": "multiclass", "classes": ["a", "b", "c"]}, {"kind": "mean", "n": 3}, "history.features.0.kind: mean of a multiclass label is not defined"),
        ({"task": "multiclass", "classes": ["a", "b", "c"]}, {"kind": "sum", "window": "1h"}, "history.features.0.kind: sum of a multiclass label is not defined"),
        ({"task": "binary", "classes": ["a", "b"], "positive_class": "b"}, {"kind": "diff"}, "history.features.0.kind: diff of a binary label is not defined"),
    ],
)
def test_label_windows_need_a_number_or_a_binary_label(tmp_path: Path, changes: dict[str, Any], feature: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match="history.features.0.kind") as caught:
        load_spec(_spec_file(tmp_path, {"features": [feature]}, **changes))
    assert message in str(caught.value)


def test_names_are_generated_and_the_example_spec_declares_its_own() -> None:
    spec = load_spec(BIKE_HISTORY_SPEC)
    assert spec.history_numeric == ["hist__label_lag1", "hist__label_lag2", "hist__label_mean24", "hist__label_diff",
                                    "hist__label_lag1__by_hr", "hist__temp_mean3__by_weathersit",
                                    "hist__label_mean_24h", "hist__temp_max_6h__by_weathersit"]
    classified = parse_spec({**BASE, "task": "binary", "classes": ["a", "b"], "positive_class": "b",
                             "history": {"features": [{"kind": "lag", "k": 2, "by": "c"}, {"kind": "mean", "of": "y", "n": 5}, {"kind": "events"}]}})
    assert classified.history_categorical == ["hist__label_lag1__by_c", "hist__label_lag2__by_c"]
    assert classified.history_numeric == ["hist__label_mean5", "hist__events"]  # `of: y` is the label, named as such
    plain = load_spec(REPO_ROOT / "data" / "bike_sharing.yaml")
    assert plain.history is None and plain.history_numeric == [] and "history" not in plain.to_yaml()



def test_the_adult_history_spec_is_adult_with_history_and_no_model_of_the_code_location(tmp_path: Path) -> None:
    """bench_history.py's no-harm check loads it directly: Adult's features and task, 5+ history columns, declared in no defs.yaml."""
    spec, adult = load_spec(REPO_ROOT / "data" / "adult_history.yaml"), load_spec(REPO_ROOT / "data" / "adult.yaml")
    assert spec.features == adult.features and spec.task is adult.task and spec.source == adult.source
    assert len(spec.history_numeric + spec.history_categorical) >= 5
    models = Platform.discover(Settings(state_dir=tmp_path)).models.values()
    assert adult.name in {m.name for m in models} and spec.name not in {m.name for m in models}
    assert all(m.settings.dataset_spec.resolve() != (REPO_ROOT / "data" / "adult_history.yaml").resolve() for m in models)

def _events(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    columns = ["seq", "event_time", "ingested_at", "source", "label", "label_time", "label_seq", "x", "c"]
    return pd.DataFrame(rows, columns=columns).astype({"label": "float64", "label_time": "float64", "label_seq": "float64", "x": "float64"})


HAND = _events([
    # seq, time, ingested, source, label, label_time, label_seq, x, c
    (1, 100, 1000, "landing", 10.0, 1000, 1, 1.0, "a"),  # labelled on arrival: known right after its event (t=100)
    (2, 200, 1000, "landing", 20.0, 1500, 3, 2.0, "b"),  # label landed 500 µs after the event: known at t=700
    (3, 300, 1000, "landing", 30.0, 1000, 2, 4.0, "a"),
    (4, 800, 801, "serving", 40.0, 900, 4, None, "a"),  # served: the label's own time (t=900)
    (5, 850, 851, "serving", None, None, None, 8.0, None),  # no key: reads and writes no per-key history
    (6, 1000, 1001, "serving", 60.0, 1001, 5, 16.0, "b"),
])
HAND_SPEC = parse_spec({**BASE, "history": {"features": [
    {"kind": "lag", "k": 2}, {"kind": "lag", "by": "c"}, {"kind": "events"}, {"kind": "since", "by": "c"},
    {"kind": "sum", "of": "x", "n": 2}, {"kind": "diff", "of": "x", "by": "c"}, {"kind": "count", "of": "x", "n": 3}]}})
HAND_EXPECTED = {
    "hist__label_lag1": [None, 10, 10, 20, 20, 40],  # event 3 does not see event 2's label yet; event 4 does, as the latest known
    "hist__label_lag2": [None, None, None, 30, 30, 20],
    "hist__label_lag1__by_c": [None, None, 10, 30, None, 20],
    "hist__events": [0, 1, 2, 3, 4, 5],
    "hist__since__by_c": [None, None, 200e-6, 500e-6, None, 800e-6],
    "hist__x_sum2": [None, 1, 3, 6, 4, 8],
    "hist__x_diff__by_c": [None, None, 3, None, None, 14],
    "hist__x_count3": [0, 1, 2, 3, 2, 2],
}


def _equal(left: pd.Series, right: pd.Series) -> bool:
    if left.dtype == object or right.dtype == object:
        return bool(((left.astype(object) == right.astype(object)) | (left.isna() & right.isna())).all())
    return bool(np.allclose(left.to_numpy(float), right.to_numpy(float), rtol=1e-9, atol=1e-9, equal_nan=True))


def test_each_event_sees_only_what_was_known_at_its_time() -> None:
    for order in (HAND, HAND.iloc[::-1], HAND.sample(frac=1, random_state=3)):
        frame = history_frame(order, HAND_SPEC).loc[HAND.index]
        for name, expected in HAND_EXPECTED.items():
            assert _equal(frame[name], pd.Series(expected, dtype="float64")), (name, frame[name].tolist())


S = 1_000_000  # µs
TIMED = _events([
    # seq, time, ingested, source, label, label_time, label_seq, x, c
    (1, 0, 100 * S, "landing", 10.0, 100 * S, 1, 1.0, "a"),  # labelled on arrival: known at t=0
    (2, 1 * S, 100 * S, "landing", 20.0, 103 * S, 4, 2.0, "a"),  # label landed 3 s later: known at t=4s, before event 5 (log order)
    (3, 2 * S, 100 * S, "landing", 30.0, 100 * S, 2, 4.0, "b"),
    (4, 2 * S, 100 * S, "landing", None, None, None, 8.0, "a"),  # a tie in time with event 3, after it in the log
    (5, 4 * S, 100 * S, "landing", 50.0, 100 * S, 3, 16.0, "a"),
    (6, 5_500_000, 100 * S, "landing", None, None, None, None, "a"),
])
TIMED_SPEC = parse_spec({**BASE, "history": {"features": [
    {"kind": "sum", "of": "x", "window": "2s"}, {"kind": "count", "window": "2s", "by": "c"}, {"kind": "max", "window": "2s"}]}})
TIMED_EXPECTED = {
    "hist__x_sum_2s": [None, 1, 2, 6, None, 16],  # earlier events at times in (t - 2s, t]: one exactly 2 s before is out (events 3, 5)
    "hist__label_count_2s__by_c": [0, 1, 0, 0, 1, 2],  # a label known exactly 2 s before is out (event 4)
    "hist__label_max_2s": [None, 10, None, 30, 20, 50],  # event 3 comes before its own label, event 4 after it
}


def test_a_time_window_reads_what_was_known_in_the_span_before_the_event_in_training_and_serving() -> None:
    for order in (TIMED, TIMED.iloc[::-1], TIMED.sample(frac=1, random_state=4)):
        frame = history_frame(order, TIMED_SPEC).loc[TIMED.index]
        served = _online(order, TIMED_SPEC).set_axis(order.index).loc[TIMED.index]
        for name, expected in TIMED_EXPECTED.items():
            assert _equal(frame[name], pd.Series(expected, dtype="float64")), (name, frame[name].tolist())
            assert _equal(served[name].astype("float64"), pd.Series(expected, dtype="float64")), (name, served[name].tolist())


def _online(events: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """What serving computes: each event's features from the state before it, replayed in the order things happened."""
    state = HistoryState(spec)
    events = events.reset_index(drop=True)
    features = list(spec.features)
    records = events[features].astype(object).where(events[features].notna(), None).to_dict("records")
    known = label_known_at(events)
    out: dict[int, dict[str, Any]] = {}
    for is_label, i in zip(*timeline(events)):
        if is_label:
            state.observe_label(records[i], events["label"].iloc[i], int(known[i]))
        else:
            out[int(i)] = state.features(records[i], int(events["event_time"].iloc[i]))
            state.observe_event(records[i], int(events["event_time"].iloc[i]))
    return pd.DataFrame.from_dict(out, orient="index").sort_index()


def _random_stream(n: int, spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Served and landed events, ties in time, missing values and keys, labels late and landing out of event order."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, 10**9, n))
    times[10:20] = times[10]
    served = rng.random(n) < 0.5
    ingested = np.where(served, times + rng.integers(0, 100, n), 5 * 10**9)
    labelled = rng.random(n) < 0.8
    label_time = np.where(served, ingested + rng.integers(0, 10**8, n), ingested + (rng.random(n) < 0.5) * rng.integers(0, 10**8, n))
    label_seq = np.empty(n)
    label_seq[np.argsort(label_time, kind="stable")] = np.arange(1, n + 1)
    if spec.is_classification:
        labels = pd.Series(rng.choice(spec.classes or [], n), dtype=object)
    else:
        labels = pd.Series(rng.normal(100, 30, n))
    return pd.DataFrame({
        "seq": np.arange(1, n + 1), "event_time": times, "ingested_at": ingested, "source": np.where(served, "serving", "landing"),
        "label": labels.where(labelled), "label_time": pd.Series(label_time, dtype="float64").where(labelled),
        "label_seq": pd.Series(label_seq).where(labelled), "x": pd.Series(rng.normal(size=n)).where(rng.random(n) < 0.9),
        "c": pd.Series(rng.choice(["p", "q", "r"], n), dtype=object).where(rng.random(n) < 0.9), "k": rng.integers(0, 4, n).astype(float),
    }).sample(frac=1, random_state=seed)


EVERY_KIND = [
    {"kind": "lag", "k": 3}, {"kind": "lag", "k": 2, "by": "c"}, {"kind": "mean", "n": 5, "by": "c"}, {"kind": "sum", "n": 4},
    {"kind": "count", "n": 3, "by": "k"}, {"kind": "min", "n": 6}, {"kind": "max", "n": 2, "by": "c"}, {"kind": "lag", "of": "x", "k": 2, "by": "k"},
    {"kind": "mean", "of": "x", "n": 7, "by": "c"}, {"kind": "sum", "of": "x", "n": 3}, {"kind": "count", "of": "x", "n": 4, "by": "c"},
    {"kind": "min", "of": "x", "n": 2, "by": "k"}, {"kind": "max", "of": "x", "n": 9}, {"kind": "diff", "of": "x", "by": "c"},
    {"kind": "since", "by": "c"}, {"kind": "since"}, {"kind": "events", "by": "k"},
    {"kind": "mean", "window": "10s", "by": "c"}, {"kind": "sum", "window": "1m"}, {"kind": "count", "window": "30s", "by": "k"},
    {"kind": "min", "window": "5s"}, {"kind": "max", "window": "20s", "by": "c"}, {"kind": "mean", "of": "x", "window": "5s", "by": "c"},
    {"kind": "sum", "of": "x", "window": "2s"}, {"kind": "count", "of": "x", "window": "3s", "by": "c"},
    {"kind": "min", "of": "x", "window": "10s", "by": "k"}, {"kind": "max", "of": "x", "window": "1s"},
]


# The airline probe: a series dated 1949-1960 has negative microsecond times, and a label known before 1970 read as none:
# every history column was missing in training, never in serving. The same stream 63 years earlier must agree too.
BEFORE_1970_US = -2 * 10**15


@pytest.mark.parametrize(("task", "shift_us"), [("regression", 0), ("binary", 0), ("multiclass", 0), ("regression", BEFORE_1970_US)])
def test_serving_state_and_training_frame_agree_on_a_stream_with_late_out_of_order_labels(task: str, shift_us: int) -> None:
    classes = {"binary": {"classes": ["a", "b"], "positive_class": "b"}, "multiclass": {"classes": ["a", "b", "c"]}}.get(task, {})
    kinds = [f for f in EVERY_KIND if task != "multiclass" or f.get("of") == "x" or f["kind"] in ("lag", "since", "events")]
    if task == "regression":
        kinds = [*kinds, {"kind": "diff", "by": "c"}]
    spec = parse_spec({**BASE, "task": task, **classes, "features": {"x": "numeric", "c": "categorical", "k": "numeric"},
                       "history": {"features": kinds}})
    events = _random_stream(3000, spec, seed=len(task))
    events[["event_time", "ingested_at"]] += shift_us
    events["label_time"] += shift_us
    training = history_frame(events, spec).reset_index(drop=True)
    serving = _online(events, spec)
    assert list(training.columns) == spec.history_numeric + spec.history_categorical
    for name in training.columns:
        assert training[name].notna().mean() > 0.5, name  # compared on values, not on missing ones
        assert _equal(training[name], serving[name]), name


def test_event_counts_are_over_the_last_warmup_events_so_a_restart_and_training_agree() -> None:
    """`events` counted every earlier event a side had read: training from warmup_events before its window, serving
    from its start, so a probe found 518 of 945 predictions off training's (288 events against 35). Both now count
    the key's events among the last warmup_events, which serving's rebuild at start holds exactly."""
    spec = parse_spec({**BASE, "features": {"x": "numeric", "c": "categorical", "k": "numeric"},
                       "history": {"warmup_events": 100, "features": [{"kind": "events", "by": "c"}, {"kind": "events"}, {"kind": "lag", "by": "k"}]}})
    events = _random_stream(1500, spec, seed=11).sort_values(["event_time", "seq"]).reset_index(drop=True)
    training = history_frame(events, spec)
    assert training["hist__events"].tolist()[:3] == [0, 1, 2] and training["hist__events"].max() == 100  # the whole horizon, no more
    assert training["hist__events__by_c"].max() < 60 and _equal(training["hist__events"], _online(events, spec)["hist__events"])
    restarted = HistoryState(spec)
    restarted.replay(events.iloc[900:1000])  # serving's start: the last warmup_events of the log
    records = events[list(spec.features)].astype(object).where(events[list(spec.features)].notna(), None).to_dict("records")
    served = []
    for i in range(1000, 1500):  # no labels are involved: events only
        served.append(restarted.features(records[i], int(events["event_time"].iloc[i])))
        restarted.observe_event(records[i], int(events["event_time"].iloc[i]))
    after = pd.DataFrame(served, index=range(1000, 1500))
    for name in ("hist__events__by_c", "hist__events"):
        assert _equal(after[name].astype("float64"), training[name].iloc[1000:]), name


@pytest.mark.parametrize(("apart_us", "beyond"), [(2 * 86_400 * 10**6, 1), (60 * 10**6, 0)])
def test_the_rows_that_read_beyond_servings_horizon_are_counted(apart_us: int, beyond: int) -> None:
    """The own-dataset probe: a store seen every few thousand events, `warmup_events` 20,000 and a 50,000-event window:
    training read stores serving, rebuilt from the last 20,000 events, took for new (418 of 1,506 predictions differed),
    and nothing said so. A second probe: a mean of a customer's last 5 amounts differed on 13 of 400 predictions, and
    status said every row was within the horizon: only the key's previous event was checked, not the 5th before.
    Here, with a horizon of 10 events: hour 99 comes back 30 events after it was last seen (its last label, lag 1); the
    mean of the last 3 temperatures in weather '2' at event 38 reads events 35, 30 and 5; the whole stream's mean of
    the last 24 counts reads 24 events back. Two days apart per event the 24 h window adds nothing to the horizon, a
    minute apart it holds every event before."""
    from mlplatform.domain.history import horizon_reach

    spec = load_spec(BIKE_HISTORY_SPEC)
    spec = spec.model_copy(update={"history": spec.history.model_copy(update={"warmup_events": 10})})  # type: ignore[union-attr]
    hours = [float(i % 5) for i in range(100)]
    hours[10] = hours[40] = 99.0
    weather = ["1"] * 99 + [None]
    for i in (5, 30, 35, 38):
        weather[i] = "2"
    times = np.arange(100, dtype="int64") * apart_us
    events = pd.DataFrame({"event_time": times, "hr": hours, "weathersit": weather, "temp": 0.5, "label": 1.0, "seq": np.arange(100),
                           "ingested_at": times, "label_time": times, "label_seq": np.arange(100), "source": "landing"})
    window = np.arange(100) >= 20
    by_key = {r.key: r for r in horizon_reach(events, spec, window)}
    assert set(by_key) == {"(whole stream)", "hr", "weathersit"}
    assert (by_key["hr"].rows, by_key["hr"].beyond, by_key["hr"].widest_gap) == (80, beyond, 30)
    assert (by_key["weathersit"].rows, by_key["weathersit"].beyond, by_key["weathersit"].widest_gap) == (79, 3 * beyond, 33), "events 30, 35 and 38; a missing key is no row of it"
    assert (by_key["(whole stream)"].rows, by_key["(whole stream)"].beyond, by_key["(whole stream)"].widest_gap) == (80, 80 * beyond, 24 if beyond else 99), "a minute apart, the 24 h window of labels reads back to event 0"
    horizon = "serving's horizon (warmup_events 10, or the events of the longest time window's span when more)"
    assert by_key["hr"].said(10) == (f"hr: 1 of 80 rows (1.2%) read an event of the key further back than {horizon}: serving, rebuilt from "
                                     "there, has not seen it; warmup_events 30 would cover every one" if beyond else
                                     f"hr: each of 80 rows read the key's earlier events within {horizon}")
    late = events.assign(label_time=np.where(np.arange(100) == 10, times[60], times), label_seq=np.where(np.arange(100) == 10, 100, np.arange(100)))
    late_hr = {r.key: r for r in horizon_reach(late, spec, window)}["hr"]
    assert (late_hr.rows, late_hr.widest_gap) == (79, 10), "hour 99's label was not known yet at event 40 (hour 0 skips event 40: 10 back)"
    assert horizon_reach(events, spec, np.zeros(100, bool))[0].said(10) == "(whole stream): no row's key had an earlier event"


def test_a_label_window_reading_a_late_label_of_an_event_beyond_the_horizon_is_counted() -> None:
    """The review: a label time window reads the labels known within its span, and a label landed late may be of an
    event far older than the span, which serving, rebuilt from the last `warmup_events` events, never replays. Here
    event 0's label lands 49 minutes late and is in event 50's 5-minute window: 50 events back, the horizon is 10."""
    from mlplatform.domain.history import horizon_reach

    spec = parse_spec({**BASE, "history": {"warmup_events": 10, "features": [{"kind": "mean", "window": "5m", "by": "c"}]}})
    minute = 60 * S
    times = np.arange(60, dtype="int64") * minute
    keys = ["a" if i in (0, 50) else "b" for i in range(60)]
    events = _events([(i + 1, int(times[i]), int(times[i]), "landing", float(i), int(times[i]) + (49 * minute if i == 0 else 0), i + 1, 1.0, keys[i])
                      for i in range(60)])
    assert history_frame(events, spec)["hist__label_mean_5m__by_c"].iloc[50] == 0.0, "training reads event 0's label"
    rebuilt = HistoryState(spec)
    rebuilt.replay(events.iloc[40:50])
    assert math.isnan(rebuilt.features({"x": 1.0, "c": "a"}, int(times[50]))["hist__label_mean_5m__by_c"]), "serving, rebuilt, does not"
    [reach] = horizon_reach(events, spec, np.arange(60) >= 20)
    assert (reach.key, reach.beyond, reach.widest_gap) == ("c", 1, 50), reach


def test_values_near_the_float_limit_are_missing_to_windows_on_both_sides_and_never_break_serving() -> None:
    """Two valid floats near 1.7e308 sum to inf, and inf - inf is no number: serving's exact sum raised on every later
    request of the key (a 500 that a restart rebuilt). Beyond VALUE_LIMIT a value is missing to windows and differences."""
    spec = parse_spec({**BASE, "task": "regression", "features": {"x": "numeric", "c": "categorical", "k": "numeric"},
                       "history": {"features": [*EVERY_KIND, {"kind": "diff", "by": "c"}]}})
    events = _random_stream(600, spec, seed=7)
    extreme = events.index[::20]
    events.loc[extreme, "x"] = np.resize([1.7e308, 1.7e308, -1.7e308, 1e101], len(extreme))
    events.loc[extreme[::2], "label"] = np.resize([1e300, -1.7e308], len(extreme[::2]))
    training = history_frame(events, spec).reset_index(drop=True)
    serving = _online(events, spec)
    for name in training.columns:
        assert not np.isinf(training[name].to_numpy(float)).any(), name
        assert _equal(training[name], serving[name]), name
    assert training["hist__x_sum_2s"].notna().sum() > 100  # the windows go on after the extreme values


def test_a_model_with_history_features_names_the_missing_columns(tmp_path: Path) -> None:
    from mlplatform.domain.training import TrainingConfig, train

    spec = parse_spec({**BASE, "features": {"x": "numeric", "c": "categorical", "k": "numeric"}, "history": {"features": [{"kind": "lag", "k": 2}]}})
    events = _random_stream(600, spec, seed=5).sort_values("seq").reset_index(drop=True)
    window = events.join(history_frame(events, spec))
    result = train(window, spec, TrainingConfig(min_rows=50, trials=1, seconds=30, num_boost_round=20, early_stopping_rounds=5))
    assert result.predictor.transformer.history == ["hist__label_lag1", "hist__label_lag2"]
    assert len(result.predictor.predict(window)) == len(window)
    with pytest.raises(HistoryFeaturesMissing, match=r"\['hist__label_lag1', 'hist__label_lag2'\]"):
        result.predictor.predict(events)
    with pytest.raises(HistoryFeaturesMissing, match=r"\['hist__label_lag2'\]"):
        result.predictor.predict(window.drop(columns=["hist__label_lag2"]))
    assert not math.isnan(float(result.predictor.predict(window.assign(hist__label_lag1=None)).iloc[0, 0]))  # present but missing: fine
    # a champion of history columns the window lacks (the spec changed since) offers no window since a change, and trains on
    assert change_window(Settings(), events, result.predictor, np.ones(len(events), dtype=bool)) is None


def test_serving_refuses_a_model_trained_without_the_declared_history_and_the_online_correction(tmp_path: Path) -> None:
    from mlplatform.domain.training import TrainingConfig, train
    from mlplatform.serving.records import ModelMismatch, RecordCodec
    from mlplatform.serving.service import check_supported
    from mlplatform.settings import Settings, SettingsError

    plain = parse_spec({**BASE, "features": {"x": "numeric", "c": "categorical", "k": "numeric"}})
    declared = parse_spec({**BASE, "features": {"x": "numeric", "c": "categorical", "k": "numeric"}, "history": {"features": [{"kind": "lag"}]}})
    events = _random_stream(400, plain, seed=9).sort_values("seq").reset_index(drop=True)
    predictor = train(events, plain, TrainingConfig(min_rows=50, trials=1, seconds=30, num_boost_round=20, early_stopping_rounds=5)).predictor
    with pytest.raises(ModelMismatch, match="hist__label_lag1"):
        RecordCodec(declared, predictor)
    assert RecordCodec(plain, predictor).history == []
    with pytest.raises(SettingsError, match="declares history features"):
        check_supported(Settings(state_dir=tmp_path, serve_online_correction=True), declared)


def test_a_model_worse_than_each_events_last_known_label_is_said_so_in_its_decision(tmp_path: Path) -> None:
    """The history probe: water-flow's model (hold-out RMSE 0.57) and the chicks' (62) were promoted against the floor of
    the training mean, where the last known label gave 0.28 and 22; no evaluation, report or status said so."""
    from mlplatform.domain.evaluation import no_change_baseline
    from mlplatform.domain.predictor import PREDICTION
    from mlplatform.pipeline.retraining import judge

    spec = parse_spec({"name": "flow", "task": "regression", "label": "y", "features": {"x": "numeric"},
                       "history": {"features": [{"kind": "lag", "k": 2}, {"kind": "mean", "n": 3}]}})
    trend = np.arange(200, dtype="float64")
    holdout = pd.DataFrame({"x": trend, "label": trend + 1000, "hist__label_lag1": np.r_[np.nan, trend[:-1] + 1000]})
    flat = pd.DataFrame({PREDICTION: np.full(200, 1050.0)}, index=holdout.index)  # a tree model past its training range
    judgement = judge(Settings(state_dir=tmp_path, quality_floor=1e9), spec, holdout, flat, None)
    baseline = judgement.no_change
    assert baseline is not None and not baseline.beaten and (baseline.column, baseline.rows, baseline.baseline) == ("hist__label_lag1", 199, 1.0)
    assert judgement.decision.promote, "said, not refused: the floor is the user's to set"
    assert "the model is WORSE than the no-change baseline (each event's last known label, hist__label_lag1): rmse " in judgement.decision.reason
    assert "against 1.0000 on the 199 hold-out rows where one was known" in judgement.decision.reason
    close = pd.DataFrame({PREDICTION: trend + 1000.5}, index=holdout.index)
    assert no_change_baseline(spec, holdout, close).beaten and "no-change" not in judge(Settings(state_dir=tmp_path), spec, holdout, close, None).decision.reason
    without = parse_spec({"name": "flow", "task": "regression", "label": "y", "features": {"x": "numeric"}, "history": {"features": [{"kind": "mean", "n": 3}]}})
    assert no_change_baseline(without, holdout, flat) is None, "no label lag declared: no baseline"
    assert no_change_baseline(spec, holdout.iloc[:15], flat.iloc[:15]) is None, "too few rows with a last label known"
    labels = pd.Series(["a", "b"] * 50)
    binary = parse_spec({"name": "c", "task": "binary", "label": "y", "classes": ["a", "b"], "positive_class": "b", "features": {"k": "categorical"},
                         "history": {"features": [{"kind": "lag", "by": "k"}]}})
    frame = pd.DataFrame({"k": "z", "label": labels, "hist__label_lag1__by_k": labels.shift(2)})  # every event is its key's second before
    kept = no_change_baseline(binary, frame, pd.DataFrame({PREDICTION: ["a"] * 100, "probability": 0.5}))
    assert kept is not None and kept.metric == "roc_auc" and kept.baseline == 1.0 and kept.model == 0.5 and not kept.beaten, kept
    assert no_change_baseline(binary, frame.assign(label="a", hist__label_lag1__by_k="a"), pd.DataFrame({PREDICTION: ["a"] * 100, "probability": 0.5})) is None, \
        "one class on these rows: no ROC AUC to compare"


def test_the_online_reference_reads_the_history_columns_the_platform_reads() -> None:
    """River's ARF row read the spec's features alone: beside a history spec's rows it scored as without history."""
    from mlplatform.pipeline.prequential import RiverPolicy, stream_events, with_stream_history

    spec = load_spec(BIKE_HISTORY_SPEC)
    events = with_stream_history(stream_events(spec, count=300), spec)
    record = RiverPolicy(spec, n_models=1)._records(events.iloc[[-1]])[0]
    assert {"hist__label_lag1", "hist__label_lag1__by_hr"} <= set(record) and record["hist__label_lag1"] == events["label"].iloc[-2]
    assert not any(name.startswith("hist__") for name in RiverPolicy(load_spec(REPO_ROOT / "data" / "bike_sharing.yaml"), n_models=1)._records(events.iloc[[-1]])[0])


@pytest.mark.parametrize("delay", [0, 3])
def test_the_prequential_stream_reveals_labels_late_and_the_no_change_baseline_predicts_the_last_known(delay: int) -> None:
    from mlplatform.pipeline.prequential import NoChangePolicy, label_keys, run_prequential, stream_events, with_stream_history

    spec = load_spec(BIKE_HISTORY_SPEC)
    events = with_stream_history(stream_events(spec, count=1200), spec, label_delay=delay)
    labels = events["label"].astype("float64")
    assert events["hist__label_lag1"].iloc[1 + delay :].tolist() == labels.shift(1 + delay).iloc[1 + delay :].tolist()
    assert events["hist__label_lag1"].iloc[: 1 + delay].isna().all()  # nothing known yet: no peeking at the first labels
    same_hour = events.groupby("hr")["label"].shift(1)  # the previous event at this hour, known once `delay` more events passed
    assert (events["hist__label_lag1__by_hr"].iloc[50:] == same_hour.iloc[50:]).mean() > 0.95

    policy = NoChangePolicy(spec, delay)
    result = run_prequential(events, spec, policy, warmup=200, block=100, label_delay=delay)
    served = policy.serve(events.iloc[:0])  # the state after the run holds every label, in stream order
    assert served.empty and policy.labels == events["label"].tolist()
    expected = (labels.iloc[200:] - labels.shift(1 + delay).iloc[200:]).pow(2).mean() ** 0.5
    assert result.metrics["rmse"] == pytest.approx(expected)

    assert label_keys(spec) == ["hr"]  # the fair baseline of keyed history: the last count known at this hour
    keyed = NoChangePolicy(spec, delay, "hr")
    keyed.start(events.iloc[:200])
    predicted = pd.concat([keyed.serve(events.iloc[i : i + 100]) for i in range(200, len(events), 100)])["prediction"].astype("float64")
    lag = events["hist__label_lag1__by_hr"].iloc[200:]  # the history features' own, independent implementation
    assert lag.notna().all() and predicted.tolist() == lag.tolist()


@pytest.fixture(params=["sqlite", "postgres"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[DatasetSpec], EventStore]]:
    """Opens a real event log for a spec, on each backend."""
    from mlplatform.settings import Settings
    from mlplatform.stores.eventlog_factory import open_event_log

    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened: list[EventStore] = []

    def open_for(spec: DatasetSpec) -> EventStore:
        opened.append(open_event_log(Settings(state_dir=tmp_path / "state", event_log_url=url), spec))
        return opened[-1]

    yield open_for
    for log in opened:
        log.close()


@pytest.fixture
def event_log(open_log: Callable[[DatasetSpec], EventStore]) -> EventStore:
    """A real event log on each backend, for a binary spec with label lags."""
    return open_log(LOG_SPEC)


LOG_SPEC = parse_spec({"name": "mini", "task": "binary", "label": "y", "positive_class": "1", "classes": ["0", "1"],
                       "features": {"x": "numeric", "c": "categorical"}, "history": {"features": [{"kind": "lag", "k": 2}, {"kind": "mean", "n": 3}]}})


def test_labels_landed_late_are_late_in_the_training_frame_on_both_backends(event_log: EventStore) -> None:
    events = pd.DataFrame({"event_id": ["a", "b", "c", "d"], "event_time": [0, 1, 2, 3], "label": ["1", None, "0", None],
                           "x": [1.0, 2.0, 3.0, 4.0], "c": ["p", "q", "p", "q"]})  # one µs apart
    event_log.append(events, "landing")
    time.sleep(0.01)
    assert event_log.add_labels(["d", "b"], ["0", "1"]).applied == ["d", "b"]  # ≥ 10 ms after landing: known ≥ 10 ms after their events
    read = event_log.events_between(label_times=True)
    assert read["ingested_at"].notna().all() and read["label_time"].notna().all()
    frame = history_frame(read, LOG_SPEC).set_axis(read["event_id"])
    assert _equal(frame["hist__label_lag1"], pd.Series([None, "1", "1", "0"], index=frame.index, dtype=object))  # b's label: not yet
    assert _equal(frame["hist__label_lag2"], pd.Series([None, None, None, "1"], index=frame.index, dtype=object))
    assert frame["hist__label_mean3"].tolist()[1:] == [1.0, 1.0, 0.5] and math.isnan(frame["hist__label_mean3"].iloc[0])


KEYED_LAG_SPEC = parse_spec({"name": "keyed", "task": "regression", "label": "y", "features": {"x": "numeric", "c": "categorical"},
                             "history": {"warmup_events": 3, "features": [{"kind": "lag", "by": "c"}]}})


@pytest.mark.parametrize("labels_land", ["between its two reads", "after it is built"])
def test_labels_landing_while_servings_state_is_built_are_filed_once_as_training_sees_them(open_log: Callable[[DatasetSpec], EventStore], labels_land: str) -> None:
    """The review: serving reads the log's label watermark, then the warm-up events; replaying them raised the watermark
    to their highest label_seq, so a label file landing between the two reads, labelling an event before the warm-up
    (e1) and one in it (e5), left e1's label under the watermark, never filed: serving's lag of key 'a' stayed None
    where training's is 111."""
    log = open_log(KEYED_LAG_SPEC)
    start = now_us() - 100 * S
    log.append(pd.DataFrame({"event_id": [f"e{i}" for i in range(1, 6)], "event_time": [start + i * S for i in range(1, 6)],
                             "label": [None] * 5, "x": [1.0] * 5, "c": ["a", "b", "b", "b", "b"]}), "landing.csv")
    label = lambda: log.add_labels(["e1", "e5"], [111.0, 555.0])  # noqa: E731
    watermark = log.counts().label_watermark
    if labels_land == "between its two reads":
        label()
    state = HistoryState(KEYED_LAG_SPEC)
    state.replay(log.history_warmup(now_us() + 1, 3, 0), watermark)
    if labels_land == "after it is built":
        label()
    state.catch_up(log.labels_since(state.label_watermark))  # serving's next round of following the log
    state.catch_up(log.labels_since(state.label_watermark))  # and the one after: nothing filed twice
    request = {"x": 1.0, "c": "b"}
    served = {c: state.features({**request, "c": c}, now_us())["hist__label_lag1__by_c"] for c in ("a", "b")}
    new = pd.DataFrame([{"seq": 99, "event_id": "n", "event_time": now_us(), "ingested_at": now_us(), "source": "serving", "label": None,
                         "label_seq": None, "label_time": None, **request}])
    logged = log.events_between(label_times=True)
    trained = {c: history_frame(pd.concat([logged, new.assign(c=c)], ignore_index=True), KEYED_LAG_SPEC)["hist__label_lag1__by_c"].iloc[-1] for c in ("a", "b")}
    assert served == trained == {"a": 111.0, "b": 555.0}, (served, trained)


def test_events_landed_dated_before_requests_served_earlier_are_said_by_the_features_snapshot(open_log: Callable[[DatasetSpec], EventStore], tmp_path: Path) -> None:
    """The new-user probe: a file landed after serving, dated inside the served period, changed the history features
    training computes for 244 of 900 served rows (a prediction 17.5 apart), and nothing said so. The snapshot counts
    the served rows of its window answered before an event dated earlier landed, and those landed events."""
    from mlplatform.pipeline.retraining import build_feature_snapshot

    log = open_log(KEYED_LAG_SPEC)
    start = now_us() - 1000 * S
    served = [(f"s{i}", start + i * S, "1", "5.0", None, float(i), "a") for i in range(300)]
    log.append_served(served, SERVING_SOURCE)
    log.add_labels([row[0] for row in served], [float(i) for i in range(300)])
    snapshot = lambda: build_feature_snapshot(Settings(state_dir=tmp_path / "state", min_training_rows=100), KEYED_LAG_SPEC, log, tmp_path / f"snap{now_us()}")  # noqa: E731
    assert snapshot().backdated == Backdated(0, 0, 0), "nothing landed"
    log.append(pd.DataFrame({"event_id": ["after"], "event_time": [start + 400 * S], "label": [None], "x": [1.0], "c": ["a"]}), "late.csv")
    assert snapshot().backdated == Backdated(0, 0, 0), "dated after every request: no served row read differently"
    log.append(pd.DataFrame({"event_id": ["back"], "event_time": [start + 150 * S + S // 4], "label": [None], "x": [1.0], "c": ["a"]}), "late.csv")
    found = snapshot().backdated
    assert found == Backdated(landed=1, served_rows=149, most_us=148 * S + 3 * S // 4), found  # s151 ... s299, the latest 148.75 s after it
    assert found.said().startswith("1 events landed dated before requests served before they landed (by up to 149 s): 149 served rows of this window")


def test_a_negative_label_delay_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from mlplatform.pipeline.prequential import BenchmarkError, stream_events, with_stream_history

    spec = load_spec(BIKE_HISTORY_SPEC)
    with pytest.raises(BenchmarkError, match="label delay must be ≥ 0 events, got -1"):
        with_stream_history(stream_events(spec, count=50), spec, label_delay=-1)
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_adaptation

    with pytest.raises(SystemExit) as exc:
        bench_adaptation.main(["--label-delay", "-2"])
    assert exc.value.code == 2 and "--label-delay must be ≥ 0, got -2" in capsys.readouterr().err


def test_a_label_reaches_the_serving_state_once_through_feedback_or_the_catch_up() -> None:
    spec = parse_spec({**BASE, "history": {"features": [{"kind": "count", "n": 10}, {"kind": "sum", "window": "1m"}, {"kind": "min", "window": "1m"}]}})
    row = {"x": 1.0, "c": "p"}
    landed = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["p", "q", "p"], "label": [5.0, 4.0, 7.0], "label_seq": [4, 5, 6],
                           "event_time": [100 * S, 90 * S, 110 * S], "source": ["serving", "landing", "serving"],
                           "ingested_at": [100 * S, 95 * S, 110 * S], "label_time": [112 * S, 115 * S, 120 * S]})
    for feedback_first in (True, False):
        state = HistoryState(spec)
        state.replay(_events([]).iloc[:0], label_watermark=3)
        if feedback_first:
            state.observe_label(row, 4.0, 110 * S, label_seq=5)
        assert state.catch_up(landed) == (2 if feedback_first else 3)
        state.observe_label(row, 4.0, 110 * S, label_seq=5)  # /feedback after the catch-up saw it: ignored
        state.observe_label(row, 9.0, 121 * S, label_seq=2)  # at or below the watermark: observed already
        assert state.features(row, 130 * S)["hist__label_count10"] == 3.0 and state.label_watermark == 6
        # known at 112 s, 110 s (the landed event's time plus its 20 s delay: sorted in behind the newest) and 120 s
        read = [state.features(row, at * S) for at in (130, 171, 175, 180)]
        assert [r["hist__label_sum_1m"] for r in read[:3]] == [16.0, 12.0, 7.0] and math.isnan(read[3]["hist__label_sum_1m"])
        assert [r["hist__label_min_1m"] for r in read[:3]] == [4.0, 5.0, 7.0] and math.isnan(read[3]["hist__label_min_1m"])
        state.observe_label(row, 1.0, 200 * S)  # known after the next request's time (a landed event dated ahead): not yet in it
        early, due = state.features(row, 190 * S), state.features(row, 200 * S)
        assert math.isnan(early["hist__label_sum_1m"]) and math.isnan(early["hist__label_min_1m"]) and due["hist__label_sum_1m"] == due["hist__label_min_1m"] == 1.0


def test_labels_known_at_one_time_are_read_in_the_order_they_landed_by_a_running_server_training_and_a_restart() -> None:
    """The history probe: four events of one key logged at one time (a date-only time column), their labels landed
    later in one file in the reverse order. A running server learnt them in that order (lag1 = the last in the file);
    training and a restarted server read them in the events' log order (lag1 = the last event's), and every
    prediction on such a key differed."""
    spec = parse_spec({**BASE, "history": {"features": [{"kind": "lag", "k": 2, "by": "c"}, {"kind": "diff", "by": "c"}, {"kind": "mean", "n": 3},
                                                         {"kind": "lag"}]}})
    t, landed_at, labelled_at = 10 * S, 11 * S, 20 * S
    events = _events([(i + 1, t, landed_at, "landing", 100.0 + i, labelled_at, 4 - i, float(i), "k") for i in range(4)]
                     + [(5, 30 * S, 30 * S, "serving", None, None, None, 9.0, "k")])
    training = history_frame(events, spec).iloc[4]
    running = HistoryState(spec)
    records = events[["x", "c"]].astype(object).to_dict("records")
    for i in range(4):
        running.observe_event(records[i], t)
    assert running.catch_up(events.iloc[:4].sort_values("label_seq")) == 4
    served = running.features(records[4], 30 * S)
    restarted = HistoryState(spec)
    restarted.replay(events.iloc[:4])
    after = restarted.features(records[4], 30 * S)
    assert served["hist__label_lag1__by_c"] == 100.0 and served["hist__label_lag2__by_c"] == 101.0, "the file's last label is the newest"
    for name in training.index:  # training and the restarted server read what the running one did
        assert _equal(pd.Series([training[name], after[name]], dtype="float64"), pd.Series([served[name]] * 2, dtype="float64")), name


LATE_WINDOWS = parse_spec({**BASE, "features": {"x": "numeric", "c": "categorical", "k": "numeric"}, "history": {"features": [
    {"kind": kind, "window": width, **by} for kind in ("sum", "mean", "count", "min", "max") for width, by in (("20s", {}), ("1m", {"by": "c"}))]}})
LATE_LAGS = parse_spec({**BASE, "features": {"x": "numeric", "c": "categorical", "k": "numeric"}, "history": {"features": [
    {"kind": "lag", "k": 3}, {"kind": "lag", "k": 2, "by": "c"}, {"kind": "diff", "by": "k"}, {"kind": "mean", "n": 5, "by": "c"},
    {"kind": "sum", "n": 4}, {"kind": "count", "n": 3, "by": "k"}, {"kind": "min", "n": 6}, {"kind": "max", "n": 2, "by": "c"}]}})


@pytest.mark.parametrize("spec", [LATE_WINDOWS, LATE_LAGS], ids=["time windows", "lags and last-n windows"])
def test_labels_observed_out_of_time_order_give_the_training_frames_history(spec: DatasetSpec) -> None:
    """Serving learns landed labels in the order they reach it, not in the order they became known: each event here is
    preceded by every label known by its time, shuffled, and some labels known only later (dated after the request).
    Time windows read the span of the request's time whatever the order they were filled in; lags and last-n windows
    read the last labels in the order they became known (a back-filled label sorted in, not taken as the newest)."""
    events = _random_stream(3000, spec, seed=11).sort_values("event_time", kind="stable").reset_index(drop=True)
    events["source"] = "landing"  # landed labels: known at the event's time plus their delay (0-10 s), so they arrive out of time order
    events["label_time"] = events["ingested_at"] + np.random.default_rng(12).integers(0, 10 * S, len(events))
    training = history_frame(events, spec)
    rng = np.random.default_rng(11)
    features = list(spec.features)
    records = events[features].astype(object).where(events[features].notna(), None).to_dict("records")
    known, times = label_known_at(events), events["event_time"].to_numpy()
    state, served, observed, due, late, newest = HistoryState(spec), {}, set(), [], 0, -1
    for is_label, i in zip(*timeline(events)):
        if is_label:
            due.append(i)  # known before the next event in the timeline: the state must have it by then, in any order
            continue
        at = int(times[i])
        soon = [j for j in range(max(0, i - 50), i) if at < known[j] < at + 5 * S and j not in observed]
        early = soon[:1] if rng.random() < 0.02 else []  # now and then a label dated after the request (a clock ahead)
        for j in (int(j) for j in rng.permutation([j for j in due if j not in observed] + early)):
            late += int(known[j] < newest)
            newest = max(newest, int(known[j]))
            state.observe_label(records[j], events["label"].iloc[j], int(known[j]))
            observed.add(j)
        due = []
        served[i] = state.features(records[i], at)
        state.observe_event(records[i], at)
    assert late > 500  # a fifth of the labels reached the state after a label known later than them
    serving = pd.DataFrame.from_dict(served, orient="index").sort_index()
    for name in training.columns:
        assert training[name].notna().mean() > 0.5, name
        assert _equal(training[name], serving[name].astype("float64")), name


def test_history_of_a_window_whose_labels_have_not_come_back_warns_of_nothing(tmp_path: Path) -> None:
    """`materialize` of drift_report and estimated_performance printed pandas FutureWarnings (a concatenation with columns
    missing throughout, a fill of such a column downcast) for a model with history on events without labels yet."""
    import warnings

    from mlplatform.pipeline.replay import read_source
    from mlplatform.pipeline.retraining import with_history
    from mlplatform.stores.eventlog import EventLog
    from mlplatform_tests.serving_support import canonical

    spec = load_spec(BIKE_HISTORY_SPEC)
    log = EventLog(tmp_path / "events.sqlite", spec)
    try:
        source = read_source(spec)
        log.append(canonical(source.iloc[:600], spec), "labelled.csv")
        log.append(canonical(source.iloc[600:700].assign(cnt=None), spec), "unlabelled.csv")
        everything = log.events_between()
        window = everything.iloc[650:].reset_index(drop=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            framed = with_history(log, spec, window, log.counts().label_watermark)
        assert len(framed) == 50 and framed["hist__label_lag1"].notna().all() and framed["hist__label_lag1"].iloc[-1] == float(source["cnt"].iloc[599])
    finally:
        log.close()


def test_a_series_dated_before_1970_has_its_history_in_training_and_a_column_that_never_fills_is_said(tmp_path: Path) -> None:
    """The airline probe: monthly passengers 1949-1960 landed with lags of the label; a label known before 1970 has a
    negative time, read as no label, so every history column was missing in training, and nothing said so."""
    from mlplatform.pipeline.retraining import build_feature_snapshot
    from mlplatform.stores.eventlog import EventLog

    spec = parse_spec({**BASE, "history": {"warmup_events": 50, "features": [{"kind": "lag", "k": 2}, {"kind": "lag", "by": "c"}]}})
    log = EventLog(tmp_path / "events.sqlite", spec)
    try:
        month = 30 * 24 * 3600 * S
        first = int(pd.Timestamp("1949-01-01", tz="UTC").value // 1000)
        log.append(pd.DataFrame({"event_id": [f"m{i}" for i in range(300)], "event_time": [first + i * month for i in range(300)],
                                 "label": [float(100 + i) for i in range(300)], "x": [float(i % 12) for i in range(300)],
                                 "c": [f"once{i}" for i in range(300)]}), "airline.csv")
        snapshot = build_feature_snapshot(Settings(state_dir=tmp_path / "state", min_training_rows=100), spec, log, tmp_path / "snapshot")
        train = snapshot.train
        assert train["hist__label_lag1"].notna().mean() > 0.9 and (train["hist__label_lag1"] == train["label"] - 1).sum() > 0.9 * len(train)
        assert snapshot.history_missing_in_every_row(spec) == ["hist__label_lag1__by_c"], "a key seen once has no earlier label: said, not silent"
    finally:
        log.close()
