"""The reports folder: links to its pages, drift snapshots kept small and rendered on demand, and their retention.

`mlplatform dev` serves the reports folder at `settings.reports_url` (mlplatform/cli/reports_server.py); the links
built here point there. A drift report is kept as its Evidently snapshot (JSON, xz-compressed: ~30 kB) instead of
Evidently's HTML (4.2 MB, its scripts inlined): the server renders `<name>.html` from `<name>.json.xz` when asked.
"""

from __future__ import annotations

import lzma
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlplatform.settings import Settings

if TYPE_CHECKING:  # Evidently loads only where a report is written or rendered
    from evidently.core.report import Snapshot

SNAPSHOT_SUFFIX = ".json.xz"
HTML_SUFFIX = ".html"


class ReportUnreadable(ValueError):
    """A stored snapshot that cannot be decompressed or parsed (truncated, corrupted, not a snapshot)."""


def report_url(settings: Settings, path: Path) -> str:
    """The URL of a report file written under `settings.reports_dir` (ValueError for a file outside it); a drift
    snapshot's URL is that of its HTML page, rendered by the reports server."""
    relative = html_path(path).resolve().relative_to(settings.reports_dir.resolve())
    return f"{settings.reports_url.rstrip('/')}/{quote(relative.as_posix())}"


def mlflow_version_url(settings: Settings, model_name: str, version: int | str) -> str:
    """The MLflow UI page of one registered model version (its tags hold the promotion decision)."""
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/models/{quote(model_name)}/versions/{version}"


def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run: params, metrics and logged artifacts (the reports among them)."""
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def html_path(path: Path) -> Path:
    """The page of a report: a snapshot's rendered HTML name beside it, any other file itself."""
    return path.with_name(path.name.removesuffix(SNAPSHOT_SUFFIX) + HTML_SUFFIX) if path.name.endswith(SNAPSHOT_SUFFIX) else path


def snapshot_path(page: Path) -> Path:
    """The snapshot a `<name>.html` page is rendered from."""
    return page.with_name(page.name.removesuffix(HTML_SUFFIX) + SNAPSHOT_SUFFIX)


def save_snapshot(snapshot: Snapshot, path: Path) -> int:
    """Write Evidently's full snapshot (what `Snapshot.loads` reads back), xz-compressed, in one rename; its size."""
    data = lzma.compress(snapshot.dumps().encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_bytes(data)
    staged.replace(path)
    return len(data)


def load_snapshot(path: Path) -> Snapshot:
    """A stored snapshot, as Evidently's object (FileNotFoundError if missing, ReportUnreadable if broken)."""
    from evidently.core.report import Snapshot

    data = path.read_bytes()
    try:
        return Snapshot.loads(lzma.decompress(data).decode("utf-8"))
    except (lzma.LZMAError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ReportUnreadable(f"{path.name}: not a readable Evidently snapshot ({type(exc).__name__}: {exc})"[:500]) from None


def render_snapshot(path: Path) -> str:
    """A stored snapshot as Evidently's standalone HTML page (FileNotFoundError if missing, ReportUnreadable if broken)."""
    return load_snapshot(path).get_html_str(as_iframe=False)


@dataclass(frozen=True)
class Pruned:
    """What one retention pass removed."""

    files: int
    bytes: int


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _remove(paths: list[Path]) -> Pruned:
    """Delete files, tolerating ones another pass removed first."""
    count = size = 0
    for path in paths:
        try:
            length = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        count, size = count + 1, size + length
    return Pruned(count, size)


def prune_drift_reports(drift_dir: Path, model: str, keep: int, live_versions: set[int], in_use: str = "") -> Pruned:
    """Keep the newest `keep` drift reports of `model` (snapshots, and HTML pages written before snapshots), and the
    reference caches of its live versions (champion, challenger) only: the rest is removed. Of the version whose cache
    is `in_use` (its name without suffix), that one only: one of the same version named before caches carried their
    window's digest, or for another registry's window, is never read again (the review: they lingered)."""
    report = re.compile(rf"{re.escape(model)}-v\d+-\d{{8}}T\d{{6}}-\d{{9}}({re.escape(SNAPSHOT_SUFFIX)}|{re.escape(HTML_SUFFIX)})")
    dated = [(when, p) for p in drift_dir.glob(f"{model}-v*") if report.fullmatch(p.name) and (when := _mtime(p)) is not None]
    reports = [p for _, p in sorted(dated, key=lambda item: (item[0], item[1].name), reverse=True)]
    cache = re.compile(rf"{re.escape(model)}-v(\d+)-\d+(-[0-9a-f]{{8}})?\.(parquet|json)")  # the window's digest, or none (before it)
    used = cache.fullmatch(f"{in_use}.parquet") if in_use else None
    used_version = int(used.group(1)) if used is not None else None
    stale = [p for p in (drift_dir / "reference").glob(f"{model}-v*")
             if (m := cache.fullmatch(p.name)) is not None and (int(m.group(1)) not in live_versions or (int(m.group(1)) == used_version and p.stem != in_use))]
    return _remove(reports[keep:] + stale)
