"""Replaying a dataset as a stream: to landing files or to the serving API, paced, with injected drift.

Rows get stable ids and times (from the spec's columns, or generated from the row's position), so
replaying the same slice twice produces duplicates, never new events. Everything random (shuffled
order, which rows a drift scenario touches) is drawn from a seed, so a replay can be repeated exactly.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from tqdm import tqdm

from mlplatform.domain.features import normalise_category
from mlplatform.domain.spec import DatasetSpec, FeatureType
from mlplatform.domain.timeformat import ISO, format_that_reads, iso_text, offset_event_times, parse_event_times
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, generated_keys, parse_numeric

STREAM_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
STREAM_START_US = int(STREAM_START.timestamp()) * 1_000_000
GENERATED_INTERVAL_S = 60


@dataclass(frozen=True)
class DriftScenario:
    """What to change in the replayed rows; reproducible by seed."""

    shift_numeric: dict[str, float] = field(default_factory=dict)  # column -> shift in standard deviations
    category_mix: dict[str, str] = field(default_factory=dict)  # column -> category made dominant
    category_share: float = 0.6  # share of rows given the dominant category
    flip_labels: float = 0.0  # share of labels swapped (classification) or doubled (regression)
    flip_where: dict[str, str] = field(default_factory=dict)  # only rows where column == value: a learnable concept change
    seed: int = 0
    ramp: bool = False  # the amounts grow linearly over the drifted rows, from nothing to the full amounts: a drift that never settles

    @property
    def active(self) -> bool:
        return bool(self.shift_numeric or self.category_mix or self.flip_labels)

    def check(self, spec: DatasetSpec) -> None:
        """Refuse scenarios that name unknown columns or impossible amounts, naming what is wrong."""
        for column, sigmas in self.shift_numeric.items():
            if spec.features.get(column) is not FeatureType.numeric:
                raise ReplayError(f"shift: {column!r} is not a numeric feature of {spec.name} (numeric: {spec.numeric_features})")
            if not math.isfinite(sigmas):  # nan or inf wrote values landing then made missing or quarantined
                raise ReplayError(f"shift: {column}={sigmas} is not a finite number of standard deviations")
        for column in self.category_mix:
            if spec.features.get(column) is not FeatureType.categorical:
                raise ReplayError(f"category: {column!r} is not a categorical feature of {spec.name} (categorical: {spec.categorical_features})")
        for column in self.flip_where:
            if column not in spec.features:
                raise ReplayError(f"flip-where: {column!r} is not a feature of {spec.name}")
        if not 0.0 < self.category_share <= 1.0:
            raise ReplayError(f"category share must be in (0, 1], got {self.category_share}")
        if not 0.0 <= self.flip_labels <= 1.0:
            raise ReplayError(f"flip-labels must be in [0, 1], got {self.flip_labels}")
        if self.flip_where and not self.flip_labels:
            raise ReplayError("flip-where needs flip-labels > 0 (the share of matching rows whose label changes)")


class ReplayError(ValueError):
    """A replay that cannot run as asked; the message says which option is wrong."""


def _read_file(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    src = spec.source
    assert src is not None
    if src.format == "parquet":
        return pd.read_parquet(path)
    if src.format == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(
        path,
        header=0 if src.header else None,
        names=src.columns,
        sep=src.separator,
        # pandas' spellings of a missing value and the source's own; only the spec's and the source's where the spec says
        # how its CSVs spell one (`csv_missing`), as landing then reads them
        na_values=[*(spec.csv_missing or []), *src.na_values] or None,
        skipinitialspace=src.skipinitialspace,
        comment=src.comment,
        dtype=str,
        keep_default_na=spec.csv_missing is None,
    )


def _join_label_files(features: pd.DataFrame, label_files: dict[str, pd.DataFrame], spec: DatasetSpec, notes: list[str] | None) -> pd.DataFrame:
    """`features` with the labels of label-only files joined by `id_column`; anything that cannot be joined stops the replay,
    except (with `notes` to say so in) labels of ids no feature row has, which landing quarantines and a replay leaves out."""
    id_col = spec.id_column
    for name, frame in label_files.items():
        if id_col is None or id_col not in frame:
            raise ReplayError(
                f"source.files: {name} has the label {spec.label!r} and no feature column, so it is a label file; joining it to the "
                f"features needs id_column in the spec, a column of both files (its columns: {list(frame.columns)})"
            )
    assert id_col is not None
    labels = pd.concat([f[[id_col, spec.label]] for f in label_files.values()], ignore_index=True)
    labels = pd.DataFrame({id_col: labels[id_col].astype(str).str.strip(), spec.label: normalise_category(labels[spec.label])}).dropna().drop_duplicates()
    repeated = labels[id_col][labels[id_col].duplicated()]
    if len(repeated):
        raise ReplayError(f"source.files: label files give {len(repeated)} ids different labels, e.g. {repeated.iloc[0]!r}")
    by_id = labels.set_index(id_col)[spec.label]
    ids = features[id_col].astype(str).str.strip()
    unknown = by_id.index.difference(ids)
    if len(unknown):
        found = f"source.files: {len(unknown)} ids in the label files match no row of the feature files, e.g. {list(unknown[:3])}"
        if notes is None:
            raise ReplayError(found)
        notes.append(f"{found}: left out, as landing quarantines them")
    joined = ids.map(by_id)
    if spec.label in features:
        inline = normalise_category(features[spec.label])
        clash = (inline.notna() & joined.notna() & (inline != joined)).fillna(False)
        if clash.any():
            raise ReplayError(f"source.files: {int(clash.sum())} rows have a label in the feature files and a different one in the label files, e.g. id {ids[clash].iloc[0]!r}")
        joined = inline.where(inline.notna(), joined)
    return features.assign(**{spec.label: joined})


def stream_start_us(rows: int) -> int:
    """When a replayed stream without a time column starts: STREAM_START, or earlier for a stream so long (over ~480k rows
    a minute apart) that it would end in the future, where landing quarantines its events (landing_max_future_seconds)."""
    return min(STREAM_START_US, int(time.time()) * 1_000_000 - max(rows - 1, 0) * GENERATED_INTERVAL_S * 1_000_000)


UNUSABLE_SHARE_MAX = 0.5  # rows whose time does not parse, beyond which the time_format is wrong rather than the rows


def read_source(spec: DatasetSpec, notes: list[str] | None = None) -> pd.DataFrame:
    """The dataset's original rows in order, with `event_id` and `event_time` columns added.

    A file with the label but no feature column is a label file (as in landing): its labels are joined to
    the other files' rows by `id_column`, and rows it does not label stay unlabelled. With `notes`, rows landing would
    quarantine for what a replay needs (a time that does not parse, when most do; a label of an id no row has) are left
    out and said there, instead of stopping the replay: a user's export has a few of them.
    """
    frames = {str(path): _read_file(path, spec) for path in spec.source_paths()}
    label_files = {name: f for name, f in frames.items() if spec.label in f and not set(spec.features) & set(f.columns)}
    feature_frames = [f for name, f in frames.items() if name not in label_files]
    if not feature_frames:
        raise ReplayError(f"source.files: every file is a label file (the label and no feature column); the features {list(spec.features)} are in none")
    frame = pd.concat(feature_frames, ignore_index=True)
    frame = frame.assign(**{c: None for c in spec.optional if c not in frame.columns})  # left out of every file: missing, as landing reads it
    if label_files:
        frame = _join_label_files(frame, label_files, spec, notes)
    frame = frame.dropna(how="all").reset_index(drop=True)
    ids, times = generated_keys(len(frame), spec.name, stream_start_us(len(frame)), GENERATED_INTERVAL_S * 1_000_000)
    frame[EVENT_ID] = frame[spec.id_column].astype(str) if spec.id_column else ids
    if spec.time_column:
        micros = _source_times(frame, spec, notes)
        frame = frame[micros.notna().to_numpy()].reset_index(drop=True)
        times = micros.dropna().to_numpy(dtype="int64")
    frame[EVENT_TIME] = iso_text(times)
    return frame


def _source_times(frame: pd.DataFrame, spec: DatasetSpec, notes: list[str] | None) -> pd.Series:
    """The time column in the spec's time_format (plus its time_offset), as microseconds; a row that does not fit stops
    the replay, naming it, or (with `notes`, when most rows fit) is NA, said in `notes`."""
    assert spec.time_column is not None
    column = _source_column(frame, spec.time_column, "time_column")
    micros = parse_event_times(column, spec.event_time_format)
    other = format_that_reads(column[micros.isna()], spec.event_time_format) if micros.isna().any() else None
    _refuse_missing(frame, spec.time_column, micros, f"time_column {spec.time_column!r}",
                    f"missing, not a timestamp or out of range in time_format {spec.event_time_format!r}",
                    f"set time_format in the spec to how the column is written{f' (they read as time_format {other!r})' if other else ''}", notes)
    if spec.time_offset is not None:
        offset = spec.time_offset
        timed = micros.notna().to_numpy()  # rows already left out are not counted again
        micros = offset_event_times(micros, _source_column(frame, offset.column, "time_offset.column"), offset.unit)
        _refuse_missing(frame[timed], offset.column, micros[timed], f"time_offset.column {offset.column!r}",
                        f"missing or not a number of {offset.unit}, or make a time out of range", "every row needs a number there", notes,
                        left_out=int((~timed).sum()))
    return micros


def _source_column(frame: pd.DataFrame, column: str, field: str) -> pd.Series:
    if column not in frame:
        raise ReplayError(f"{field} {column!r} is not a column of the source files (columns: {[c for c in frame.columns if c not in (EVENT_ID, EVENT_TIME)]})")
    return frame[column]


def _refuse_missing(frame: pd.DataFrame, column: str, micros: pd.Series, field: str, problem: str, hint: str, notes: list[str] | None,
                    left_out: int = 0) -> None:
    """A ReplayError naming the first rows whose time is NA, if any: the hint where most are (the format is wrong), or
    where only some are, that those rows are at fault; with `notes`, only a note when most rows have a time (`left_out`:
    rows an earlier check left out already, which count towards "most")."""
    bad = micros.isna().to_numpy()
    if bad.any():
        values = frame[column]
        examples = ", ".join(f"row {values.index[i] + 1}: {str(values.iloc[i])!r}" for i in np.flatnonzero(bad)[:3])
        found = f"{field}: {int(bad.sum())} of {len(values)} rows are {problem} ({examples})"
        if (int(bad.sum()) + left_out) / (len(values) + left_out) > UNUSABLE_SHARE_MAX:
            raise ReplayError(f"{found}; {hint}")
        if notes is None:
            raise ReplayError(f"{found}; the others are: those rows are at fault, which landing quarantines (fix them, or leave them out)")
        notes.append(f"{found}: left out, as landing quarantines them")


def inject_drift(rows: pd.DataFrame, spec: DatasetSpec, scenario: DriftScenario, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Apply the scenario to a copy of `rows` (standard deviations measured on `reference`)."""
    out = rows.copy()
    rng = np.random.default_rng(scenario.seed)
    ref = rows if reference is None else reference
    amount = np.arange(1, len(out) + 1) / max(len(out), 1) if scenario.ramp else np.ones(len(out))
    for column, sigmas in scenario.shift_numeric.items():
        values = pd.to_numeric(out[column], errors="coerce")
        std = float(pd.to_numeric(ref[column], errors="coerce").std())
        std = std if np.isfinite(std) and std > 0 else 1.0
        out[column] = (values + sigmas * std * amount).astype(str).where(values.notna())
    for column, category in scenario.category_mix.items():
        chosen = rng.random(len(out)) < scenario.category_share * amount
        out.loc[chosen, column] = category
    if scenario.flip_labels and spec.label in out:
        chosen = rng.random(len(out)) < scenario.flip_labels * amount
        for column, value in scenario.flip_where.items():
            chosen &= (out[column].astype("string").str.strip() == value).fillna(False).to_numpy()
        if spec.is_classification:
            classes = spec.classes or []
            current = out[spec.label].astype(str).str.strip().replace(spec.label_map)
            swapped = current.map(lambda c: classes[(classes.index(c) + 1) % len(classes)] if c in classes else c)
            out.loc[chosen, spec.label] = swapped[chosen]
        else:
            out.loc[chosen, spec.label] = (pd.to_numeric(out.loc[chosen, spec.label], errors="coerce") * 2).astype(str)
    return out


def _publish(tmp: Path, target: Path) -> Path:
    """Give the written `tmp` its name in the landing folder without replacing a file there (one not landed yet, written
    by an earlier replay of the same rows): the first free of `target`, `<stem>-2<suffix>`, `<stem>-3<suffix>`, ..."""
    name, attempt = target, 1
    while True:
        try:
            os.link(tmp, name)  # unlike rename, fails where the name is taken
            tmp.unlink()
            return name
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links (some FUSE, SMB, vfat mounts): look, then rename
            if not name.exists():
                tmp.rename(name)
                return name
        attempt += 1
        name = target.with_name(f"{target.stem}-{attempt}{target.suffix}")


def write_batches(rows: pd.DataFrame, spec: DatasetSpec, landing_dir: Path, batch_size: int, fmt: str = "csv", with_labels: bool = True, prefix: str = "replay") -> list[Path]:
    """Write `rows` to the landing folder in files of `batch_size` rows; returns the files written."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    columns = [EVENT_ID, EVENT_TIME, *spec.features]
    if with_labels:
        columns.append(spec.label)
    paths = []
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start : start + batch_size][columns]
        first, last = batch[EVENT_ID].iloc[0], batch[EVENT_ID].iloc[-1]
        tmp = landing_dir / f".{prefix}-{first}-{last}.{fmt}.tmp"
        target = landing_dir / f"{prefix}-{first}-{last}.{fmt}"
        if fmt == "parquet":
            batch.to_parquet(tmp, index=False)
        elif fmt == "jsonl":
            batch.to_json(tmp, orient="records", lines=True)
        else:
            batch.to_csv(tmp, index=False)
        paths.append(_publish(tmp, target))
    return paths


ORDERS = ("time", "shuffled")


def order_rows(rows: pd.DataFrame, order: str, seed: int) -> pd.DataFrame:
    """Rows by event time (stable: ties keep file order) or shuffled reproducibly by `seed`."""
    if order == "time":
        times = parse_event_times(rows[EVENT_TIME], ISO)
        return rows.iloc[np.argsort(times.to_numpy(dtype="int64", na_value=np.iinfo("int64").max), kind="stable")].reset_index(drop=True)
    if order == "shuffled":
        return rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    raise ReplayError(f"order must be one of {ORDERS}, got {order!r}")


def select_stream(
    rows: pd.DataFrame,
    spec: DatasetSpec,
    *,
    order: str = "time",
    seed: int = 0,
    start: int = 0,
    count: int = 0,
    scenario: DriftScenario | None = None,
    drift_from: int = 0,
) -> pd.DataFrame:
    """The slice to replay: ordered, cut to [start, start+count), the scenario applied from row `drift_from` of the slice on.

    Standard deviations for numeric shifts are measured on the ordered rows before the drift point, so
    the same command always injects the same change.
    """
    if start < 0 or count < 0 or drift_from < 0:
        raise ReplayError(f"start, count and drift-from must be ≥ 0 (got {start}, {count}, {drift_from})")
    if start >= len(rows):
        raise ReplayError(f"start {start} is past the end of {spec.name} ({len(rows)} rows)")
    ordered = order_rows(rows, order, seed)
    chunk = ordered.iloc[start : start + count if count else None].reset_index(drop=True)
    if scenario is not None:
        scenario.check(spec)
    if scenario is None or not scenario.active:
        return chunk
    if drift_from >= len(chunk):
        raise ReplayError(f"drift-from {drift_from} is past the end of the replayed slice ({len(chunk)} rows)")
    before = ordered.iloc[: start + drift_from]
    drifted = inject_drift(chunk.iloc[drift_from:], spec, scenario, reference=before if len(before) > 1 else chunk)
    return pd.concat([chunk.iloc[:drift_from], drifted], ignore_index=True)


def canonical_labels(rows: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
    """Labels as the platform stores them (compared as text like landing does, label_map applied, numbers for regression); NaN where absent."""
    if spec.is_classification:
        text = normalise_category(rows[spec.label]).replace(spec.label_map)
        return text.where(text.isin(spec.classes or []))
    return pd.to_numeric(rows[spec.label], errors="coerce")


def json_records(rows: pd.DataFrame, spec: DatasetSpec) -> list[dict[str, Any]]:
    """Feature values as a client would send them: numbers for numeric features, strings otherwise, null when missing."""
    out: dict[str, list[Any]] = {}
    for name in spec.features:
        if spec.features[name] is FeatureType.numeric:
            # Parsed as landing parses a file's text (Arrow, correctly rounded): pandas' own parser can be one ulp off, and the
            # same rows replayed to landing later (their labels) were then quarantined as events with other values.
            values, _ = parse_numeric(rows[name])
            out[name] = [None if np.isnan(v) else float(v) for v in values]
        else:
            text = rows[name].astype("string").str.strip()
            out[name] = [None if pd.isna(v) else str(v) for v in text]
    return [dict(zip(out, values)) for values in zip(*out.values())]


class Pacer:
    """Holds a replay to `rate` events per second (None: as fast as possible)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.started = clock()

    def wait(self, sent: int) -> None:
        if self.rate is not None:
            time.sleep(max(0.0, self.started + sent / self.rate - self.clock()))


class LabelQueue:
    """Labels waiting for their delay to pass, earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, object]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, event_ids: list[str], labels: list[object]) -> None:
        for event_id, label in zip(event_ids, labels):
            heapq.heappush(self._heap, (due, self._seq, event_id, label))
            self._seq += 1

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> tuple[list[str], list[object]]:
        ids: list[str] = []
        labels: list[object] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, event_id, label = heapq.heappop(self._heap)
            ids.append(event_id)
            labels.append(label)
        return ids, labels


class LandingSink:
    """Event files (labels inline, or none) and separate late-label files, written atomically into the landing folder."""

    def __init__(self, spec: DatasetSpec, landing_dir: Path, fmt: str = "csv", prefix: str = "replay") -> None:
        self.spec, self.landing_dir, self.fmt, self.prefix = spec, landing_dir, fmt, prefix
        self.label_files = 0
        self.labels_sent = 0  # in label files published: what a replay stopped part way says of its labels

    def send_events(self, batch: pd.DataFrame, inline_labels: bool) -> list[str]:
        write_batches(batch, self.spec, self.landing_dir, len(batch), fmt=self.fmt, with_labels=inline_labels, prefix=self.prefix)
        return batch[EVENT_ID].astype(str).tolist()

    def send_labels(self, event_ids: list[str], labels: list[object]) -> None:
        frame = pd.DataFrame({EVENT_ID: event_ids, self.spec.label: labels})
        self.label_files += 1
        name = f"{self.prefix}-labels-{event_ids[0]}-{event_ids[-1]}-{self.label_files}.csv"
        tmp = self.landing_dir / f".{name}.tmp"
        frame.to_csv(tmp, index=False)
        _publish(tmp, self.landing_dir / name)
        self.labels_sent += len(event_ids)


RECONNECT_SECONDS = 60.0  # how long a replay waits for a serving API that refuses connections (restarting) before it stops


class ApiSink:
    """POST /predict with a batch of records, then POST /feedback per label (bearer `token` if the service wants one).

    A connection refused (serving restarting) is tried again for up to `reconnect_seconds`: such a request never reached
    the service, so sending it again serves nothing twice. Before, the replay stopped at the first one, and the labels
    still waiting for their delay were never sent (the operator probe: 210 of them)."""

    def __init__(self, spec: DatasetSpec, url: str, token: str | None = None, timeout: float = 30.0, reconnect_seconds: float = RECONNECT_SECONDS) -> None:
        if not url.startswith(("http://", "https://")):
            raise ReplayError(f"the serving URL must start with http:// or https://, got {url!r}")
        if not 0 <= reconnect_seconds < math.inf:
            raise ReplayError(f"reconnect seconds must be a finite number ≥ 0, got {reconnect_seconds}")
        self.spec = spec
        self.url = url.rstrip("/")
        self.reconnect_seconds = reconnect_seconds
        self.labels_sent = 0  # /feedback answered: what a replay stopped part way says of its labels
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        deadline, pause = time.monotonic() + self.reconnect_seconds, 0.25
        while True:
            try:
                response = self.client.post(path, json=payload)
                break
            except httpx.ConnectError as exc:
                if time.monotonic() + pause > deadline:
                    raise ReplayError(f"cannot reach the serving API at {self.url}{path}: {exc}, for {self.reconnect_seconds:g} s "
                                      "(is `mlplatform serve` running?)") from None
                time.sleep(pause)
                pause = min(2 * pause, 5.0)
            except httpx.HTTPError as exc:  # it may have reached the service: not sent again
                raise MaybeDelivered(f"cannot reach the serving API at {self.url}{path}: {exc} (is `mlplatform serve` running?)") from None
        if response.status_code >= 400:
            raise ReplayError(f"{self.url}{path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def send_events(self, batch: pd.DataFrame, inline_labels: bool) -> list[str]:
        """Each record with its event id, as landing keeps replay's ids: a label file keyed by the dataset's ids finds
        the served events, and the same rows sent again are refused (409), not served twice under new ids."""
        key = self.spec.id_column or EVENT_ID
        records = [{**record, key: event_id} for record, event_id in zip(json_records(batch, self.spec), batch[EVENT_ID].astype(str))]
        body = self._post("/predict", {"records": records})
        results = body.get("predictions", body.get("results")) if isinstance(body, dict) else body
        if not isinstance(results, list) or len(results) != len(batch):
            raise ReplayError(f"{self.url}/predict returned {len(results) if isinstance(results, list) else 'no'} results for {len(batch)} records")
        return [str(r["event_id"]) for r in results]

    def send_labels(self, event_ids: list[str], labels: list[object]) -> None:
        for event_id, label in zip(event_ids, labels):
            self._post("/feedback", {"event_id": event_id, "label": label})
            self.labels_sent += 1

    def close(self) -> None:
        self.client.close()


class MaybeDelivered(ReplayError):
    """The connection broke after the request was sent: the service may have taken it."""


class ReplayStopped(ReplayError):
    """A replay that stopped part way (the service gone, a disk full): how far it got, for the operator to go on."""

    def __init__(self, cause: str, *, sent: int, total: int, in_flight: int, labels_unsent: int) -> None:
        super().__init__(cause)
        self.sent, self.total, self.in_flight, self.labels_unsent = sent, total, in_flight, labels_unsent

    def resume(self, start: int, drift_from: int = 0, ramp: bool = False) -> str:
        """What was sent, and the options that go on from there, for a stream that began at row `start` (and drifted from
        its row `drift_from`, ramped or not); "" where nothing was sent or may have been."""
        if not (self.sent or self.in_flight or self.labels_unsent):
            return ""
        said = [f"stopped after sending {self.sent} of {self.total} events" + (f" (rows {start}–{start + self.sent - 1} of the ordered stream)" if self.sent else "")]
        if self.labels_unsent:
            said.append(f"{self.labels_unsent} labels of sent events were not sent (a resumed replay does not send them)")

        def options(skipped: int) -> str:
            moved = f" --drift-from {max(0, drift_from - skipped)}" if drift_from else ""  # the drift starts at the same dataset row
            return f"--start {start + skipped} --count {self.total - skipped}{moved}"

        said.append(f"to go on, run the same command with {options(self.sent)}")
        if self.in_flight:
            said.append(f"if that is refused as already known (409), the {self.in_flight} events sent as the connection broke reached "
                        f"the service: {options(self.sent + self.in_flight)}")
        if ramp:
            said.append("a --ramp grows again from nothing over the rows left, not as it would have")
        return "; ".join(said)


@dataclass(frozen=True)
class ReplaySummary:
    events: int
    labels: int
    seconds: float


def check_pacing(batch_size: int, rate: float | None, label_delay: float | None) -> None:
    """Refuse impossible pacing before any row is read or sent."""
    if batch_size < 1:
        raise ReplayError(f"batch size must be ≥ 1, got {batch_size}")
    if rate is not None and not (0 < rate < math.inf):  # written so that nan is refused too
        raise ReplayError(f"rate must be a finite number > 0 events/s, got {rate}")
    if label_delay is not None and not (0 <= label_delay < math.inf):
        raise ReplayError(f"label delay must be a finite number ≥ 0 seconds, got {label_delay}")


def _batches(rows: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(rows), size):
        yield rows.iloc[start : start + size]


def run_stream(
    rows: pd.DataFrame,
    spec: DatasetSpec,
    sink: LandingSink | ApiSink,
    *,
    batch_size: int,
    rate: float | None = None,
    label_delay: float | None = None,
    with_labels: bool = True,
    progress: bool = True,
) -> ReplaySummary:
    """Send `rows` in batches at `rate`; labels inline (`label_delay` None) or `label_delay` seconds after their event."""
    check_pacing(batch_size, rate, label_delay)
    pacer = Pacer(rate)
    queue = LabelQueue()
    inline = with_labels and label_delay is None
    labels = canonical_labels(rows, spec) if spec.label in rows else None
    sent = delivered = queued = in_flight = 0  # queued: labels put in the queue; in_flight: events of the request being sent

    def deliver(now: float) -> int:
        ids, values = queue.pop_due(now)
        if ids:
            sink.send_labels(ids, values)
        return len(ids)

    try:
        with tqdm(total=len(rows), unit="event", desc=f"replay {spec.name}", disable=not progress) as bar:
            for batch in _batches(rows, batch_size):
                pacer.wait(sent)
                delivered += deliver(time.monotonic())
                in_flight = len(batch)
                ids = sink.send_events(batch, inline_labels=inline and labels is not None)
                in_flight = 0
                if with_labels and label_delay is not None and labels is not None:
                    known = labels.loc[batch.index].notna().to_numpy()
                    values = [v.item() if isinstance(v, np.generic) else v for v in labels.loc[batch.index][known]]
                    queue.push(time.monotonic() + label_delay, [i for i, k in zip(ids, known) if k], values)
                    queued += len(values)
                sent += len(batch)
                bar.update(len(batch))
            while len(queue):
                time.sleep(max(0.0, (queue.next_due() or 0.0) - time.monotonic()))
                delivered += deliver(time.monotonic())
    except (ReplayError, OSError) as exc:
        raise ReplayStopped(str(exc), sent=sent, total=len(rows), in_flight=in_flight if isinstance(exc, MaybeDelivered) else 0,
                            labels_unsent=queued - sink.labels_sent) from exc
    if inline and labels is not None:
        delivered = int(labels.notna().sum())
    return ReplaySummary(events=sent, labels=delivered, seconds=time.monotonic() - pacer.started)
