"""Reaction time, end to end: from the moment a retraining trigger holds to the serving process answering with the new champion.

Nothing is simulated. For each kind of trigger, on a fresh state folder with the embedded defaults (SQLite
Dagster instance, SQLite MLflow store, SQLite event log), a first champion is trained through the assets; then
the Dagster daemon (`dagster-daemon run` on the code server `mlplatform dev` starts: sensors, run queue, run workers) and `mlplatform
serve` run as separate processes, and each round sends events through `POST /predict` and their labels through
`POST /feedback`, as clients would:

- new labels: N events whose labels of one segment are swapped every other round; the trigger holds when the
  N-th label is acknowledged;
- drift: fewer events than N with numeric shifts and a changed category mix every other round (as recorded in
  between); the trigger holds once the round's events and MIN_NEW_LABELLED_FOR_DRIFT labels are in, and the
  drift sensor and one drift report run (drift_report, retraining_trigger, then the training steps) lie on the path.

The clock stops when `GET /readyz` names a new model version. The records of the run carrying the trigger split
each reaction into: until that run is requested (negative when a drift report run was requested before the trigger
held), its queue, the run worker's start, the steps until `@champion` moves (drift_report and retraining_trigger in a
drift report run, features, trained_model, and evaluation_report up to its decision: MLflow's evaluation plots come
after it), and serving's switch to the new version.

    .venv/bin/python benchmarks/bench_reaction.py                        # Adult: 6 new-label triggers (N=1000), 5 drift triggers
    .venv/bin/python benchmarks/bench_reaction.py --model churn --every 2000 --drift-triggers 0   # a model of the code location
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_adaptation.py: spinning OpenMP threads on a loaded machine

import dagster as dg  # noqa: E402
import httpx  # noqa: E402
from dagster._core.scheduler.instigation import InstigatorType  # noqa: E402
from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME  # noqa: E402  (how often the daemon looks at the sensors, whatever their intervals)
import pandas as pd  # noqa: E402
from results import markdown_table, record  # noqa: E402

from mlplatform.cli.demo import drift_scenario  # noqa: E402
from mlplatform.cli.dev import BIN, Server, daemon_servers, http_ok, running  # noqa: E402
from mlplatform.ports import free_port  # noqa: E402
from mlplatform.domain.keys import DRIFT_REPORT_TAG, POLICY_TRIGGER_TAG, REASON_TAG, TRIGGERED_AT_TAG  # noqa: E402
from mlplatform.domain.policy import DRIFT, NEW_OBSERVATIONS  # noqa: E402
from mlplatform.domain.spec import DatasetSpec, SpecError  # noqa: E402
from mlplatform.orchestration.instance import SENSOR_TICK_WORKERS, prepare_dagster_home  # noqa: E402
from mlplatform.orchestration.launch import definitions, materialize  # noqa: E402
from mlplatform.orchestration.names import DRIFT_REPORT, EVALUATION_REPORT, ModelNames, model_of_asset  # noqa: E402
from mlplatform.orchestration.trigger import RECENT_TRIGGER_RUNS  # noqa: E402
from mlplatform.pipeline.replay import ApiSink, DriftScenario, canonical_labels, inject_drift, read_source, select_stream, write_batches  # noqa: E402
from mlplatform.root import platform  # noqa: E402
from mlplatform.settings import Settings, SettingsError, scoped_environment  # noqa: E402
from mlplatform.stores.registry import MLFLOW_RETRY_ENV  # noqa: E402

GOAL_MEDIAN_S = {NEW_OBSERVATIONS: 15.0, DRIFT: 20.0}  # issue 17: from trigger to the new champion served
PREDICT_BATCH = 200
LAUNCHERS = {True: "a run worker per run forked from the daemon's warm process (`WarmRunLauncher`, the default)",
             False: "a run worker per run, a fresh interpreter the code server spawns (Dagster's launcher, `MLPLATFORM_WARM_RUN_WORKERS=false`)"}
STEPS = ("drift_report", "retraining_trigger", "features", "trained_model", "evaluation_report")  # those a run has, in run order


@dataclass(frozen=True)
class Reaction:
    trigger: int
    reason: str
    change: str
    version_before: int
    version_after: int | None
    decision: str
    sensor_s: float
    queue_s: float
    launch_s: float
    steps_s: float
    serving_s: float | None
    step_s: dict[str, float]
    drift_report_s: float | None = None  # drift triggers: when the drift report the run acted on was done, on the round's clock

    @property
    def total_s(self) -> float | None:
        return None if self.serving_s is None else self.sensor_s + self.queue_s + self.launch_s + self.steps_s + self.serving_s



def concept_change(spec: DatasetSpec, reference: pd.DataFrame) -> DriftScenario:
    """Swap the labels of the most common value of the first categorical feature (every label without one): any spec."""
    if spec.categorical_features:
        column = spec.categorical_features[0]
        value = str(reference[column].astype("string").str.strip().mode().iloc[0])
        return DriftScenario(flip_labels=1.0, flip_where={column: value}, seed=1)
    return DriftScenario(flip_labels=1.0, seed=1)


def serving_version(client: httpx.Client, names: ModelNames) -> int | None:
    try:
        body = client.get(f"/models/{names.model}/readyz").json()
    except (httpx.HTTPError, ValueError):
        return None
    return body.get("model_version") if isinstance(body, dict) else None


def trigger_run(instance: dg.DagsterInstance, names: ModelNames, after: float) -> dg.RunRecord | None:
    """The run carrying the model's newest retraining trigger decided after `after` (epoch seconds), if any: requested by the
    retraining sensor, or a drift report run whose retraining_trigger called for it (that run may have been created earlier)."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={POLICY_TRIGGER_TAG: names.model}), limit=RECENT_TRIGGER_RUNS)
    decided = [(float(r.dagster_run.tags.get(TRIGGERED_AT_TAG, 0)), r) for r in records]
    return max((d for d in decided if d[0] >= after), key=lambda d: d[0], default=(0.0, None))[1]


def evaluation_of(instance: dg.DagsterInstance, names: ModelNames, run_id: str) -> tuple[float, dict[str, object]] | None:
    """When the run's evaluation_report was materialized (the promotion happened before) and its metadata."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=names.asset(EVALUATION_REPORT)), limit=5).records
    for rec in records:
        if rec.run_id == run_id and rec.asset_materialization is not None:
            return rec.timestamp, {k: v.value for k, v in rec.asset_materialization.metadata.items()}
    return None


def one_round(rows: pd.DataFrame, spec: DatasetSpec, sink: ApiSink, client: httpx.Client, instance: dg.DagsterInstance,
              change: str, clock_at: int, timeout_s: float) -> Reaction:
    """Send the round's events, then their labels; the clock starts when label number `clock_at` is acknowledged."""
    names = ModelNames(spec.name)
    before = serving_version(client, names) or 0
    event_ids: list[str] = []
    for start in range(0, len(rows), PREDICT_BATCH):
        event_ids += sink.send_events(rows.iloc[start : start + PREDICT_BATCH], inline_labels=False)
    labels = canonical_labels(rows, spec).tolist()
    sink.send_labels(event_ids[:clock_at], labels[:clock_at])
    met = time.time()
    sink.send_labels(event_ids[clock_at:], labels[clock_at:])
    deadline = met + timeout_s
    run: dg.RunRecord | None = None
    while time.time() < deadline:
        version = serving_version(client, names)
        now = time.time()
        run = trigger_run(instance, names, met - 1)  # read again each time: a record is a snapshot, its status does not move
        if version is not None and version != before:
            break
        if run is not None and run.dagster_run.is_finished:
            evaluation = evaluation_of(instance, names, run.dagster_run.run_id)
            if evaluation is None or evaluation[1].get("decision") != "promoted":
                return _reaction(instance, names, run, met, None, change, before, None)
        time.sleep(0.05)
    else:
        raise TimeoutError(f"no new champion served within {timeout_s:.0f}s of the trigger (run: {run.dagster_run.run_id if run else 'none launched'})")
    if run is None:
        raise RuntimeError("the served version changed but no run carries a retraining trigger")
    while not instance.get_run_record_by_id(run.dagster_run.run_id).dagster_run.is_finished:  # type: ignore[union-attr]
        time.sleep(0.05)
    return _reaction(instance, names, instance.get_run_record_by_id(run.dagster_run.run_id), met, now, change, before, version)  # type: ignore[arg-type]


def drift_report_done(instance: dg.DagsterInstance, names: ModelNames, run: dg.RunRecord) -> float | None:
    """When the drift report a drift-triggered run names (its storage id, in the run's tags) was materialized."""
    report = run.dagster_run.tags.get(DRIFT_REPORT_TAG)
    if run.dagster_run.tags.get(REASON_TAG) != DRIFT or not report:
        return None
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=names.asset(DRIFT_REPORT), storage_ids=[int(report)]), limit=1).records
    return records[0].timestamp if records else None


def _reaction(instance: dg.DagsterInstance, names: ModelNames, run: dg.RunRecord, met: float, served_at: float | None, change: str, before: int, after: int | None) -> Reaction:
    evaluation = evaluation_of(instance, names, run.dagster_run.run_id)
    # The promotion is the alias move the registry's timeline records: evaluation_report moves it before its materialization
    # is written, and serving (watching the alias) may switch in between.
    moved = [c.at for c in platform().model(names.model).registry.timeline() if after is not None and c.version == after]
    promoted_at = moved[-1] if moved else evaluation[0] if evaluation else float(run.end_time or time.time())
    created = run.create_timestamp.timestamp()
    started = float(run.start_time or created)
    dequeued = next((e.timestamp for e in instance.all_logs(run.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_DEQUEUED)), created)
    decision = str(evaluation[1].get("decision", "?")) if evaluation else f"run {run.dagster_run.status.value}"
    report_done = drift_report_done(instance, names, run)
    return Reaction(0, run.dagster_run.tags.get(REASON_TAG, "?"), change, before, after, decision, created - met, dequeued - created,
                    started - dequeued, promoted_at - started, None if served_at is None else served_at - promoted_at, step_seconds(instance, run.dagster_run.run_id),
                    None if report_done is None else report_done - met)


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Each step's time from its start to its success (by asset name: `features`, not `adult__features`), from the run's event log."""
    events = instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS})
    starts = {e.step_key: e.timestamp for e in events if e.dagster_event and e.dagster_event.event_type is dg.DagsterEventType.STEP_START}
    return {str(e.step_key).rpartition("__")[2]: e.timestamp - starts[e.step_key] for e in events
            if e.step_key in starts and e.dagster_event and e.dagster_event.event_type is dg.DagsterEventType.STEP_SUCCESS}


def tick_gaps(instance: dg.DagsterInstance, sensor_name: str) -> list[float]:
    """Seconds between the sensor's consecutive ticks, from the daemon's tick records: how long a trigger can wait for one."""
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.name == sensor_name]
    starts = sorted(t.timestamp for s in states for t in instance.get_ticks(s.instigator_origin_id, s.selector_id))
    return [b - a for a, b in zip(starts, starts[1:])]


def bootstrap(settings: Settings, spec: DatasetSpec, rows: pd.DataFrame) -> None:
    """The first champion, through the same assets the daemon runs."""
    write_batches(rows, spec, settings.landing_dir, 1000)
    with dg.DagsterInstance.get() as instance:
        materialize(instance, spec.name, ["raw_events", "features", "trained_model", "evaluation_report"])


def serving_server(settings: Settings, model: str) -> Server:
    url = f"http://{settings.serve_host}:{settings.serve_port}"
    return Server("serving", url, [str(BIN / "mlplatform"), "serve", "--port", str(settings.serve_port), "--model", model], lambda: http_ok(f"{url}/readyz"))


@dataclass(frozen=True)
class Plan:
    """One kind of trigger: the settings its state folder runs with, its first window, its rounds and when its clock starts."""

    kind: str
    env: dict[str, str]
    first: pd.DataFrame
    rounds: list[tuple[str, pd.DataFrame]]  # (what the round changed, its rows)
    clock_at: int  # the label whose acknowledgement makes the trigger hold
    note: str


def _alternating(rows: pd.DataFrame, size: int, count: int, change: str, changed: Callable[[pd.DataFrame], pd.DataFrame]) -> list[tuple[str, pd.DataFrame]]:
    """Rounds of `size` rows after the first window: odd ones changed, even ones as recorded (a change back is a change too)."""
    chunks = [rows.iloc[size * (i + 1) : size * (i + 2)] for i in range(count)]
    return [(change, changed(c)) if i % 2 == 0 else ("original", c) for i, c in enumerate(chunks)]


def new_labels_plan(spec: DatasetSpec, rows: pd.DataFrame, every: int, count: int) -> Plan:
    """N new labels trigger; the round's labels of one segment are swapped (odd rounds) so the retrained model wins."""
    scenario = concept_change(spec, rows.iloc[:every])
    segment = ", ".join(f"`{c} = {v}`" for c, v in scenario.flip_where.items()) or "all labels"
    return Plan("new labels", {"MLPLATFORM_RETRAIN_EVERY_N": str(every), "MLPLATFORM_TRAINING_WINDOW": str(every)}, rows.iloc[:every],
                _alternating(rows, every, count, "labels swapped", lambda c: inject_drift(c, spec, scenario)), every,
                f"N = {every} events and labels a round, `RETRAIN_EVERY_N` = `TRAINING_WINDOW` = N; odd rounds swap the labels of {segment}, "
                "the clock starts when the N-th label is acknowledged")


def drift_plan(spec: DatasetSpec, rows: pd.DataFrame, size: int, count: int) -> Plan:
    """Covariate drift with fewer new labels than N: only a drift report can start these retrainings."""
    defaults = Settings()
    if not defaults.drift_every_n_events <= size < defaults.retrain_every_n or size < defaults.min_new_labelled_for_drift:
        raise SystemExit(f"--drift-events must be at least DRIFT_EVERY_N_EVENTS ({defaults.drift_every_n_events}) and MIN_NEW_LABELLED_FOR_DRIFT "
                         f"({defaults.min_new_labelled_for_drift}), and below RETRAIN_EVERY_N ({defaults.retrain_every_n}); got {size}")
    scenario = drift_scenario(spec, rows.iloc[:size], seed=1, share_threshold=defaults.drift_share_threshold)
    return Plan("drift", {"MLPLATFORM_TRAINING_WINDOW": str(size)}, rows.iloc[:size],
                _alternating(rows, size, count, "shifted", lambda c: inject_drift(c, spec, scenario, reference=rows.iloc[:size])),
                defaults.min_new_labelled_for_drift,
                f"{size} events and labels a round (fewer than `RETRAIN_EVERY_N` = {defaults.retrain_every_n}), `TRAINING_WINDOW` = {size}; odd rounds "
                f"shift {', '.join(scenario.shift_numeric)} by 1.5 σ and make the rarest category common in {', '.join(scenario.category_mix)}, "
                f"even rounds are as recorded; the clock starts when the {defaults.min_new_labelled_for_drift}-th label "
                "(`MIN_NEW_LABELLED_FOR_DRIFT`) is acknowledged, all the round's events being in; the drift sensor and one drift report run "
                "(report, retraining_trigger, training steps) then lie on the path")


def session(plan: Plan, spec: DatasetSpec, timeout_s: float, work: Path) -> tuple[list[Reaction], int, list[float]]:
    """A fresh state folder, a first champion, the daemon and serving as processes, then one trigger per round.
    Also returns how many runs the daemon launched for the code location's other models (their sensors tick too), and
    the gaps between the retraining sensor's ticks."""
    env = {"MLPLATFORM_STATE_DIR": str(work / "state"), "MLPLATFORM_RETRAIN_COOLDOWN_SECONDS": "0",
           "MLPLATFORM_SERVE_PORT": str(free_port()), **plan.env}
    reactions: list[Reaction] = []
    with scoped_environment(env, restore=("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", *MLFLOW_RETRY_ENV)):
        prepare_dagster_home(Settings())
        settings = platform().model(spec.name).settings
        bootstrap(settings, spec, plan.first)
        servers = [*daemon_servers(settings), serving_server(settings, spec.name)]
        with running(settings, log_dir=work / "logs", servers=servers), dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            sink = ApiSink(spec, servers[-1].url)
            with httpx.Client(base_url=servers[-1].url, timeout=10) as client:
                for i, (change, rows) in enumerate(plan.rounds):
                    reactions.append(replace(one_round(rows, spec, sink, client, instance, change, plan.clock_at, timeout_s), trigger=i + 1))
                    print(_row(reactions[-1]), flush=True)
            sink.close()
            mine = ModelNames(spec.name).prefix
            others = [r for r in instance.get_runs() if any(model_of_asset(k) != mine for k in r.asset_selection or ())]
            gaps = tick_gaps(instance, ModelNames(spec.name).retraining_sensor)
    return reactions, len(others), gaps


def run(args: argparse.Namespace) -> tuple[list[Reaction], dict[str, object]]:
    try:
        spec = platform().model(args.model).spec
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    ordered = select_stream(read_source(spec), spec, order="time")
    plans = [new_labels_plan(spec, ordered, args.every, args.triggers)] + ([drift_plan(spec, ordered, args.drift_events, args.drift_triggers)] if args.drift_triggers else [])
    for plan in plans:
        if any(len(rows) < plan.clock_at for _, rows in plan.rounds):
            raise SystemExit(f"{spec.name} has {len(ordered)} rows: too few for {len(plan.rounds)} {plan.kind} triggers of {len(plan.first)} events")
    started = time.perf_counter()
    reactions: list[Reaction] = []
    other_runs = 0
    gaps: list[float] = []
    for plan in plans:
        with tempfile.TemporaryDirectory(prefix="bench-reaction-", dir=args.work_dir) as tmp:
            done, others, tick_gaps_s = session(plan, spec, args.timeout, Path(tmp))
            reactions += done
            other_runs += others
            gaps += tick_gaps_s
    return reactions, {"wall_s": time.perf_counter() - started, "load": os.getloadavg(), "plans": [f"{p.kind}: {p.note}" for p in plans],
                       "other_models": [m for m in platform().models if m != spec.name], "other_runs": other_runs, "tick_gaps_s": gaps}


def _row(r: Reaction) -> dict[str, object]:
    return {
        "trigger": r.trigger,
        "reason": r.reason,
        "round's change": r.change,
        "served before → after": f"v{r.version_before} → " + (f"v{r.version_after}" if r.version_after else "(not promoted)"),
        "decision": r.decision,
        "drift report done at s": "" if r.drift_report_s is None else f"{r.drift_report_s:.1f}",
        "until the run is requested s": f"{r.sensor_s:.1f}",
        "queue s": f"{r.queue_s:.1f}",
        "run worker start s": f"{r.launch_s:.1f}",
        "run steps s": f"{r.steps_s:.1f}",
        "serving switch s": "" if r.serving_s is None else f"{r.serving_s:.1f}",
        "trigger → new champion served s": "" if r.total_s is None else f"{r.total_s:.1f}",
    }


def _phase_row(name: str, values: list[float], median_total: float) -> dict[str, object]:
    return {"phase": name, "median s": f"{statistics.median(values):.1f}", "max s": f"{max(values):.1f}",
            "share of median total": f"{statistics.median(values) / median_total:.0%}"}


def summary(reactions: list[Reaction]) -> tuple[list[dict[str, object]], str]:
    served = [r for r in reactions if r.total_s is not None]
    if not served:
        return [], "No trigger ended with a new champion served."
    totals = [r.total_s for r in served]  # type: ignore[misc]
    median_total = statistics.median(totals)  # type: ignore[type-var]
    steps = [(f"· step {step}", v) for step in STEPS if (v := [r.step_s[step] for r in served if step in r.step_s])]
    named = [("until the run is requested", [r.sensor_s for r in served]), ("queue", [r.queue_s for r in served]),
             ("run worker start", [r.launch_s for r in served]), ("run steps", [r.steps_s for r in served]), *steps,
             ("serving switch", [r.serving_s for r in served]), ("trigger → new champion served", totals)]
    rows = [_phase_row(name, values, median_total) for name, values in named]  # type: ignore[arg-type]
    goal = GOAL_MEDIAN_S.get(served[0].reason, max(GOAL_MEDIAN_S.values()))
    verdict = "met" if median_total <= goal else "MISSED"
    return rows, f"`{served[0].reason}` triggers, goal (median ≤ {goal:.0f} s): **{verdict}** — median {median_total:.1f} s, max {max(totals):.1f} s over {len(served)} triggers that promoted (of {len(reactions)})."  # type: ignore[type-var]


def sensor_interval(name: str) -> int:
    return int(definitions().resolve_sensor_def(name).minimum_interval_seconds or 30)


def tick_note(gaps: list[float]) -> str:
    """The tick gaps in one line: a gap well above the daemon's loop is a loop in which the sensor was not evaluated."""
    if not gaps:
        return "The retraining sensor recorded fewer than two ticks."
    late = sum(g > MIN_INTERVAL_LOOP_TIME * 1.5 for g in gaps) / len(gaps)
    return (f"The retraining sensor's ticks came a median {statistics.median(gaps):.1f} s apart (max {max(gaps):.1f} s; "
            f"{late:.0%} of {len(gaps)} gaps above 1.5 daemon loops): the wait for the next tick is up to one gap.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="adult", help="a model of the code location (default: adult)")
    parser.add_argument("--triggers", type=int, default=6, help="rounds, each one trigger (at least 5 for the issue's figure)")
    parser.add_argument("--every", type=int, default=1000, help="N: new labelled events per trigger (MLPLATFORM_RETRAIN_EVERY_N)")
    parser.add_argument("--drift-triggers", type=int, default=5, help="rounds of covariate drift with fewer labels than N, each one trigger (0: none)")
    parser.add_argument("--drift-events", type=int, default=1500, help="events and labels per drift round (≥ DRIFT_EVERY_N_EVENTS, < RETRAIN_EVERY_N)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a trigger may take before the benchmark fails")
    parser.add_argument("--work-dir", type=Path, help="where the temporary state folder and server logs go (default: the system's temp folder)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.triggers < 1 or args.drift_triggers < 0 or args.every < 100:
        parser.error("--triggers must be ≥ 1, --drift-triggers ≥ 0 and --every ≥ 100 (the smallest training window)")
    try:
        reactions, context = run(args)
    except SpecError as exc:
        parser.error(str(exc))
    names = ModelNames(args.model)
    table = markdown_table([_row(r) for r in reactions])
    summaries = [summary([r for r in reactions if r.reason == reason]) for reason in dict.fromkeys(r.reason for r in reactions)]
    load = ", ".join(f"{x:.1f}" for x in context["load"])  # type: ignore[attr-defined]
    plans = "".join(f"- {note}.\n" for note in context["plans"])  # type: ignore[attr-defined]
    body = (
        f"{table}\n\n" + "".join(f"{markdown_table(phases)}\n\n{verdict}\n\n" for phases, verdict in summaries) +
        f"- Processes: `dagster-daemon run` on `dagster code-server start`, as `mlplatform dev` starts them (retraining and drift report sensors with minimum intervals of {sensor_interval(names.retraining_sensor)} s and {sensor_interval(names.drift_sensor)} s, "
        f"ticked by the daemon's sensor loop every {MIN_INTERVAL_LOOP_TIME} s, up to {SENSOR_TICK_WORKERS} ticks at once; queued run coordinator, {LAUNCHERS[Settings().warm_run_workers]}) and `mlplatform serve` (checks `@champion` every {Settings().serve_reload_seconds:.0f} s), on one fresh state folder "
        f"with the embedded defaults; the benchmark is a third process, talking HTTP to serving and reading the Dagster instance.\n"
        f"- Each kind of trigger runs on its own fresh state folder with a first champion; each round sends its events via `POST /predict` "
        f"(batches of {PREDICT_BATCH}) and their labels via `POST /feedback`. Settings changed from the defaults: those named below (a training "
        f"window of one round, so a challenger learns the round's change) and `MLPLATFORM_RETRAIN_COOLDOWN_SECONDS=0` (the default 300 s cool-down "
        f"is a deliberate hold between retrainings, not reaction); tuning budget, promotion margin, drift reports every "
        f"{Settings().drift_every_n_events} events: defaults.\n"
        f"{plans}"
        f"- {tick_note(context['tick_gaps_s'])}\n"  # type: ignore[arg-type]
        f"- The code location's other models ({', '.join(context['other_models']) or 'none'}) are loaded too; their sensors ticked "  # type: ignore[arg-type]
        f"in the same daemon and launched {context['other_runs']} runs.\n"
        f"- Wall time {context['wall_s']:.0f} s; load average at the end: {load} on {os.cpu_count()} cores."
    )
    print("\n" + body)
    if not args.no_record:
        record("reaction", "python benchmarks/bench_reaction.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
