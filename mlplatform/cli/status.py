"""What `mlplatform status` reports: champion, versions and decisions, event counts, drift, sensor runs."""

from typing import Any

import dagster as dg

from mlplatform.stores.eventlog import EventLog
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.orchestration.sensors import DRIFT_REPORT, LAUNCHED_BY_TAG, SENSOR_NAME
from mlplatform.stores.registry import Registry, tag
from mlplatform.settings import Settings
from mlplatform.domain.spec import load_spec


def collect_status(settings: Settings, run_limit: int = 20) -> dict[str, Any]:
    spec = load_spec(settings.dataset_spec)
    log = EventLog.for_dataset(settings.events_dir, spec)
    counts = log.counts()
    registry = Registry(settings.tracking_uri, settings.artifact_root, spec)
    champion = registry.champion()
    versions = [
        {
            "version": v.version,
            "aliases": v.aliases,
            "decision": v.tags.get(tag("decision"), "pending"),
            "reason": v.tags.get(tag("decision_reason"), ""),
            "holdout_score": v.tags.get(tag("challenger_score"), ""),
            "trigger": v.tags.get(tag("trigger.reason"), "manual"),
            "window": {k.removeprefix(tag("window.")): val for k, val in v.tags.items() if k.startswith(tag("window."))},
            "metrics": v.metrics,
            "run_id": v.run_id,
        }
        for v in registry.versions()
    ]
    prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        drift = latest_metadata(instance, DRIFT_REPORT)
        runs = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: SENSOR_NAME}), limit=run_limit)
        sensor_runs = [
            {
                "run_id": r.run_id,
                "status": r.status.value,
                "reason": r.tags.get("mlplatform/reason"),
                "new_labelled": r.tags.get("mlplatform/new_labelled"),
                "drift_share": r.tags.get("mlplatform/drift_share"),
            }
            for r in runs
        ]
    return {
        "dataset": spec.name,
        "model": registry.name,
        "state_dir": str(settings.state_dir),
        "champion": None if champion is None else int(champion.version),
        "versions": versions,
        "events": {"total": counts.total, "labelled": counts.labelled, "quarantined": counts.quarantined, "label_watermark": counts.label_watermark},
        "drift": None if drift is None else {
            "report": drift.get("report_path"),
            "drift_share": drift.get("drift_share"),
            "dataset_drift": drift.get("dataset_drift"),
            "drifted_columns": drift.get("drifted_columns"),
        },
        "sensor_runs": sensor_runs,
    }


def render_status(status: dict[str, Any]) -> str:
    lines = [
        f"dataset {status['dataset']} · model {status['model']} · state {status['state_dir']}",
        f"champion: {'v' + str(status['champion']) if status['champion'] else 'none yet'}",
        "events: {total} total, {labelled} labelled, {quarantined} quarantined".format(**status["events"]),
        "versions:",
    ]
    for v in status["versions"]:
        aliases = f" @{', @'.join(v['aliases'])}" if v["aliases"] else ""
        lines.append(f"  v{v['version']}{aliases}: {v['decision']} (trigger {v['trigger']}) {v['reason']}")
    if status["drift"]:
        d = status["drift"]
        lines.append(f"drift: share {d['drift_share']}, drift {'yes' if d['dataset_drift'] else 'no'}; report {d['report']}")
    for r in status["sensor_runs"]:
        lines.append(f"sensor run {r['run_id'][:8]}: {r['status']} reason={r['reason']} new_labelled={r['new_labelled']}")
    return "\n".join(lines)
