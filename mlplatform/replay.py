"""Replaying a dataset as a stream of landing files, optionally with injected drift.

Rows get stable ids and times (from the spec's columns, or generated from the row's position), so
replaying the same slice twice produces duplicates, never new events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.spec import DatasetSpec
from mlplatform.validation import EVENT_ID, EVENT_TIME

STREAM_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
GENERATED_INTERVAL_S = 60


@dataclass(frozen=True)
class DriftScenario:
    """What to change in the replayed rows; reproducible by seed."""

    shift_numeric: dict[str, float] = field(default_factory=dict)  # column -> shift in standard deviations
    category_mix: dict[str, str] = field(default_factory=dict)  # column -> category made dominant
    category_share: float = 0.6  # share of rows given the dominant category
    flip_labels: float = 0.0  # share of labels swapped (classification) or scaled (regression)
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.shift_numeric or self.category_mix or self.flip_labels)


def read_source(spec: DatasetSpec) -> pd.DataFrame:
    """The dataset's original rows in order, with `event_id` and `event_time` columns added."""
    src = spec.source
    if src is None:
        spec.source_paths()
    assert src is not None
    frames = []
    for path in spec.source_paths():
        if src.format == "parquet":
            frames.append(pd.read_parquet(path))
        elif src.format == "jsonl":
            frames.append(pd.read_json(path, lines=True, dtype=False))
        else:
            frames.append(
                pd.read_csv(
                    path,
                    header=0 if src.header else None,
                    names=src.columns,
                    sep=src.separator,
                    na_values=src.na_values or None,
                    skipinitialspace=src.skipinitialspace,
                    comment=src.comment,
                    dtype=str,
                    keep_default_na=True,
                )
            )
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.dropna(how="all").reset_index(drop=True)
    frame[EVENT_ID] = frame[spec.id_column].astype(str) if spec.id_column else [f"{spec.name}-{i}" for i in range(len(frame))]
    if spec.time_column:
        frame[EVENT_TIME] = pd.to_datetime(frame[spec.time_column], utc=True, format="mixed").map(lambda t: t.isoformat())
    else:
        times = pd.Timestamp(STREAM_START) + pd.to_timedelta(np.arange(len(frame)) * GENERATED_INTERVAL_S, unit="s")
        frame[EVENT_TIME] = times.map(lambda t: t.isoformat())
    return frame


def inject_drift(rows: pd.DataFrame, spec: DatasetSpec, scenario: DriftScenario, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Apply the scenario to a copy of `rows` (standard deviations measured on `reference`)."""
    out = rows.copy()
    rng = np.random.default_rng(scenario.seed)
    ref = rows if reference is None else reference
    for column, sigmas in scenario.shift_numeric.items():
        values = pd.to_numeric(out[column], errors="coerce")
        std = float(pd.to_numeric(ref[column], errors="coerce").std()) or 1.0
        out[column] = (values + sigmas * std).astype(str).where(values.notna())
    for column, category in scenario.category_mix.items():
        chosen = rng.random(len(out)) < scenario.category_share
        out.loc[chosen, column] = category
    if scenario.flip_labels and spec.label in out:
        chosen = rng.random(len(out)) < scenario.flip_labels
        if spec.is_classification:
            classes = spec.classes or []
            current = out[spec.label].astype(str).str.strip().replace(spec.label_map)
            swapped = current.map(lambda c: classes[(classes.index(c) + 1) % len(classes)] if c in classes else c)
            out.loc[chosen, spec.label] = swapped[chosen]
        else:
            out.loc[chosen, spec.label] = (pd.to_numeric(out.loc[chosen, spec.label], errors="coerce") * 2).astype(str)
    return out


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
        tmp.rename(target)
        paths.append(target)
    return paths
