"""The one feature transformer: fitted on a training window, shipped inside the model, reused by serving.

Numeric columns become float64 (missing stays NaN, LightGBM routes it), categoricals become pandas
categoricals over the categories seen at fit time (an unseen value becomes missing and is counted),
and crossed columns join two categoricals into one. Because the fitted state is plain JSON stored
with the model, training and serving cannot disagree.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MAX_CATEGORIES = 1000
# Valid numbers beyond ±this break the statistics that sum or square them (two near 1.7e308 sum to inf, inf - inf is no
# number): history windows read them as missing, drift reports clip them. Within it, any realistic count of values stays finite.
ARITHMETIC_LIMIT = 1e100
CROSS_SEPARATOR = " × "


ARROW_STRING = pd.StringDtype("pyarrow")


class HistoryFeaturesMissing(ValueError):
    """A model trained with history features was called without them."""


def require_history(raw: pd.DataFrame, names: list[str]) -> None:
    """Refuse a frame without the history columns a model was trained with, naming them."""
    missing = [n for n in names if n not in raw.columns]
    if missing:
        raise HistoryFeaturesMissing(
            f"the model needs the history features {missing}: compute them with mlplatform.domain.history.history_frame "
            "over the event log (or call the serving API, which fills them)"
        )


def as_text(values: pd.Series) -> pd.Series:
    """Stripped Arrow-backed strings (vectorised in C++, unlike object strings); blanks become NA."""
    text = (values if values.dtype == ARROW_STRING else values.astype(ARROW_STRING)).str.strip()
    return text.mask(text.eq("").fillna(True))


def normalise_category(values: pd.Series) -> pd.Series:
    """Categorical values as stripped strings; integral floats lose their '.0' so 1 and 1.0 match, in a float column and
    among text in a mixed one (JSON lines with both), as serving spells a JSON number."""
    text = as_text(values)
    if pd.api.types.is_float_dtype(values):
        integral = np.isfinite(values) & (values.abs() < 2**53) & (values % 1 == 0)
        text[integral] = values[integral].astype("int64").astype(ARROW_STRING)
    elif values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty", "boolean", "integer"):
        integral = values.map(lambda v: isinstance(v, float) and v.is_integer() and abs(v) < 2**53).to_numpy(dtype=bool)
        # By position, as a Series: a plain list over an all-true mask read as an index (only integer scalar arrays…).
        text[integral] = pd.Series([str(int(v)) for v in values[integral]], index=text.index[integral], dtype=text.dtype)
    return text


_INTEGRAL_TEXT = re.compile(r"([+-]?\d+)\.0*")


def spelling_key(text: str) -> str:
    """One key for the spellings one value takes across formats and sources: a CSV export writes `true` or `12.0` where
    JSON and Parquet give true and 12.0, spelled "True" and "12"; one source composes "é" (NFC) where another decomposes
    it (NFD: macOS, some exports). Only values unseen as spelled are looked up this way, so known ones cost nothing."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    lower = text.lower()
    if lower in ("true", "false"):
        return lower
    integral = _INTEGRAL_TEXT.fullmatch(text)
    return integral.group(1) if integral else text


_RESPELLED = r"[^\x00-\x7F]|^[+-]?\d+\.0*$|^(?i:true|false)$"  # the values spelling_key may change: the others are their own key


def respelled(values: pd.Series) -> dict[str, str]:
    """Each distinct value of `values` that `spelling_key` changes, with its key. Only the values Arrow's regex engine
    matches are keyed in Python: keyed one by one, an id-like column's million values took a 2M-row fit from 2.8 s to
    12.4 s (the review)."""
    text = values.astype(ARROW_STRING)
    matched = text[text.str.contains(_RESPELLED, regex=True).to_numpy(dtype=bool, na_value=False)]
    return {value: key for value in pd.unique(matched) if (key := spelling_key(value)) != value}


def _texts(raw: pd.DataFrame, names: list[str]) -> dict[str, pd.Series]:
    """Each of the categorical columns `names` of `raw` as text (`normalise_category`), missing throughout where absent."""
    return {name: normalise_category(raw[name]) if name in raw else pd.Series(pd.NA, index=raw.index, dtype=ARROW_STRING) for name in names}


def _commonest(counts: pd.Series) -> list[str]:
    """The MAX_CATEGORIES commonest of `counts`' values (value_counts, commonest first), sorted."""
    return sorted(str(c) for c in counts.index[:MAX_CATEGORIES])


def _one_per_value(values: pd.Series) -> list[str]:
    """The MAX_CATEGORIES commonest values (sorted), each value once however spelled, in its commonest spelling."""
    counts = values.value_counts(dropna=True)
    text = pd.Series(counts.index, dtype=ARROW_STRING)
    changes = respelled(text)
    if not changes:  # every value its own key: nothing to merge
        return _commonest(counts)
    text = text.astype(object)
    merged = pd.DataFrame({"value": text, "key": text.replace(changes), "count": counts.to_numpy()}).groupby("key", sort=False).agg(
        value=("value", "first"), count=("count", "sum"))  # first: the commonest spelling (counts are in descending order)
    return sorted(merged.sort_values("count", ascending=False, kind="stable")["value"].iloc[:MAX_CATEGORIES])


@dataclass
class FeatureTransformer:
    numeric: list[str]
    categorical: list[str]
    crosses: list[tuple[str, str]] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # of numeric/categorical: computed from the event log, never sent
    _spellings: dict[str, dict[str, str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def cross_names(self) -> list[str]:
        return [f"{a}{CROSS_SEPARATOR}{b}" for a, b in self.crosses]

    @property
    def output_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.cross_names]

    @property
    def input_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def _categorical_frame(self, raw: pd.DataFrame) -> dict[str, pd.Series]:
        return self._crossed({name: self._as_known(name, values) for name, values in _texts(raw, self.categorical).items()})

    def _crossed(self, cols: dict[str, pd.Series]) -> dict[str, pd.Series]:
        """`cols` (the categorical columns as known) with the crosses of their values."""
        for (a, b), name in zip(self.crosses, self.cross_names):
            cols[name] = (cols[a] + CROSS_SEPARATOR + cols[b]).where(cols[a].notna() & cols[b].notna())
        return cols

    def _as_known(self, name: str, values: pd.Series) -> pd.Series:
        """Values not among the fitted categories, in the spelling of the one they are (see spelling_key): the model was
        fitted on `true` from a CSV export, a JSON request sends true. Unchanged before fitting."""
        known = self.categories.get(name)
        if not known:
            return values
        unseen = values.notna() & ~values.isin(known)
        if not unseen.any():
            return values
        spellings = self.spellings(name)
        # An unseen value is a known one when spelling_key changes it to a category's key, or it is the key of a category
        # spelled otherwise (1 for a fitted 1.0).
        aliased = {key: category for key, category in spellings.items() if key != category}
        lookup = {**aliased, **{value: spellings[key] for value, key in respelled(values[unseen]).items() if key in spellings}}
        if not lookup:
            return values
        values = values.copy()
        values[unseen] = values[unseen].replace(lookup)
        return values

    def spellings(self, name: str) -> dict[str, str]:
        """The fitted categories of column `name` by their spelling_key (keys two categories share are left out)."""
        if name not in self._spellings:
            keys = [spelling_key(c) for c in self.categories[name]]
            shared = {k for k in keys if keys.count(k) > 1}
            self._spellings[name] = {k: c for k, c in zip(keys, self.categories[name]) if k not in shared}
        return self._spellings[name]

    def fit(self, raw: pd.DataFrame) -> "FeatureTransformer":
        """One category per value however its rows spell it (`spelling_key`), in its commonest spelling: a CSV landing's
        `0.0` and a request's `0` were two categories, the value's rows split between them (the estimation probe). The
        base columns first, then the crosses of their values as transform spells them."""
        self.categories, self._spellings = {}, {}
        base = _texts(raw, self.categorical)
        for name, values in base.items():
            self.categories[name] = _one_per_value(values)
        crossed = {name for pair in self.crosses for name in pair}  # only a crossed column's values need their one spelling here
        columns = self._crossed({name: self._as_known(name, values) if name in crossed else values for name, values in base.items()})
        for name in self.cross_names:  # of values already in one spelling each (and a non-ASCII separator every key would match)
            self.categories[name] = _commonest(columns[name].value_counts(dropna=True))
        return self

    def transform(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Model input for `raw` records; absent columns are treated as missing values, except history columns (refused, named)."""
        require_history(raw, self.history)
        out: dict[str, pd.Series] = {}
        for name in self.numeric:
            col = raw[name] if name in raw else pd.Series(np.nan, index=raw.index)
            values = pd.to_numeric(col, errors="coerce").astype("float64")
            out[name] = values.where(np.isfinite(values.fillna(0.0)))
        for name, values in self._categorical_frame(raw).items():
            out[name] = pd.Categorical(values.astype(object).where(values.notna(), None), categories=self.categories[name])
        return pd.DataFrame(out, index=raw.index)[self.output_columns]

    def unseen_counts(self, raw: pd.DataFrame) -> dict[str, int]:
        """How many present categorical values were not seen at fit time, per column."""
        counts: dict[str, int] = {}
        for name, values in self._categorical_frame(raw).items():
            unseen = int((values.notna() & ~values.isin(self.categories[name])).sum())
            if unseen:
                counts[name] = unseen
        return counts

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"numeric": self.numeric, "categorical": self.categorical, "crosses": [list(c) for c in self.crosses], "categories": self.categories}
        if self.history:
            data["history"] = self.history
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureTransformer":
        return cls(
            numeric=list(data["numeric"]),
            categorical=list(data["categorical"]),
            crosses=[(a, b) for a, b in data.get("crosses", [])],
            categories={k: list(v) for k, v in data["categories"].items()},
            history=list(data.get("history", [])),
        )
