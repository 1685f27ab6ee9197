"""`mlplatform quarantine`: what landing refused, per file and reason, and the rows themselves, without SQL on the log.

The event log keeps every refused row with its line, reason and record; `status` shows only how many. An operator
looking at a growing count needs the rows, and, once a corrected file (new bytes, so not the same file read again)
took a bad file's place, a way to stop counting the bad file's refusals.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlplatform.root import ModelContext
from mlplatform.pipeline.landing import exclusive
from mlplatform.stores.eventlog import SHA256_PREFIX

if TYPE_CHECKING:
    from mlplatform.orchestration.launch import LaunchError

RECORD_CHARS = 160  # of a refused record in the terminal; --json gives it whole
UNKNOWN = "unknown"  # the content of rows quarantined before landing recorded contents


def collect_quarantine(model: ModelContext, limit: int, source: str | None = None) -> dict[str, Any]:
    """The model's quarantine: the count, the reasons per file (all of them), the latest `limit` rows."""
    log = model.event_log
    reasons = log.quarantine_reasons(limit=None, source=source)
    rows = log.quarantined_rows(limit, source=source)
    found = {
        "model": model.name,
        "quarantined": int(reasons["rows"].sum()) if len(reasons) else 0,
        "file": source,
        "reasons": reasons.to_dict("records"),
        "latest": [{**r, "quarantined_at": _iso(r["quarantined_at"])} for r in rows.to_dict("records")],
        "released": [{**r, "released_at": _iso(r["released_at"])} for r in log.quarantine_releases(source).to_dict("records")],
    }
    if source is not None and not found["quarantined"]:  # a typo reads like a clean file: name those that have rows
        found["files_with_rows"] = _files_with_rows(model)
    return found


def nothing_to_train_on(model: ModelContext, failure: LaunchError) -> str | None:
    """One line for a run that failed on too few labelled events where the model has none at all, saying where its rows
    went; None for any other failure. The new-user probe: a spec's wrong time_format had landing quarantine every row,
    and `materialize` ended in two stack traces and "only 0 labelled events", with no word of the quarantine."""
    from mlplatform.domain.training import TooFewLabelled

    if TooFewLabelled.__name__ not in failure.failed_on:
        return None
    counts = model.event_log.counts()
    if counts.labelled:
        return None
    said = f"{model.name} has no labelled events to train on"
    if counts.quarantined:
        top = model.event_log.quarantine_reasons(limit=1).iloc[0]
        landed = f"all {_rows(counts.quarantined)} it read" if not counts.total else f"{_rows(counts.quarantined)}, and {counts.total} events landed without a label"
        return (f"{said}: landing quarantined {landed} (the most, {_rows(top['rows'])} of {top['file']}: {_cut(str(top['reason']))}); "
                f"`mlplatform quarantine --model {model.name}` lists them")
    if counts.total:
        return f"{said}: its {counts.total} events landed without a label (the spec's label column: {model.spec.label!r}); a label file can bring them"
    return f"{said}: no event has landed in {model.settings.landing_dir}"


def _files_with_rows(model: ModelContext) -> list[str]:
    return sorted({str(r["file"]) for r in model.event_log.quarantine_reasons(limit=None).to_dict("records")})


def _iso(micros: object) -> str:
    return pd.Timestamp(int(str(micros)), unit="us", tz="UTC").isoformat(timespec="seconds")


@dataclass(frozen=True)
class Released:
    """What a release forgot, and what stays quarantined: a line for the terminal, a record for `--json`."""

    model: str
    file: str
    released: int
    contents: dict[str, int]  # rows per content (its SHA-256's start; "unknown" where landed before contents were kept)
    grew: bool  # several contents of one file that grew, released together
    left: int  # the model's quarantined rows after the release

    def line(self) -> str:
        contents = ("one file that grew: " if self.grew else "") + _contents(self.contents)
        return (f"{self.model}: released {self.released} quarantined {'row' if self.released == 1 else 'rows'} of file {self.file!r} ({contents}); "
                f"{self.left} quarantined rows left")


def _contents(rows: dict[str, int]) -> str:
    return "; ".join(f"content {c if c != UNKNOWN else 'unknown (landed before contents were recorded)'}: {_rows(n)}" for c, n in rows.items())


def release(model: ModelContext, source: str, content: str | None = None, by: str = "", reason: str = "",
            on_wait: Callable[[], None] | None = None) -> Released:
    """Forget the quarantined rows of landing file `source` (of its `content`, a SHA-256 prefix, where the name was landed
    as several files: releasing them all would forget the refusals of the corrected file too; the contents of one file
    that grew, appended to and landed again, are that file's, released together). A name with none, a content that is
    none of the name's, or several files' contents without `content`, is an error that changes nothing. The
    release is recorded with `by` and `reason` (`quarantine` lists it). It waits for a landing run reading the model's
    folder (`on_wait` told): released mid-file, the file's later refusals stayed, and "0 quarantined rows left" was said."""
    folder = model.settings.landing_dir
    with exclusive(folder, on_wait) if folder is not None and folder.is_dir() else nullcontext():
        return _release(model, source, content, by, reason)


def _release(model: ModelContext, source: str, content: str | None, by: str, reason: str) -> Released:
    log = model.event_log
    rows = log.quarantine_reasons(limit=None, source=source).groupby("content", dropna=False)["rows"].sum()
    if rows.empty:
        raise QuarantineError(f"{model.name} has no quarantined rows of file {source!r}; files with some: {', '.join(map(repr, _files_with_rows(model))) or 'none'}")
    wanted = None if content is None else content.lower()
    if wanted is not None:
        if not SHA256_PREFIX.fullmatch(wanted):
            raise QuarantineError(f"--content {content!r} is not the start of a SHA-256 (hex digits)")
        rows = rows[[isinstance(c, str) and (c.startswith(wanted) or wanted.startswith(c)) for c in rows.index]]
    per_content = {c if isinstance(c, str) else UNKNOWN: int(n) for c, n in rows.items()}
    contents = _contents(per_content)
    if content is not None and rows.empty:
        raise QuarantineError(f"{model.name}: file {source!r} has no quarantined rows of a content starting {content!r}")
    first_contents = log.first_contents(source)
    firsts = {first_contents.get(c) if isinstance(c, str) else None for c in rows.index}
    grew = len(rows) > 1 and len(firsts) == 1 and None not in firsts
    if len(rows) > 1 and not grew:
        raise QuarantineError(f"{model.name}: file {source!r} was landed as {len(rows)} contents with quarantined rows ({contents}): say which with "
                              "--content (the SHA-256 of the file, or its start, as `quarantine --file` shows it)")
    released = log.release_quarantined_file(source, wanted, by, reason)
    if released == 0:  # a whole SHA-256 whose start matched a content's, and whose rest did not
        raise QuarantineError(f"{model.name}: file {source!r} has no quarantined rows of a content starting {content!r} ({contents})")
    return Released(model.name, source, released, per_content, grew, log.counts().quarantined)


class QuarantineError(ValueError):
    """A release that names no file with quarantined rows (a typo, or released already), or not which of its contents:
    nothing was changed."""


def render_quarantine(found: dict[str, Any]) -> str:
    where = f" of file {found['file']!r}" if found["file"] is not None else ""
    others = found.get("files_with_rows")
    lines = [f"{found['model']}: {found['quarantined']} quarantined rows{where}" + ("" if others is None else f"; files with some: {', '.join(map(repr, others)) or 'none'}")]
    if found["reasons"]:
        lines.append("  rows  first line  file (content: its SHA-256's start): reason")
        lines += [f"  {r['rows']:>4}  {r['first_line']:>10}  {r['file']} ({r['content'] or 'unknown'}): {r['reason']}" for r in found["reasons"]]
        lines.append(f"  latest {len(found['latest'])}, newest first:")
        for row in found["latest"]:
            lines.append(f"    {row['file']}:{row['line']} ({row['quarantined_at']}) {row['reason']}\n      {_cut(str(row['record'] or ''))}")
    if found["released"]:
        lines.append("  released by hand, newest first:")
        lines += [f"    {r['released_at']}  {_rows(r['rows'])} of {r['file']} ({r['content'] or 'unknown'}) by {r['by']}" + (f": {_cut(str(r['reason']))}" if r["reason"] else "")
                  for r in found["released"]]
    return "\n".join(lines)


def _cut(text: str) -> str:
    """Text as a terminal line shows it: RECORD_CHARS at most, saying how long it is; --json gives it whole."""
    return text if len(text) <= RECORD_CHARS else text[:RECORD_CHARS] + f"… ({len(text)} characters)"


def _rows(n: object) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"
