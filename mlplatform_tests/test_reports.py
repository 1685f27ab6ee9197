"""Bounded report storage: a drift report is kept as its compressed Evidently snapshot and its Dagster link renders as
HTML through the real reports server; retention keeps the newest reports per model and the reference caches of live
versions only; broken, missing and out-of-folder requests get a clear answer."""

import re
import lzma
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pydantic
import pytest

from mlplatform.cli.dev import http_ok
from mlplatform.ports import free_port
from mlplatform.cli.reports_server import server
from mlplatform_tests.support.processes import wait_until
from mlplatform.domain.spec import DatasetSpec
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.pipeline.replay import write_batches
from mlplatform.settings import Settings
from mlplatform.stores.reports import Pruned, html_path, prune_drift_reports, report_url
from mlplatform_tests.support.loop import LOOP, failures, materialize, names

STAMP = "20260101T000000-000000000"


@pytest.fixture
def reports_server(state: Settings) -> Iterator[str]:
    """The reports server on a free loopback port, serving the state's reports folder; yields its base URL."""
    state.reports_dir.mkdir(parents=True, exist_ok=True)
    httpd = server(state.reports_dir, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _drift_report(instance: dg.DagsterInstance) -> dict[str, object]:
    result = materialize(instance, ["raw_events", "drift_report"])
    assert result.success, failures(result)
    meta = latest_metadata(instance, names().asset("drift_report"))
    assert meta is not None and meta["skipped"] is False, meta
    return meta


def test_drift_reports_are_small_snapshots_whose_link_renders_and_retention_bounds_them(
    state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, reports_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLPLATFORM_REPORTS_URL", reports_server)
    monkeypatch.setenv("MLPLATFORM_DRIFT_REPORTS_KEEP", "2")
    write_batches(adult_rows.iloc[:2400], adult_spec, state.landing_dir, 1200)
    assert materialize(instance, LOOP).success
    drift_dir = state.reports_dir / "drift"
    drift_dir.mkdir(parents=True, exist_ok=True)
    legacy = drift_dir / f"adult-v1-{STAMP}.html"  # a 4 MB page from before snapshots: the oldest report, pruned first
    legacy.write_text("<html>old</html>", encoding="utf-8")
    os.utime(legacy, (1, 1))
    other_model = drift_dir / f"bike-sharing-v1-{STAMP}.json.xz"
    other_model.write_bytes(b"x")
    stale_cache = drift_dir / "reference" / "adult-v7-100000.parquet"
    stale_cache.parent.mkdir(parents=True, exist_ok=True)
    stale_cache.write_bytes(b"x")
    stale_named = drift_dir / "reference" / "adult-v8-100000-0123abcd.json"  # named by its window, as caches are now
    stale_named.write_bytes(b"x")

    metas = []
    for start in (2400, 2700, 3000):
        write_batches(adult_rows.iloc[start:start + 300], adult_spec, state.landing_dir, 300, with_labels=False, prefix=f"live{start}")
        metas.append(_drift_report(instance))
    newest = metas[-1]
    snapshot = Path(str(newest["report_path"]))
    assert snapshot.name.endswith(".json.xz") and snapshot.is_file() and int(str(newest["report_bytes"])) == snapshot.stat().st_size < 100_000
    assert not list(drift_dir.glob("*.html")), "no HTML page is stored"

    link = str(newest["report_url"])
    assert link == report_url(state.model_copy(update={"reports_url": reports_server}), snapshot) and link.endswith(html_path(snapshot).name)
    page = httpx.get(link, timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '"label": "Share of Drifted Columns"' in page.text and f'{{"value": "{newest["drifted_columns"]}", "label": "Drifted Columns"}}' in page.text

    kept = sorted(p.name for p in drift_dir.glob("adult-v*"))
    assert kept == sorted(Path(str(m["report_path"])).name for m in metas[1:]), kept
    assert other_model.exists() and not stale_cache.exists() and not stale_named.exists()
    [cached] = (drift_dir / "reference").glob("adult-v1-*.parquet")
    assert re.fullmatch(r"adult-v1-\d+-[0-9a-f]{8}\.parquet", cached.name), "named by the champion's window: another registry's v1 is another cache"
    assert httpx.get(str(metas[0]["report_url"]), timeout=10).status_code == 404, "a pruned report's link says it is gone"


def _touch(folder: Path, name: str, mtime: int) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"12345")
    os.utime(path, (mtime, mtime))
    return path


def test_prune_keeps_the_newest_per_model_and_live_reference_caches_only(tmp_path: Path) -> None:
    reports = [_touch(tmp_path, f"adult-v{v}-2026010{i}T000000-00000000{i}.json.xz", mtime=100 + i) for i, v in enumerate((1, 1, 2, 10), start=1)]
    foreign = [_touch(tmp_path, f"adult-extra-v1-{STAMP}.json.xz", 1), _touch(tmp_path, f"adult-v1-{STAMP}.json.xz.123.tmp", 1),
               _touch(tmp_path, ".adult-v1-x.json.xz.99.tmp", 1), _touch(tmp_path, "adult-v1-notes.txt", 1)]
    caches = {v: [_touch(tmp_path / "reference", f"adult-v{v}-100000.{ext}", 1) for ext in ("parquet", "json")] for v in (1, 2, 10)}
    pruned = prune_drift_reports(tmp_path, "adult", keep=2, live_versions={10, 2})
    assert pruned == Pruned(files=4, bytes=20)
    assert [p.exists() for p in reports] == [False, False, True, True], "the two newest (v2 and v10) stay, whatever the version number"
    assert all(p.exists() for p in foreign) and all(p.exists() for p in caches[2] + caches[10]) and not any(p.exists() for p in caches[1])
    assert prune_drift_reports(tmp_path, "adult", keep=2, live_versions={10, 2}) == Pruned(0, 0), "a second pass finds nothing"
    assert prune_drift_reports(tmp_path / "missing", "adult", keep=1, live_versions=set()) == Pruned(0, 0)
    # The champion's cache in use is its window's; one of the same version named before the digest, or for another
    # registry's window, is never read again: removed. The challenger's caches, whichever window, stay.
    in_use, other_window = (_touch(tmp_path / "reference", f"adult-v2-100000-{digest}.parquet", 1) for digest in ("0123abcd", "fedc9876"))
    challengers = [_touch(tmp_path / "reference", f"adult-v10-100000-{digest}.parquet", 1) for digest in ("0123abcd", "fedc9876")]
    assert prune_drift_reports(tmp_path, "adult", keep=2, live_versions={10, 2}, in_use="adult-v2-100000-0123abcd") == Pruned(files=3, bytes=15)
    assert in_use.exists() and not other_window.exists() and not any(p.exists() for p in caches[2]) and all(p.exists() for p in challengers + caches[10])


def test_the_server_answers_broken_missing_and_outside_requests_clearly(state: Settings, reports_server: str) -> None:
    drift = state.reports_dir / "drift"
    drift.mkdir(parents=True, exist_ok=True)
    (drift / f"adult-v1-{STAMP}.json.xz").write_bytes(b"not xz at all")
    (drift / "truncated.json.xz").write_bytes(lzma.compress(b'{"metric_results": {'))
    (drift / "plain.html").write_text("<html>kept as it is</html>", encoding="utf-8")
    (state.state_dir / "secret.txt").write_text("outside", encoding="utf-8")

    broken = httpx.get(f"{reports_server}/drift/adult-v1-{STAMP}.html", timeout=10)
    assert broken.status_code == 500 and "not a readable Evidently snapshot" in broken.text
    assert httpx.get(f"{reports_server}/drift/truncated.html", timeout=10).status_code == 500
    assert httpx.get(f"{reports_server}/drift/nothing-here.html", timeout=10).status_code == 404
    assert httpx.get(f"{reports_server}/drift/plain.html", timeout=10).text == "<html>kept as it is</html>"
    assert httpx.head(f"{reports_server}/drift/adult-v1-{STAMP}.html", timeout=10).status_code == 200
    outside = httpx.get(f"{reports_server}/../secret.txt", timeout=10)
    assert outside.status_code == 404 and "outside" not in outside.text


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_retention_setting_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLATFORM_DRIFT_REPORTS_KEEP", value)
    with pytest.raises(pydantic.ValidationError, match="drift_reports_keep"):
        Settings()


def test_the_server_stops_on_ctrl_c_without_a_traceback(tmp_path: Path) -> None:
    """The upgrade probe: every Ctrl-C of `mlplatform dev` printed a KeyboardInterrupt traceback from this server."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlplatform.cli.reports_server", str(port), "--directory", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until("the server to answer", lambda: http_ok(f"http://127.0.0.1:{port}/"), 60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err + out, err
