"""Bytes of drift reports per 1M events at the default cadence (one report every `drift_every_n_events`), before and
after keeping Evidently snapshots instead of HTML; measured on real reports of the real pipeline.

A champion is trained and promoted on Adult, then `build_drift_report` (what the drift_report asset runs) measures
`--reports` windows of `drift_every_n_events` new events each. Before: each report was Evidently's HTML in the reports
folder plus the same HTML logged to MLflow. After: the xz-compressed snapshot in the reports folder plus the verdicts
as JSON in MLflow; retention keeps `drift_reports_keep` snapshots per model. Goal: ≤ 50 MB of reports per 1M events.

    .venv/bin/python benchmarks/bench_storage.py [--reports 3]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import markdown_table, record  # noqa: E402

from mlplatform.domain.validation import validate_frame  # noqa: E402
from mlplatform.pipeline.drift import DriftReport, build_drift_report  # noqa: E402
from mlplatform.pipeline.replay import read_source  # noqa: E402
from mlplatform.pipeline.retraining import build_feature_snapshot, train_challenger  # noqa: E402
from mlplatform.root import platform  # noqa: E402
from mlplatform.stores.reports import render_snapshot  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_storage.py"
GOAL_BYTES_PER_MILLION = 50_000_000
TRAINING_EVENTS = 20_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=3, help="drift reports measured (each on its own new events)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        os.environ["MLPLATFORM_STATE_DIR"] = state
        os.environ["MLPLATFORM_TUNING_TRIALS"] = "1"
        model = platform().model("adult")
        settings, spec, log, registry = model.settings, model.spec, model.event_log, model.registry
        settings.ensure_dirs()
        cadence = settings.drift_every_n_events
        rows = validate_frame(read_source(spec).head(TRAINING_EVENTS + args.reports * cadence), spec, generated_id_prefix="s", generated_time_start_us=0).events
        log.append(rows.iloc[:TRAINING_EVENTS], "bench")
        challenger = train_challenger(settings, spec, registry, build_feature_snapshot(settings, spec, log, settings.work_dir / "bench"), {})
        registry.promote(challenger.version, "bench")
        reports: list[DriftReport] = []
        for i in range(args.reports):
            start = TRAINING_EVENTS + i * cadence
            log.append(rows.iloc[start:start + cadence], "bench")
            report = build_drift_report(settings, spec, log, registry)
            assert isinstance(report, DriftReport), report
            reports.append(report)
        snapshot_bytes = statistics.median(r.report_path.stat().st_size for r in reports)
        summary_bytes = statistics.median(len(json.dumps(r.summary()).encode()) for r in reports)
        started = time.perf_counter()
        html_bytes = len(render_snapshot(reports[-1].report_path).encode("utf-8"))  # what save_html wrote, byte for byte
        render_s = time.perf_counter() - started
        keep = settings.drift_reports_keep
        log.close()
    per_million = 1_000_000 / cadence
    before, after = 2 * html_bytes * per_million, (snapshot_bytes + summary_bytes) * per_million
    rows_out = [
        {"what": "before: Evidently HTML in reports/drift + the same HTML in MLflow", "bytes per report": f"{2 * html_bytes:,.0f}",
         "MB per 1M events": f"{before / 1e6:,.1f}", "MB kept per model": f"{before / 1e6:,.1f} (never pruned)"},
        {"what": "after: xz snapshot in reports/drift + verdicts JSON in MLflow", "bytes per report": f"{snapshot_bytes + summary_bytes:,.0f}",
         "MB per 1M events": f"{after / 1e6:,.1f}", "MB kept per model": f"{(keep * snapshot_bytes + summary_bytes * per_million) / 1e6:,.1f} (newest {keep} snapshots + MLflow JSON)"},
    ]
    verdict = "meets it" if after <= GOAL_BYTES_PER_MILLION else "MISSED"
    body = (
        markdown_table(rows_out)
        + f"\n\nAdult, a champion trained on {TRAINING_EVENTS} events, then {args.reports} reports of {cadence} new events each (the default "
        f"`drift_every_n_events`: {per_million:.0f} reports per 1M events); medians. {after / before:.1%} of the bytes before "
        f"({before / after:.0f}x fewer). Goal ≤ {GOAL_BYTES_PER_MILLION / 1e6:.0f} MB of reports per 1M events: {verdict}. "
        f"A page is rendered on demand from its snapshot in {render_s:.2f} s (one report's HTML: {html_bytes / 1e6:.1f} MB, not stored)."
    )
    print(body)
    record("storage", COMMAND + f" --reports {args.reports}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
