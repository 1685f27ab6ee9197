"""Point-in-time history features: what the event log knew about a key when an event happened.

The rule, the same in training and serving: an event sees the events before it (in event_time, then log
order) and the labels known by its event time. A label is known from
- its `label_time` for served events (their event_time and label_time are both the serving clock);
- for landed events, the event's time plus the delay after which its label reached the log
  (`label_time - ingested_at`): a label landed with its event is known right after that event, a label
  landed a day later is known a day after the event; late labels arrive late in training too.

Label-based features (lags, windows of the label) read a key's labels in the order they became known;
event-based ones (windows and lags of a numeric feature, diff, since, events) the key's earlier events.
A time window `w` of an event at time t reads the same items restricted to times in (t - w, t]: for a feature,
the key's earlier events whose event time is in it; for the label, the key's labels whose known time is in it.

Two computations of one definition: `history_frame` over a whole window (vectorised, for training) and
`HistoryState` (per-key deques, O(1) per request, for serving, rebuilt by replaying the log through the same
`timeline`). The tests hold them equal on streams with late and out-of-order labels.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from mlplatform.domain.features import ARITHMETIC_LIMIT
from mlplatform.domain.keys import SERVING_SOURCE
from mlplatform.domain.settled import settled, settled_number
from mlplatform.domain.spec import LABEL_REF, DatasetSpec, HistoryFeature
from mlplatform.domain.validation import EVENT_TIME, LABEL

US_PER_S = 1_000_000
_WHOLE_STREAM = 0  # the one key value of features declared without `by`


def _whole_numbers(column: pd.Series) -> np.ndarray:
    """A column of whole numbers (µs times, label_seq), missing ones as 0: a column of missing values alone is of object
    dtype, which pandas warns it will stop downcasting when filled (the FutureWarning a user saw)."""
    return pd.to_numeric(column).fillna(0).to_numpy(dtype="int64")


NO_LABEL = np.iinfo("int64").min  # `label_known_at` of an event without a label: -1 was 1969-12-31 23:59:59.999999


def label_known_at(events: pd.DataFrame) -> np.ndarray:
    """When each event's label became known, in event-time microseconds (NO_LABEL where there is none). Times before
    1970 are negative: read as "no label" below 0, every label of a series dated 1949-1960 was left out of its history
    features, which were all missing in training and not in serving (the airline probe)."""
    labelled = events["label_time"].notna().to_numpy() & events[LABEL].notna().to_numpy()
    label_time = _whole_numbers(events["label_time"])
    delay = label_time - _whole_numbers(events["ingested_at"])
    served = (events["source"] == SERVING_SOURCE).to_numpy()
    known = np.where(served, label_time, events[EVENT_TIME].to_numpy(dtype="int64") + delay)
    return np.where(labelled, known, NO_LABEL)


def label_known_at_one(source: str, event_time: int, ingested_at: int | None, label_time: int) -> int:
    """`label_known_at` of one labelled event, from plain values: serving files each /feedback label without a frame."""
    return label_time if source == SERVING_SOURCE else event_time + label_time - (ingested_at or 0)


def timeline(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(is_label, event position) of every item in the order they happened: each event, and each label when it became known.

    Order: time, then log order (`seq`: a label landed with its event comes right after it), an event before its own
    label, labels in the order they landed (`label_seq`). A label landed later than its event comes before every event
    of its microsecond (known at or before an event's time, it is in its past), and labels of served events after every
    one; either kind in the order labels landed: a label file applies many at one `label_time`, and serving learns them
    in that order (ordered by their events' log order, the labels of events logged at one time, landed in a file in
    another order, were read in one order by a running server and in the other by training and a restarted server:
    the history probe).
    """
    n = len(events)
    known = label_known_at(events)
    labelled = np.flatnonzero(known != NO_LABEL)
    seq = events["seq"].to_numpy(dtype="int64")
    label_seq = _whole_numbers(events["label_seq"])
    event_times = events[EVENT_TIME].to_numpy(dtype="int64")
    times = np.concatenate([event_times, known[labelled]])
    served = (events["source"] == SERVING_SOURCE).to_numpy()
    landed_later = ~served[labelled] & (known[labelled] != event_times[labelled])
    seqs = np.concatenate([seq, np.select([served[labelled], landed_later], [np.iinfo("int64").max, np.iinfo("int64").min], seq[labelled])])
    kinds = np.concatenate([np.zeros(n, dtype="int8"), np.ones(len(labelled), dtype="int8")])
    order_in_labels = np.concatenate([np.zeros(n, dtype="int64"), label_seq[labelled]])
    position = np.concatenate([np.arange(n), labelled])
    order = np.lexsort((order_in_labels, kinds, seqs, times))
    return kinds[order].astype(bool), position[order]


def _in_range(values: pd.Series) -> pd.Series:
    """Numbers as windows and differences read them: beyond ±ARITHMETIC_LIMIT missing, so no sum leaves the float range."""
    numbers = values.astype("float64")
    return numbers.where(numbers.abs() <= ARITHMETIC_LIMIT)


def _label_values(labels: pd.Series, spec: DatasetSpec) -> pd.Series:
    """Labels as windows read them: numbers (regression), 1/0 for the positive class (binary)."""
    if spec.is_classification:
        return (labels == spec.positive_class).astype("float64").where(labels.notna())
    return _in_range(labels)


def _key_codes(events: pd.DataFrame, by: str | None) -> pd.Series:
    """One group number per event (NaN where the key is missing)."""
    if by is None:
        return pd.Series(np.zeros(len(events)), index=events.index)
    codes, _ = pd.factorize(events[by].to_numpy(dtype=object))
    return pd.Series(np.where(codes < 0, np.nan, codes), index=events.index)


def _window(values: pd.Series, keys: pd.Series, n: int, stat: str) -> pd.Series:
    """`stat` of the non-missing values among each item's last n of its key (itself included)."""
    if stat == "count":
        values = values.notna().astype("float64").where(keys.notna())
        stat = "sum"
    rolled = getattr(values.groupby(keys).rolling(n, min_periods=1), stat)()
    rolled = rolled.reset_index(level=0, drop=True).reindex(values.index)
    return rolled.pipe(settled) if stat in ("sum", "mean") else rolled


class _Slices(BaseIndexer):
    """Rolling windows given as slices [start, end) of the values (both ascending, so pandas updates them incrementally)."""

    def get_window_bounds(self, num_values: int = 0, min_periods: int | None = None, center: bool | None = None,
                          closed: str | None = None, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.start, self.end


def _time_window(values: np.ndarray, data_at: np.ndarray, query_at: np.ndarray, keys: np.ndarray, times: np.ndarray, width: int, stat: str) -> np.ndarray:
    """At each query item: `stat` of the non-missing `values` (at items `data_at`) of its key that came before it, at times in (t - width, t].

    Items are timeline positions (times ascend along them). Data and queries are sorted by key, keeping timeline
    order, so each query's window is one slice [start, end) of the data: end by the query's position, start by
    the first time after t - width (searches on key-major composites); pandas' rolling then runs over those slices.
    """
    data_keys, query_keys = keys[data_at], keys[query_at]
    keep = ~np.isnan(data_keys)
    values, data_at, data_keys = values[keep], data_at[keep], data_keys[keep].astype("int64")
    data_times = times[data_at]  # ascending, as the timeline
    new = np.concatenate([[True], data_times[1:] != data_times[:-1]]) if len(data_times) else np.zeros(0, bool)
    moments, rank = data_times[new], np.cumsum(new) - 1  # distinct data times, and each data item's among them
    order = np.argsort(data_keys, kind="stable")
    values, data_at, data_keys, rank = values[order], data_at[order], data_keys[order], rank[order]
    queries = np.flatnonzero(~np.isnan(query_keys))
    queries = queries[np.argsort(query_keys[queries], kind="stable")]
    keyed, asked = query_keys[queries].astype("int64"), query_at[queries]
    span = len(times) + 1
    end = np.searchsorted(data_keys * span + data_at, keyed * span + asked)
    ranks = len(moments) + 1
    after = np.searchsorted(moments, times[asked] - width, side="right")  # the rank of the first data time inside the window
    start = np.minimum(np.searchsorted(data_keys * ranks + rank, keyed * ranks + after), end)
    least = 1  # fewer present values than this: missing (a count of none is 0)
    if stat == "count":
        values, stat, least = (~np.isnan(values)).astype("float64"), "sum", 0
    n = len(values)  # the series is the data, then one empty slot per query: the queries' windows are slices of the data
    slices = _Slices(start=np.concatenate([np.zeros(n, "int64"), start]), end=np.concatenate([np.zeros(n, "int64"), end]))
    rolled = getattr(pd.Series(np.concatenate([values, np.full(len(queries), np.nan)])).rolling(slices, min_periods=least), stat)()
    out = np.full(len(query_at), np.nan)
    out[queries] = rolled.to_numpy()[n:]
    return settled(out) if stat in ("sum", "mean") else out


def _recent_count(keys: pd.Series, horizon: int) -> pd.Series:
    """At each row: how many of the `horizon` rows before it have its key (NaN where the key is missing).

    Rows are sorted by (key, position); a row's count is its place in that order minus the place of the first row of
    its key at or after position - horizon."""
    codes = keys.to_numpy(dtype="float64")
    present = np.flatnonzero(~np.isnan(codes))
    order = np.lexsort((present, codes[present]))
    positions, key_codes = present[order], codes[present][order].astype("int64")
    span = len(codes) + 1
    composite = key_codes * span + positions
    first = np.searchsorted(composite, key_codes * span + np.maximum(positions - horizon, 0))
    out = np.full(len(codes), np.nan)
    out[positions] = np.arange(len(positions)) - first
    return pd.Series(out, index=keys.index)


def _event_feature(feature: HistoryFeature, rows: pd.DataFrame, keys: pd.Series, horizon: int) -> dict[str, pd.Series]:
    """Columns of one event-based feature, for rows in time order (each sees the key's earlier rows); `events` counts
    them among the `horizon` rows before (`warmup_events`), the past both training and serving read."""
    grouped_time = rows[EVENT_TIME].astype("float64").groupby(keys)
    if feature.kind == "since":
        return {feature.names[0]: (rows[EVENT_TIME] - grouped_time.shift(1)) / US_PER_S}
    if feature.kind == "events":
        return {feature.names[0]: _recent_count(keys.reset_index(drop=True), horizon).set_axis(keys.index)}
    assert feature.source is not None
    values = _in_range(rows[feature.source])
    previous = values.groupby(keys).shift(1)
    if feature.kind == "lag":
        return {name: values.groupby(keys).shift(i + 1) for i, name in enumerate(feature.names)}
    if feature.kind == "diff":
        return {feature.names[0]: values - previous}
    assert feature.n is not None
    return {feature.names[0]: _window(previous, keys, feature.n, feature.kind)}


def _label_feature(feature: HistoryFeature, labels: pd.Series, keys: pd.Series, spec: DatasetSpec) -> dict[str, pd.Series]:
    """Columns of one label-based feature at each label item, over the key's labels known so far (this one included)."""
    if feature.kind == "lag":
        return {name: labels.groupby(keys).shift(i) for i, name in enumerate(feature.names)}
    numbers = _label_values(labels, spec)
    if feature.kind == "diff":
        return {feature.names[0]: numbers - numbers.groupby(keys).shift(1)}
    assert feature.n is not None
    return {feature.names[0]: _window(numbers, keys, feature.n, feature.kind)}


WHOLE_STREAM = "(whole stream)"  # the key of the history features declared without `by`


@dataclass(frozen=True)
class HorizonReach:
    """Of one key (`by`; None: the whole stream) of the history features, over a training window: its rows that read an
    event of the key from further back than serving's horizon. Training reads such an event (its past reaches back to
    the window's start and `warmup_events` before); serving, whose state is rebuilt from the last `warmup_events`
    events (or the longest time window's span, when it holds more) at its start and when files land, has not seen
    it, and its lags, windows and `since` then differ from training's (the own-dataset probe: 418 of 1,506 predictions
    of a store id with 3,000 values, each store seen every few thousand events, `warmup_events` 20,000). A row reads as
    far back as its deepest feature of the key: the 5th previous event for a mean of the last 5 values, the event of
    the oldest of the last 2 labels known for a lag k=2 of the label (a second probe: a mean of 5 amounts per customer
    differed on 13 of 400 predictions while only the previous event was checked, and all was said to be within)."""

    by: str | None
    rows: int  # the window's rows with the key present and an earlier event of it
    beyond: int  # of those, the rows that read an event of the key beyond the horizon
    widest_gap: int  # events from a row back to the oldest event it reads, at most: a warmup_events that covers them all

    @property
    def key(self) -> str:
        """The key as status names it: its column, or the whole stream's name."""
        return self.by if self.by is not None else WHOLE_STREAM

    def said(self, warmup_events: int) -> str:
        key = self.key
        horizon = f"serving's horizon (warmup_events {warmup_events}, or the events of the longest time window's span when more)"
        if not self.rows:
            return f"{key}: no row's key had an earlier event"
        if not self.beyond:
            return f"{key}: each of {self.rows} rows read the key's earlier events within {horizon}"
        return (f"{key}: {self.beyond} of {self.rows} rows ({self.beyond / self.rows:.1%}) read an event of the key further back "
                f"than {horizon}: serving, rebuilt from there, has not seen it; warmup_events {self.widest_gap} would "
                "cover every one")


def _depth(feature: HistoryFeature) -> int:
    """How many of its key's latest values (events, or labels known) a feature of the last n values or k lags reads;
    0 for time windows (the horizon covers an event window's span; a label window's labels are looked at apart) and
    for `events`, a count over the horizon itself."""
    if feature.window is not None or feature.kind == "events":
        return 0
    if feature.kind == "lag":
        return feature.k or 1
    if feature.kind in ("diff", "since"):
        return 2 if feature.kind == "diff" and feature.source == LABEL_REF else 1  # a label's diff: this label and the one before
    return feature.n or 0


def _oldest_read(values: pd.Series, keys: pd.Series, depth: int) -> np.ndarray:
    """At each item: the least of `values` over its key's last `depth` items (itself included); NaN without a key."""
    rolled = values.groupby(keys).rolling(depth, min_periods=1).min()
    return rolled.reset_index(level=0, drop=True).reindex(values.index).to_numpy()


def horizon_reach(events: pd.DataFrame, spec: DatasetSpec, window: np.ndarray) -> list[HorizonReach]:
    """`HorizonReach` of each key the history features read by, over `events` (oldest first, with their labels, as
    `history_frame` takes them) for the rows `window` marks (a boolean per event). A row's horizon is `warmup_events`,
    or the events of the longest time window's span before it when more, as serving's start reads."""
    assert spec.history is not None
    positions = np.arange(len(events))
    times = events[EVENT_TIME].to_numpy(dtype="int64")
    horizon = np.maximum(spec.history.warmup_events, positions - np.searchsorted(times, times - spec.history.longest_window_us, side="right"))
    is_label, position = timeline(events) if any(f.source == LABEL_REF for f in spec.history_features) else (np.zeros(0, bool), np.zeros(0, "int64"))
    labels, rows = np.flatnonzero(is_label), np.flatnonzero(~is_label)  # timeline items, read by every key's label features
    item_times = np.where(is_label, label_known_at(events)[position], times[position]) if len(position) else np.zeros(0, "int64")
    out = []
    for by in dict.fromkeys(f.by for f in spec.history_features):
        declared = [f for f in spec.history_features if f.by == by]
        event_depth = max((_depth(f) for f in declared if f.source != LABEL_REF), default=0)
        label_depth = max((_depth(f) for f in declared if f.source == LABEL_REF), default=0)
        label_span = max((f.window_us or 0 for f in declared if f.source == LABEL_REF), default=0)  # the widest window of the labels
        if not event_depth and not label_depth and not label_span:
            continue
        keys = _key_codes(events, by)
        oldest = np.full(len(events), np.nan)  # per event: the position of the oldest earlier event its features read
        if event_depth:
            earlier = pd.Series(positions.astype("float64")).groupby(keys.to_numpy()).shift(1)
            oldest = np.fmin(oldest, _oldest_read(earlier, keys.reset_index(drop=True), event_depth))
        item_keys = keys.to_numpy()[position]
        if label_depth:
            at_label = _oldest_read(pd.Series(position[labels].astype("float64")), pd.Series(item_keys[labels]), label_depth)
            latest = pd.Series(np.where(is_label, np.arange(len(position)), -1), dtype="float64").where(~np.isnan(item_keys))
            latest = latest.groupby(item_keys).cummax().to_numpy()  # at each item: its key's latest label item so far
            after = rows[np.nan_to_num(latest[rows], nan=-1) >= 0]  # the rows of a key with a label known before them
            read = np.full(len(position), np.nan)
            read[labels] = at_label
            by_label = np.full(len(events), np.nan)
            by_label[position[after]] = read[latest[after].astype("int64")]
            oldest = np.fmin(oldest, by_label)
        if label_span:  # a label known within the span may be of an event far older than it: landed late
            in_span = np.full(len(events), np.nan)
            in_span[position[rows]] = _time_window(position[labels].astype("float64"), labels, rows, item_keys, item_times, label_span, "min")
            oldest = np.fmin(oldest, in_span)
        gap = positions - oldest
        known = window & ~np.isnan(gap)
        beyond = known & (gap > horizon)
        out.append(HorizonReach(by, int(known.sum()), int(beyond.sum()), int(np.nanmax(gap[known])) if known.any() else 0))
    return out


@dataclass(frozen=True)
class Backdated:
    """Events landed after serving had answered requests dated later than them: in training's timeline they come before
    those requests, whose history features serving computed without them, so the window's rows of those requests are
    trained on history features other than the ones served (the new-user probe: 244 of 900 served rows, a prediction
    17.5 apart, and no word). Landing events as they happen avoids it (README, "Two clocks")."""

    landed: int  # events landed dated before a request served before they landed
    served_rows: int  # the window's served events answered before an event dated earlier landed
    most_us: int  # the longest such back-dating: a served request's time minus the landed event's

    def said(self) -> str:
        return (f"{self.landed} events landed dated before requests served before they landed (by up to {self.most_us / 1e6:.0f} s): "
                f"{self.served_rows} served rows of this window may have been answered with history features other than "
                "the ones they train with (land events as they happen, README: Two clocks)")


def backdated(events: pd.DataFrame, window: np.ndarray) -> Backdated:
    """What `Backdated` says, over `events` (with source, event_time and ingested_at) for the served rows `window` marks."""
    served = (events["source"] == SERVING_SOURCE).to_numpy()
    if not served.any() or served.all():
        return Backdated(0, 0, 0)
    times, ingested = events[EVENT_TIME].to_numpy("int64"), events["ingested_at"].fillna(0).to_numpy("int64")
    landed = ~served
    # Per served event: the earliest time among events landed after it (suffix minimum over landing order).
    by_ingest = np.argsort(ingested[landed], kind="stable")
    landed_at, landed_times = ingested[landed][by_ingest], times[landed][by_ingest]
    earliest_after = np.append(np.minimum.accumulate(landed_times[::-1])[::-1], np.iinfo("int64").max)
    later = earliest_after[np.searchsorted(landed_at, ingested[served], side="right")]
    affected = later < times[served]
    # Per landed event: the latest time among requests served before it (prefix maximum over serving order).
    by_serve = np.argsort(ingested[served], kind="stable")
    served_at, served_times = ingested[served][by_serve], times[served][by_serve]
    latest_before = np.insert(np.maximum.accumulate(served_times), 0, np.iinfo("int64").min)
    ahead = latest_before[np.searchsorted(served_at, ingested[landed], side="left")]
    behind = ahead > times[landed]
    most = int((ahead - times[landed])[behind].max()) if behind.any() else 0
    return Backdated(int(behind.sum()), int((affected & window[served]).sum()), most)


def history_frame(events: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Every declared history column for every event (index as `events`), each computed at that event's time.

    `events` holds all events of the span, labelled or not, with seq, event_time, ingested_at, source, label,
    label_seq, label_time and the features; start it early enough to warm the windows (`history.warmup_events`).
    """
    declared = spec.history_features
    index = events.index
    events = events.reset_index(drop=True)
    is_label, position = timeline(events)
    is_row = ~is_label
    columns = list(dict.fromkeys([EVENT_TIME, LABEL, *(f.source for f in declared if f.source not in (None, LABEL_REF)), *(f.by for f in declared if f.by)]))
    items = events[columns].iloc[position].reset_index(drop=True)
    rows, labels = items[is_row], items.loc[is_label, LABEL]
    label_ordinal = np.cumsum(is_label) - 1  # at each item: how many labels came before it or at it, minus one
    keys = {by: _key_codes(items, by) for by in dict.fromkeys(f.by for f in declared)}
    seen: dict[str | None, np.ndarray] = {}  # per key: each row's latest label item of its key (-1: none), as a label ordinal
    times = np.where(is_label, label_known_at(events)[position], events[EVENT_TIME].to_numpy(dtype="int64")[position])
    out: dict[str, np.ndarray] = {}
    for feature in declared:
        item_keys = keys[feature.by]
        row_keys = item_keys[is_row]
        if feature.window_us is not None:
            data = is_label if feature.source == LABEL_REF else is_row
            read = _label_values(items[LABEL], spec) if feature.source == LABEL_REF else _in_range(items[feature.source])
            at = np.flatnonzero(data)
            timed = _time_window(read.to_numpy()[at], at, np.flatnonzero(is_row), item_keys.to_numpy(), times, feature.window_us, feature.kind)
            computed = {feature.names[0]: pd.Series(timed)}
        elif feature.source != LABEL_REF:
            computed = _event_feature(feature, rows, row_keys, spec.history.warmup_events if spec.history else 0)
        else:
            if feature.by not in seen:
                last = pd.Series(np.where(is_label, np.arange(len(items)), -1), dtype="float64").where(item_keys.notna())
                latest = np.nan_to_num(last.groupby(item_keys).cummax().to_numpy()[is_row], nan=-1).astype("int64")
                seen[feature.by] = np.where(latest >= 0, label_ordinal[np.maximum(latest, 0)], -1)
            ordinal = seen[feature.by]
            computed = {}
            for name, col in _label_feature(feature, labels, item_keys[is_label], spec).items():
                values = col.to_numpy()[np.maximum(ordinal, 0)] if len(col) else np.full(len(ordinal), np.nan, dtype=col.dtype)
                values = values.astype(object if values.dtype == object else "float64")
                values[ordinal < 0] = 0.0 if feature.kind == "count" else np.nan  # no label known yet: a count of none
                values[row_keys.isna().to_numpy()] = np.nan
                computed[name] = pd.Series(values)
        for name, col in computed.items():
            values = col.to_numpy()
            placed = np.empty(len(events), dtype=object if values.dtype == object else "float64")
            placed[position[is_row]] = values
            out[name] = placed
    return pd.DataFrame(out, index=index)[spec.history_numeric + spec.history_categorical]


def _stat(values: list[float], stat: str) -> float:
    present = [v for v in values if v == v]
    if stat == "count":
        return float(len(present))
    if not present:
        return math.nan
    if stat == "sum":
        return settled_number(math.fsum(present))
    if stat == "mean":
        return settled_number(math.fsum(present) / len(present))
    return float(min(present) if stat == "min" else max(present))


def _number(value: Any) -> float:
    """A request's value as windows and differences read it (as `_in_range`)."""
    number = math.nan if value is None else float(value)
    return number if abs(number) <= ARITHMETIC_LIMIT else math.nan


def _add_exact(partials: list[float], value: float) -> None:
    """Add `value` (or take it away, when negative) to the exact sum kept as non-overlapping `partials` (Shewchuk,
    as in `math.fsum`): a running window sum that never drifts, whose `math.fsum` is the window's own."""
    i = 0
    for other in partials:
        if abs(value) < abs(other):
            value, other = other, value
        high = value + other
        low = other - (high - value)
        if low:
            partials[i] = low
            i += 1
        value = high
    partials[i:] = [value]


def _item_time(item: tuple[int, float]) -> int:
    return item[0]


class _TimeWindow:
    """One time-window feature of one key: its (time, value) items within `width` µs of the clock, in time order, with
    their running exact sum and present count, and for min/max the candidates (a monotonic deque).

    Adding and expiring are O(1) amortised, adding out of time order O(log n) plus a shift; items expire once older than
    `width` before the latest request, or before the newest item when that is older (the clock moves forward: later
    requests read at that time or after; an item dated after the clock, a label landed with a future time, expires nothing).
    """

    def __init__(self, width: int, stat: str) -> None:
        self.width, self.stat = width, stat
        self.times: deque[int] = deque()
        self.values: deque[float] = deque()
        self.partials: list[float] = []
        self.present = 0
        self.best: deque[tuple[int, float]] = deque()  # min/max: (time, value), values ascending (min) or descending (max)

    def _beaten(self, kept: float, value: float) -> bool:
        return kept >= value if self.stat == "min" else kept <= value

    def _push_best(self, at: int, value: float) -> None:
        while self.best and self._beaten(self.best[-1][1], value):
            self.best.pop()
        self.best.append((at, value))

    def _sort_in_best(self, at: int, value: float) -> None:
        """A candidate arriving out of time order, placed after the candidates of its time or before: O(log n) to find
        its place instead of rebuilding the deque. Beaten by the first later candidate (the maximum, or minimum, of
        everything after it), it changes nothing; otherwise it beats the earlier candidates just before its place that
        it outlives, as `_push_best` would have, had it come in order."""
        best = self.best
        place = bisect.bisect_right(best, at, key=_item_time)
        if place < len(best) and self._beaten(value, best[place][1]):
            return
        first = place
        while first and self._beaten(best[first - 1][1], value):
            first -= 1
        for _ in range(place - first):
            del best[first]
        best.insert(first, (at, value))

    def add(self, at: int, value: float, clock: int) -> None:
        """One item, `clock` being the latest request's time; a time before the newest (a landed event's label, known at
        its event time plus delay) is sorted in."""
        times, values = self.times, self.values
        if not times or at >= times[-1]:
            times.append(at)
            values.append(value)
            if value == value and self.stat in ("min", "max"):
                self._push_best(at, value)
        else:
            place = bisect.bisect_right(times, at)
            times.insert(place, at)
            values.insert(place, value)
            if value == value and self.stat in ("min", "max"):
                self._sort_in_best(at, value)
        if value == value:
            self.present += 1
            _add_exact(self.partials, value)
        self.expire(min(times[-1], clock) - self.width)

    def expire(self, bound: int) -> None:
        """Forget the items at or before `bound`."""
        times, values = self.times, self.values
        while times and times[0] <= bound:
            times.popleft()
            value = values.popleft()
            if value == value:
                self.present -= 1
                _add_exact(self.partials, -value)
        while self.best and self.best[0][0] <= bound:
            self.best.popleft()

    def read(self, at: int) -> float:
        """The statistic over the items at times in (at - width, at]."""
        if self.times and self.times[-1] > at:  # items dated after the request (landed with future times): count them out
            return _stat([v for t, v in zip(self.times, self.values) if at - self.width < t <= at], self.stat)
        self.expire(at - self.width)
        if self.stat == "count":
            return float(self.present)
        if self.stat in ("min", "max"):
            return self.best[0][1] if self.best else math.nan
        if not self.present:
            return math.nan
        total = math.fsum(self.partials)
        return settled_number(total if self.stat == "sum" else total / self.present)


@dataclass
class _KeyState:
    """What one key value remembers: its last event time, its events among the last `warmup_events`, recent values per column and recent labels
    (as given, and as the numbers windows read), and its time windows (by the feature's place in the spec)."""

    last_time: int | None = None
    count: int = 0
    values: dict[str, deque[float]] = field(default_factory=dict)
    labels: deque[Any] = field(default_factory=deque)
    numbers: deque[float] = field(default_factory=deque)
    label_times: deque[int] = field(default_factory=deque)  # when each of `labels` became known: they are kept in that order
    label_size: int = 1  # the last labels a feature reads: those known by the clock beyond them are forgotten
    windows: dict[int, _TimeWindow] = field(default_factory=dict)

    def add_label(self, label: Any, number: float, known_us: int, clock: int) -> None:
        """A label in the order labels became known, as training's timeline has them: one that reaches serving after
        labels known later (a back-filled event's, known at its event time) is sorted in behind them, not taken as the
        newest (a probe's back-fill changed the label lags of every key until a restart). `clock`: the latest request's
        time, which later requests never go back before; labels dated after it (landed with a time ahead) are kept
        beside the last `label_size` known by then, so a request reads the last ones known at its own time."""
        labels, numbers, times = self.labels, self.numbers, self.label_times
        place = len(times) if not times or known_us >= times[-1] else bisect.bisect_right(times, known_us)
        labels.insert(place, label)
        numbers.insert(place, number)
        times.insert(place, known_us)
        for _ in range(self._known(clock) - self.label_size):
            labels.popleft()
            numbers.popleft()
            times.popleft()

    def _known(self, at: int) -> int:
        """How many of the kept labels were known at `at`: all but those dated after it (landed with a time ahead)."""
        times = self.label_times
        return len(times) if not times or times[-1] <= at else bisect.bisect_right(times, at)

    def known_labels(self, at: int) -> Sequence[Any]:
        return list(self.labels)[: self._known(at)]

    def known_numbers(self, at: int) -> Sequence[float]:
        return list(self.numbers)[: self._known(at)]


@dataclass(frozen=True)
class _Plan:
    """One declared feature with its properties read once (a request must not recompute names)."""

    kind: str
    by: str | None
    names: list[str]
    source: str | None
    label: bool
    n: int
    window_us: int | None
    slot: int  # its place in the spec: the key of its time window in `_KeyState.windows`


class HistoryState:
    """Per-key history kept by serving: `features` for a request, `observe_event` after it, `observe_label` on /feedback."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        declared = spec.history_features
        self.keys = list(dict.fromkeys(f.by for f in declared))
        self._plans = [_Plan(f.kind, f.by, f.names, f.source, f.source == LABEL_REF, f.n or 0, f.window_us, i) for i, f in enumerate(declared)]
        self._tables: dict[str | None, dict[Any, _KeyState]] = {by: {} for by in self.keys}
        self._value_len: dict[str | None, dict[str, int]] = {by: {} for by in self.keys}
        self._label_len: dict[str | None, int] = dict.fromkeys(self.keys, 1)
        self._timed = {by: [p for p in self._plans if p.window_us is not None and p.by == by] for by in self.keys}
        for f in declared:
            if f.window_us is not None:
                continue
            length = f.k or f.n or (2 if f.kind == "diff" and f.source == LABEL_REF else 1)
            if f.source == LABEL_REF:
                self._label_len[f.by] = max(self._label_len[f.by], length)
            elif f.source is not None:
                lengths = self._value_len[f.by]
                lengths[f.source] = max(lengths.get(f.source, 0), length)
        self._empty = {by: self._new_state(by) for by in self.keys}  # what a key never seen reads
        # `events` counts a key's events among the last `warmup_events`: the keys of those events, oldest first.
        self._counted = list(dict.fromkeys(f.by for f in declared if f.kind == "events"))
        self._horizon = spec.history.warmup_events if spec.history is not None else 0
        self._recent: deque[tuple[Any, ...]] = deque()
        self._task, self._positive = spec.task.value, spec.positive_class
        self.label_watermark = 0  # every label up to this label_seq has been observed
        self._clock = -(2**63)  # the latest request's (or replayed event's) time: what time windows may forget
        self._observed_above: set[int] = set()  # label_seqs above the watermark observed already (through /feedback)

    @property
    def keys_kept(self) -> int:
        """Key values with a state, over every key column (the whole stream counts as one): what memory grows with."""
        return sum(len(table) for table in self._tables.values())

    def _label_number(self, label: Any) -> float:
        """A label as windows read it (as `_label_values`): 1/0 for the positive class, the number for regression, none for multiclass."""
        if self._task == "binary":
            return 1.0 if label == self._positive else 0.0
        return math.nan if self._task == "multiclass" else _number(label)

    @staticmethod
    def _key(row: Mapping[str, Any], by: str | None) -> Any:
        """The key value of a row (None when missing: such events neither read nor write history)."""
        if by is None:
            return _WHOLE_STREAM
        value = row.get(by)
        return None if value is None or value != value else value

    def _new_state(self, by: str | None) -> _KeyState:
        values = {col: deque(maxlen=n) for col, n in self._value_len[by].items()}
        size = self._label_len[by]
        windows = {p.slot: _TimeWindow(p.window_us or 0, p.kind) for p in self._timed[by]}
        return _KeyState(values=values, label_size=size, windows=windows)

    def _table_state(self, by: str | None, key: Any) -> _KeyState:
        state = self._tables[by].get(key)
        if state is None:
            state = self._tables[by][key] = self._new_state(by)
        return state

    def features(self, row: Mapping[str, Any], time_us: int) -> dict[str, Any]:
        """The history columns of a request made at `time_us` (nothing is added: time windows only forget what left their span); missing values are None."""
        out: dict[str, Any] = {}
        for plan in self._plans:
            key = self._key(row, plan.by)
            if key is None:
                out.update(dict.fromkeys(plan.names))
                continue
            state = self._tables[plan.by].get(key) or self._empty[plan.by]
            self._one(plan, row, time_us, state, out)
        return out

    @staticmethod
    def _one(plan: _Plan, row: Mapping[str, Any], time_us: int, state: _KeyState, out: dict[str, Any]) -> None:
        kind, names = plan.kind, plan.names
        if kind == "since":
            out[names[0]] = None if state.last_time is None else (time_us - state.last_time) / US_PER_S
        elif kind == "events":
            out[names[0]] = float(state.count)
        elif kind == "lag":
            if not plan.label:
                recent = state.values[plan.source or ""]
            else:  # the labels known at the request's time: all of them but in a clock-skewed stream (inlined: per request)
                recent = state.labels if not state.label_times or state.label_times[-1] <= time_us else state.known_labels(time_us)
            size = len(recent)
            for i, name in enumerate(names):
                value = recent[-i - 1] if size > i else None
                out[name] = None if value != value else value
        elif plan.window_us is not None:
            out[names[0]] = state.windows[plan.slot].read(time_us)
        else:
            if not plan.label:
                numbers = state.values[plan.source or ""]
            else:
                numbers = state.numbers if not state.label_times or state.label_times[-1] <= time_us else state.known_numbers(time_us)
            if kind == "diff":
                size = len(numbers)
                if plan.label:
                    out[names[0]] = numbers[-1] - numbers[-2] if size > 1 else None
                else:
                    out[names[0]] = _number(row.get(plan.source or "")) - numbers[-1] if size else None
            else:
                window = list(numbers)[-plan.n :] if len(numbers) > plan.n else list(numbers)
                out[names[0]] = _stat(window, kind)

    def observe_event(self, row: Mapping[str, Any], time_us: int) -> None:
        """An event happened at `time_us` (after its features were computed)."""
        self._clock = max(self._clock, time_us)
        if self._counted:
            self._count_in(row)
        for by in self.keys:
            key = self._key(row, by)
            if key is None:
                continue
            state = self._table_state(by, key)
            state.last_time = time_us
            for col, values in state.values.items():
                values.append(_number(row.get(col)))
            for plan in self._timed[by]:
                if not plan.label:
                    state.windows[plan.slot].add(time_us, _number(row.get(plan.source or "")), self._clock)

    def _count_in(self, row: Mapping[str, Any]) -> None:
        """Count the event in under its keys, and the one that leaves the last `warmup_events` out (as `_recent_count`)."""
        keys = tuple(self._key(row, by) for by in self._counted)
        for by, key in zip(self._counted, keys):
            if key is not None:
                self._table_state(by, key).count += 1
        self._recent.append(keys)
        if len(self._recent) > self._horizon:
            for by, key in zip(self._counted, self._recent.popleft()):
                if key is not None:
                    self._tables[by][key].count -= 1

    def observe_label(self, row: Mapping[str, Any], label: Any, known_us: int, label_seq: int | None = None) -> None:
        """The label of an event with these features became known at `known_us` (`label_known_at`); with its `label_seq`,
        only once (see `catch_up`)."""
        if label_seq is not None:
            if label_seq <= self.label_watermark or label_seq in self._observed_above:
                return
            self._observed_above.add(label_seq)
        for by in self.keys:
            key = self._key(row, by)
            if key is not None:
                state = self._table_state(by, key)
                number = self._label_number(label)
                state.add_label(label, number, known_us, self._clock)
                for plan in self._timed[by]:
                    if plan.label:
                        state.windows[plan.slot].add(known_us, number, self._clock)

    def catch_up(self, landed: pd.DataFrame) -> int:
        """Observe labels that landed outside /feedback (label files), given in label_seq order after `label_watermark`
        with their label times; returns how many were new."""
        if landed.empty:
            return 0
        features = [c for c in self.spec.features if c in landed]
        records = landed[features].astype(object).where(landed[features].notna(), None).to_dict("records")
        known = label_known_at(landed).tolist()
        new = 0
        for record, label, at, seq in zip(records, landed[LABEL].tolist(), known, landed["label_seq"].astype("int64").tolist()):
            if seq not in self._observed_above and seq > self.label_watermark:
                self.observe_label(record, label, at)
                new += 1
            self.label_watermark = max(self.label_watermark, seq)
        self._observed_above = {seq for seq in self._observed_above if seq > self.label_watermark}
        return new

    def replay(self, events: pd.DataFrame, label_watermark: int | None = None) -> None:
        """Rebuild from the log: every event of `events` and its label up to `label_watermark` (the log's, read before
        `events`; None: every label of `events`, read with them), in the order they happened; `catch_up` files the labels
        after it, each once. Before, the watermark rose to the replayed labels' highest: a label file landing between
        the two reads labelled events both in and before the replayed ones, and the labels of those before fell under
        it, never filed (the review)."""
        if label_watermark is None:
            label_watermark = int(events["label_seq"].max()) if events["label_seq"].notna().any() else 0
        self.label_watermark = max(self.label_watermark, label_watermark)
        events = events.reset_index(drop=True)
        is_label, position = timeline(events)
        columns = [c for c in self.spec.features if c in events]
        records = events[columns].astype(object).where(events[columns].notna(), None).to_dict("records")
        times = events[EVENT_TIME].to_numpy(dtype="int64").tolist()
        known = label_known_at(events).tolist()
        labels = events[LABEL].tolist()
        filed = (events["label_seq"].fillna(0) <= label_watermark).tolist()
        for label_item, i in zip(is_label.tolist(), position.tolist()):
            if not label_item:
                self.observe_event(records[i], times[i])
            elif filed[i]:
                self.observe_label(records[i], labels[i], known[i])
