"""What `mlplatform status` reports per model: the champion and its pin, the champion timeline, versions and
decisions, event counts, and (with --dagster) the latest drift report, live quality and performance estimate, and the
retraining sensor's runs.

Everything but those comes from the registry and the event log's counters, so it takes the same time on a
1M-event log as on an empty one and needs no Dagster import; with the embedded MLflow store the registry is read from
its tables (RegistryTables), without importing MLflow either.
"""

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlplatform.domain.keys import (HISTORY_BACKDATED, HISTORY_HORIZON, CHALLENGER_SCORE, DECISION_METRIC_TAG, CHALLENGER_VERSION, CHAMPION_VERSION, DECISION_META, DECISION_THRESHOLD_TAG, REASON_META, DAGSTER_RUN_TAG, DATASET_DRIFT, DECISION, DECISION_REASON, DRIFT_SHARE, DRIFT_SHARE_TAG,
                                   DRIFTED_COLUMNS, ESTIMATED_METRIC, FLOOR_VERDICT, LIVE_EVENTS, LIVE_SCORED_ON, LIVE_VERDICT, LIVE_VERSION, NEW_LABELLED_TAG,
                                   POLICY_TRIGGER_TAG, REASON_TAG, RETRAIN_TAG, RECENT_ESTIMATE, RECENT_EVENTS, RECENT_ESTIMATE_ON_LABELLED, RECENT_LABELLED, RECENT_LABELLED_FIELDS, RECENT_LOWER, RECENT_NOTE, RECENT_REALIZED, RECENT_UPPER, REFERENCE, REPORT_PATH, SKIP_REASON, SKIPPED, TRIGGER_REASON, TRUST_VERDICT)
from mlplatform.domain.estimation import worse_or_better
from mlplatform.domain.evaluation import SCORED
from mlplatform.domain.threshold import DEFAULT_THRESHOLD
from mlplatform.domain.timeformat import iso_time
from mlplatform.pipeline.landing import REJECTED, rejected_files
from mlplatform.pipeline.live_quality import SERVED
from mlplatform.root import ModelContext
from mlplatform.stores.registry import champion_gone
from mlplatform.stores.registry_tables import RegistryReads, RegistryTables

if TYPE_CHECKING:  # Dagster is imported where status reads the instance, not with the CLI
    from dagster import AssetKey, DagsterInstance, RunRecord

UNDECIDED = "pending"  # the decision status shows for a version with no decision tag
VERSIONS_SHOWN = 10  # versions the plain rendering shows, with any older one never decided (--json has them all)
TIMELINE_SHOWN = 5  # champion moves the plain rendering shows (--json has them all)


def _number(tag: str | None) -> float | None:
    """A score recorded as a tag (MLflow tags are text): a number in the JSON, None if absent or edited into something else."""
    try:
        return None if tag is None else float(tag)
    except ValueError:
        return None


def registry_reads(model: ModelContext) -> RegistryReads:
    """The registry's tables read directly where they can be (no MLflow import), else through MLflow."""
    return RegistryTables.of(model.settings.tracking_uri, model.spec) or model.registry


def collect_status(model: ModelContext, with_dagster: bool = False, run_limit: int = 20) -> dict[str, Any]:
    counts = model.event_log.counts()
    registry = registry_reads(model)
    champion = registry.champion_record()
    timeline = registry.timeline()
    versions = [
        {
            "version": v.version,
            "aliases": v.aliases,
            "decision": v.tags.get(DECISION, UNDECIDED),
            "reason": v.tags.get(DECISION_REASON, ""),
            "holdout_score": _number(v.tags.get(CHALLENGER_SCORE)),
            "holdout_metric": v.tags.get(DECISION_METRIC_TAG),  # the one that decided: log loss where it broke a ROC AUC tie
            "trigger": v.tags.get(TRIGGER_REASON, "manual"),
            "decision_threshold": _number(v.tags.get(DECISION_THRESHOLD_TAG)),  # binary versions logged since thresholds are kept
            "run_id": v.run_id,
            "dagster_run_id": v.tags.get(DAGSTER_RUN_TAG),
        }
        for v in registry.versions()
    ]
    status: dict[str, Any] = {
        "model": model.name,
        "registered_model": registry.name,
        "state_dir": str(model.settings.state_dir),
        "landing_dir": str(model.settings.landing_dir),
        "spec": {"path": str(model.settings.dataset_spec), "task": model.spec.task.value, "label": model.spec.label,
                 "numeric": model.spec.numeric_features, "categorical": model.spec.categorical_features, "keys": model.spec.entity_keys,
                 "history": model.spec.history_numeric + model.spec.history_categorical},
        "champion": None if champion is None else champion.version,
        "pinned": bool(champion and champion.pinned),
        "pin_reason": champion.pin_reason if champion and champion.pinned else None,
        "no_champion": None if champion is not None else champion_gone(timeline) or "none yet",
        "timeline": [{"version": c.version, "at": c.at, "by": c.by, "reason": c.reason, "pinned": c.pinned} for c in timeline],
        "versions": versions,
        "events": {"total": counts.total, "labelled": counts.labelled, "quarantined": counts.quarantined, "label_watermark": counts.label_watermark},
        "rejected_files": [{"name": r.name, "reason": r.reason, "at": iso_time(r.at_us)} for r in rejected_files(model.settings.landing_dir)],
    }
    if with_dagster:
        status.update(_from_dagster(model, run_limit, versions))
    return status


def _from_dagster(model: ModelContext, limit: int, versions: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest drift report, live quality and performance estimate, and the retraining sensor's runs, from the state
    folder's Dagster instance; each run with how long it took and the version it trained and what became of it (from
    `versions`, which name their Dagster run)."""
    import dagster as dg

    from mlplatform.orchestration.assets import latest_metadata
    from mlplatform.orchestration.instance import prepare_dagster_home
    from mlplatform.orchestration.names import DRIFT_REPORT, ESTIMATED_PERFORMANCE, FEATURES, LIVE_QUALITY, TRAINED_MODEL, ModelNames

    names = ModelNames(model.name)
    prepare_dagster_home(model.settings)
    with dg.DagsterInstance.get() as instance:
        drift = latest_metadata(instance, names.asset(DRIFT_REPORT))
        live = latest_metadata(instance, names.asset(LIVE_QUALITY))
        estimated = latest_metadata(instance, names.asset(ESTIMATED_PERFORMANCE))
        features = latest_metadata(instance, names.asset(FEATURES))
        # A retraining by hand carries the policy's tag only once it decided: one canceled or crashed before was left out.
        found = {r.dagster_run.run_id: r for tag in (POLICY_TRIGGER_TAG, RETRAIN_TAG)
                 for r in instance.get_run_records(filters=dg.RunsFilter(tags={tag: model.name}), limit=limit)}
        records = sorted(found.values(), key=lambda r: r.create_timestamp, reverse=True)[:limit]
        failures = {r.dagster_run.run_id: _failure(instance, r.dagster_run.run_id) for r in records if r.dagster_run.status is dg.DagsterRunStatus.FAILURE}
    trained = {v["dagster_run_id"]: v for v in versions if v["dagster_run_id"]}
    return {
        **readings(drift, live, estimated),
        "history_horizon": (features or {}).get(HISTORY_HORIZON) or {},
        "history_backdated": (features or {}).get(HISTORY_BACKDATED),
        "sensor_runs": [{**_sensor_run(record, trained.get(record.dagster_run.run_id), names.asset(TRAINED_MODEL)),
                         "failure": failures.get(record.dagster_run.run_id)} for record in records],
    }


def _failure(instance: "DagsterInstance", run_id: str) -> str:
    """What a failed run failed on: its failed steps' root causes, else the run's own failure message (a run listed as
    "FAILURE in 0 s reason=None" said nothing of why: the estimation probe)."""
    import dagster as dg

    from mlplatform.orchestration.errors import root_cause

    steps = [f"{e.step_key}: {root_cause(e.dagster_event.event_specific_data.error)}"  # type: ignore[union-attr]
             for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
             if e.dagster_event is not None and getattr(e.dagster_event.event_specific_data, "error", None) is not None]
    if steps:
        return "; ".join(steps)
    failed = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return (failed[-1].message or "") if failed else ""


def readings(drift: Mapping[str, object] | None, live: Mapping[str, object] | None, estimated: Mapping[str, object] | None) -> dict[str, Any]:
    """The latest drift report, live quality and performance estimate (their materializations' metadata) as status
    keeps them ("drift", "live_quality", "estimated_performance"): `monitor_lines` says them."""
    return {
        "live_quality": None if live is None else {"model_version": live.get(LIVE_VERSION), "events": live.get(LIVE_EVENTS), "verdict": live.get(LIVE_VERDICT),
                                                  "scored_on": live.get(LIVE_SCORED_ON, SERVED),
                                                  "metrics": {name: live[name] for name in SCORED if name in live}},
        "estimated_performance": None if estimated is None else {
            "skipped": bool(estimated.get(SKIPPED, False)), "skip_reason": estimated.get(SKIP_REASON), "champion_version": estimated.get(CHAMPION_VERSION),
            "metric": estimated.get(ESTIMATED_METRIC), "recent_estimate": estimated.get(RECENT_ESTIMATE), "recent_note": estimated.get(RECENT_NOTE),
            "recent_lower": estimated.get(RECENT_LOWER), "recent_upper": estimated.get(RECENT_UPPER), "recent_events": estimated.get(RECENT_EVENTS),
            "reference": estimated.get(REFERENCE), "recent_labelled": estimated.get(RECENT_LABELLED),
            **{name: estimated.get(name) for name in RECENT_LABELLED_FIELDS},
            "floor_verdict": estimated.get(FLOOR_VERDICT), "trust_verdict": estimated.get(TRUST_VERDICT)},
        "drift": None if drift is None else {"champion_version": drift.get(CHAMPION_VERSION), "report": drift.get(REPORT_PATH), "drift_share": drift.get(DRIFT_SHARE),
                                             "dataset_drift": drift.get(DATASET_DRIFT), "drifted_columns": drift.get(DRIFTED_COLUMNS),
                                             "skipped": bool(drift.get(SKIPPED, False)), "skip_reason": drift.get(SKIP_REASON)},
    }


def _recent_estimate(e: Mapping[str, Any]) -> str:
    """The estimate the retraining sensor reads, with its band and against the reference a drop is measured from (the
    estimation probe: 'roc_auc 0.7286 recently' said nothing of a reference of 0.9504)."""
    said = f"{e['metric']} {e['recent_estimate']:.4g} recently"
    if isinstance(e.get("recent_lower"), float) and isinstance(e.get("recent_upper"), float):
        said += f" (95 % band {e['recent_lower']:.4g}-{e['recent_upper']:.4g}, {e.get('recent_events')} events)"
    reference = e.get("reference")
    if isinstance(reference, float) and math.isfinite(reference):
        said += f" vs reference {reference:.4g}: {worse_or_better(str(e['metric']), e['recent_estimate'], reference)}"
    realized, estimated = e.get(RECENT_REALIZED), e.get(RECENT_ESTIMATE_ON_LABELLED)
    if isinstance(realized, float) and isinstance(estimated, float):
        said += f"; realized {realized:.4g} on the {e.get(RECENT_LABELLED)} of them labelled, estimated {estimated:.4g} there"
    return said


def _sensor_run(record: "RunRecord", version: dict[str, Any] | None, trained_model: "AssetKey") -> dict[str, Any]:
    """A run carrying a retraining trigger (the policy's, or a person's: by_hand): why, how long it took (None while it runs), and
    the version it trained and its decision; `assets`: what it selected, where that is not the whole retraining (a
    `materialize --select features` was listed as a retraining run, the new-user probe)."""
    run = record.dagster_run
    seconds = None if record.start_time is None or record.end_time is None else round(record.end_time - record.start_time, 1)
    selected = run.asset_selection  # None or empty: the job's whole selection (a retraining job)
    assets = None if not selected or trained_model in selected or version is not None else sorted(key.path[-1] for key in selected)
    return {"run_id": run.run_id, "status": run.status.value, "reason": run.tags.get(REASON_TAG), "new_labelled": run.tags.get(NEW_LABELLED_TAG),
            "drift_share": run.tags.get(DRIFT_SHARE_TAG), "seconds": seconds, "version": None if version is None else version["version"],
            "decision": None if version is None else version["decision"], "assets": assets}


def _values(metrics: Mapping[str, object], verdict: str) -> str:
    """The live metrics beside a verdict that does not already give them ("within floors" did not: the third new-user probe)."""
    shown = [f"{name} {float(str(value)):.4g}" for name, value in metrics.items() if f"{name} " not in verdict]
    return f" ({', '.join(shown)})" if shown and not verdict.startswith("no floor is set") else ""


def _older(version: object, status: dict[str, Any]) -> str:
    """A reading about a version that no longer serves says so: the asset has not run since the champion changed."""
    champion = status["champion"]
    if champion is None:
        return " (there is no champion now)"
    return "" if str(version) == str(champion) else f" (not the champion v{champion}: not run since it changed)"


def _spec_line(spec: dict[str, Any]) -> str:
    """What the model learns from, as the spec says: the columns a request sends and the history columns serving fills."""
    history = f"; history: {', '.join(spec['history'])}" if spec["history"] else ""
    keys = f" (keys: {', '.join(spec['keys'])})" if spec["keys"] else ""
    return (f"spec {spec['path']}: {spec['task']} on {spec['label']!r} from {len(spec['numeric'])} numeric and {len(spec['categorical'])} "
            f"categorical features{history}{keys}")


def decision_said(evaluation: Mapping[str, object]) -> str:
    """A decision evaluation_report recorded (its metadata), as the commands say it: `v2 promoted: <why>`."""
    return f"v{evaluation.get(CHALLENGER_VERSION)} {evaluation.get(DECISION_META)}: {evaluation.get(REASON_META)}"


def change_line(change: Mapping[str, Any]) -> str:
    """One move of `@champion` as `status` and `champion show` print it: when (UTC), which version, pinned, by whom, why."""
    pinned = " pinned" if change["pinned"] else ""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(change['at']))} UTC  v{change['version']}{pinned} by {change['by']}: {change['reason']}"


def _two_places(value: object) -> str:
    """A share as people read it (0.55, not 0.5454545454545454); anything else as it is."""
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _version_lines(versions: list[dict[str, Any]]) -> list[str]:
    """The newest VERSIONS_SHOWN versions, then any older one still `pending`: a retraining stopped before its decision
    stays undecided, and an operator would not otherwise see it among hundreds of versions."""
    older = [v for v in versions[VERSIONS_SHOWN:] if v["decision"] == UNDECIDED]
    shown = len(versions) > VERSIONS_SHOWN
    lines = ["versions:" + (f" the newest {VERSIONS_SHOWN} of {len(versions)} (all: mlplatform status --json)" if shown else "")]
    for v in versions[:VERSIONS_SHOWN] + older:
        aliases = f" @{', @'.join(v['aliases'])}" if v["aliases"] else ""
        threshold = v.get("decision_threshold")
        tuned = f", threshold {threshold:.3g}" if threshold is not None and threshold != DEFAULT_THRESHOLD else ""
        lines.append(f"  v{v['version']}{aliases}: {v['decision']} (trigger {v['trigger']}{tuned}) {v['reason']}")
    if older:
        lines.insert(VERSIONS_SHOWN + 1, f"  older, never decided ({len(older)}):")
    return lines


def monitor_lines(status: dict[str, Any]) -> dict[str, str]:
    """The latest drift report, live quality and performance estimate of a `collect_status(..., with_dagster=True)`,
    a line each, by their key in it ("drift", "live_quality", "estimated_performance"): status shows them all,
    `materialize` those its run made."""
    lines: dict[str, str] = {}
    if status.get("drift"):
        d = status["drift"]
        if d.get("skipped"):
            lines["drift"] = f"drift: the latest drift_report made no report ({d['skip_reason']})"
        else:
            lines["drift"] = (f"drift against v{d['champion_version']}{_older(d['champion_version'], status)}: share {_two_places(d['drift_share'])}, "
                              f"drift {'yes' if d['dataset_drift'] else 'no'}; report {d['report']}")
    if status.get("live_quality"):
        q = status["live_quality"]
        lines["live_quality"] = (f"live quality: none measured yet ({q['verdict']} when it last ran)" if not q["model_version"] else  # "of v0" (the production probe)
                                 f"live quality of v{q['model_version']}{_older(q['model_version'], status)} on {q['events']} {q.get('scored_on') or SERVED}: "
                                 f"{q['verdict']}{_values(q.get('metrics') or {}, q['verdict'])}")
    if status.get("estimated_performance"):
        e = status["estimated_performance"]
        recent = (_recent_estimate(e) if isinstance(e["recent_estimate"], float)
                  else f"{e['metric']} not estimated recently ({e['recent_note'] or 'no reason recorded'})")  # printed "None recently"
        lines["estimated_performance"] = (f"estimated performance: none ({e['skip_reason']})" if e["skipped"] else
                                          f"estimated performance of v{e['champion_version']}{_older(e['champion_version'], status)}: {recent}; "
                                          f"{e['floor_verdict']}; {e['trust_verdict']}")
    return lines


def render_status(status: dict[str, Any]) -> str:
    pin = f" (pinned: {status['pin_reason']})" if status["pinned"] else ""
    lines = [
        f"model {status['model']} · registered as {status['registered_model']} · landing {status['landing_dir']}",
        _spec_line(status["spec"]),
        f"champion: {'v' + str(status['champion']) + pin if status['champion'] else status['no_champion']}",
        "events: {total} total, {labelled} labelled, {quarantined} quarantined".format(**status["events"]),
    ]
    if rejected := status.get("rejected_files"):
        newest = rejected[0]
        lines.append(f"rejected files: {len(rejected)} in {status['landing_dir']}/{REJECTED} (newest, {newest['at']}: "
                     f"{newest['name']}: {newest['reason']}); fixed, move them back into the landing folder")
    lines.extend(_version_lines(status["versions"]))
    if status["timeline"]:
        moves = len(status["timeline"])
        lines.append("champion timeline:" + (f" the latest {TIMELINE_SHOWN} of {moves} moves (all: mlplatform champion show)" if moves > TIMELINE_SHOWN else ""))
        lines.extend(f"  {change_line(c)}" for c in status["timeline"][-TIMELINE_SHOWN:])
    lines.extend(monitor_lines(status).values())
    lines.extend(f"history horizon of the latest features: {said}" for said in status.get("history_horizon", {}).values())
    if status.get("history_backdated"):
        lines.append(f"history of served rows in the latest features: {status['history_backdated']}")
    for r in status.get("sensor_runs", []):
        took = "" if r["seconds"] is None else f" in {r['seconds']:.0f} s"
        outcome = "" if r["version"] is None else f": v{r['version']} {r['decision']}"
        labelled = "" if r["new_labelled"] is None else f" new_labelled={r['new_labelled']}"  # a retraining by hand counts none
        what = "retraining run" if r.get("assets") is None else f"run of {', '.join(r['assets'])}"
        reason = "" if r["reason"] is None else f" reason={r['reason']}"
        failure = f" ({r['failure']})" if r.get("failure") else ""
        lines.append(f"{what} {r['run_id'][:8]}: {r['status']}{took}{reason}{labelled}{outcome}{failure}")
    return "\n".join(lines)
