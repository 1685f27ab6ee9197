"""`mlplatform ...`: thin commands over the core and the Dagster layer."""

import argparse
import dataclasses
import getpass
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError

from mlplatform.domain.keys import DUPLICATES, IGNORED_COLUMNS, INGESTED, LABELS_APPLIED, LANDED_FILES, QUARANTINED, REJECTED_FILES, SKIPPED_ENTRIES, UNTIMED_FILES
from mlplatform.settings import Settings, SettingsError, env_name, redact, scoped_environment, settings_problems

if TYPE_CHECKING:
    import dagster as dg

    from mlplatform.orchestration.trigger import Latest
    from mlplatform.root import ModelContext, Platform

DEFAULT_ASSETS = ("raw_events", "features", "trained_model", "evaluation_report")


Number = TypeVar("Number", int, float)


def bounded(kind: Callable[[str], Number], noun: str, least: Number, most: Number | None = None) -> Callable[[str], Number]:
    """An argument's type: `kind` read from the text (`noun` names it when it cannot be), finite and within [least, most],
    as the setting it overrides takes (argparse says which argument is wrong and exits 2; `--port 70000` was a
    traceback from the socket)."""
    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not (math.isfinite(value) and least <= value and (most is None or value <= most)):
            raise argparse.ArgumentTypeError(f"expected at least {least}, got {text}" if most is None else f"expected {least} to {most}, got {text}")
        return value

    return parse


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(**({"state_dir": Path(args.state_dir)} if getattr(args, "state_dir", None) else {}))


def _platform(args: argparse.Namespace) -> "Platform":
    from mlplatform.root import platform

    return platform(_settings(args))


def _existing_platform(args: argparse.Namespace) -> "Platform":
    """The platform of a state folder that exists: a command that reads what ran there, on a mistyped --state-dir, made
    a fresh state of it and reported a model with no champion and no events, as if nothing were wrong."""
    settings = _settings(args)
    platform = _platform(args)
    if not settings.state_dir.is_dir():  # where files would land is said all the same: the first thing a new model needs
        landing = "; ".join(f"{m.name}: {m.settings.landing_dir}" for m in platform.select(args.model))
        raise SettingsError(f"state folder {settings.state_dir} does not exist: nothing has run on it (`make demo`, `mlplatform materialize` "
                            f"and `make dev` create it); a typo in --state-dir or {env_name('state_dir')}? Landing folders it would have: {landing}")
    return platform


def cmd_demo(args: argparse.Namespace) -> int:
    from mlplatform.cli.demo import DemoError, run_demo

    try:
        run_demo(_settings(args), args.model or "adult")
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from mlplatform.cli.dev import serve_until_stopped

    return serve_until_stopped(_settings(args), production=args.profile == "production")


def cmd_serve(args: argparse.Namespace) -> int:
    from mlplatform.cli.stack import in_use
    from mlplatform.serving import serve

    overrides = {k: v for k, v in (("serve_host", args.host), ("serve_port", args.port), ("serve_workers", args.workers)) if v is not None}
    settings = _settings(args).model_copy(update=overrides)
    with in_use(settings.state_dir):
        serve(settings, _platform(args).select(args.model))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mlplatform.cli.status import collect_status, render_status

    statuses = [collect_status(model, with_dagster=args.dagster) for model in _existing_platform(args).select(args.model)]
    print(json.dumps(statuses, indent=2, default=str) if args.json else "\n\n".join(map(render_status, statuses)))
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from mlplatform.cli.settings_list import render_settings, settings_rows

    listed = {model.name: settings_rows(model) for model in _platform(args).select(args.model)}
    print(json.dumps(listed, indent=2, default=str) if args.json else "\n\n".join(render_settings(name, rows) for name, rows in listed.items()))
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    """Materialize a model's assets from a terminal, recorded in the state folder's Dagster instance like a UI run."""
    import dagster as dg

    from mlplatform.cli.quarantine import nothing_to_train_on
    from mlplatform.orchestration.instance import prepare_dagster_home
    from mlplatform.orchestration.interrupts import Stopped
    from mlplatform.orchestration.launch import LaunchError, RetrainingBusy, materialize, retraining_slot
    from mlplatform.orchestration.names import (ALL_ASSETS, DRIFT_REPORT, ESTIMATED_PERFORMANCE, EVALUATION_REPORT, LIVE_QUALITY, RAW_EVENTS,
                                                TRAINED_MODEL, ModelNames)
    from mlplatform.orchestration.trigger import latest

    settings = _settings(args)
    selected = [a.strip() for a in args.select.split(",") if a.strip()] if args.select else list(DEFAULT_ASSETS)
    unknown = sorted(set(selected) - set(ALL_ASSETS))
    if unknown:
        print(f"materialize: unknown asset(s) {', '.join(unknown)}; choose from {', '.join(ALL_ASSETS)}", file=sys.stderr)
        return 2
    model = _platform(args).only(args.model)
    prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        try:
            with retraining_slot(instance, model.name) if {TRAINED_MODEL, EVALUATION_REPORT} & set(selected) else nullcontext({}) as tags:
                result = materialize(instance, model.name, selected, tags=tags)
        except RetrainingBusy as exc:
            print(f"materialize: {exc}", file=sys.stderr)
            return 2
        except LaunchError as exc:
            if RAW_EVENTS in selected:  # what landing took and refused explains a later step's "too few labelled events"
                _say_landing(*_landing_of(instance, model, exc.run_id), exc.run_id)
            empty = nothing_to_train_on(model, exc)  # the files' fault, not the run's: said as a wrong spec is
            print(f"materialize: {empty or exc}", file=sys.stderr)
            return 1 if empty is None else 2
        except Stopped as exc:  # a signal as the decision's record ended stops the run after it: what it decided is said too
            _say_decision(latest(instance, ModelNames(model.name).asset(EVALUATION_REPORT)), exc.run_id)
            raise
        landed, empty = _landing_of(instance, model, result.run_id) if RAW_EVENTS in selected else (None, (None, None))
        decided = latest(instance, ModelNames(model.name).asset(EVALUATION_REPORT)) if EVALUATION_REPORT in selected else None
        made = {name: found.metadata for name in (DRIFT_REPORT, LIVE_QUALITY, ESTIMATED_PERFORMANCE)
                if name in selected and (found := latest(instance, ModelNames(model.name).asset(name))) is not None and found.run_id == result.run_id}
    print(f"materialized {', '.join(selected)} of {model.name} in run {result.run_id} (Dagster instance {settings.dagster_home})")
    _say_landing(landed, empty, result.run_id)
    _say_decision(decided, result.run_id)
    if made:
        _say_readings(model, made.get(DRIFT_REPORT), made.get(LIVE_QUALITY), made.get(ESTIMATED_PERFORMANCE))
    return 0


def _say_readings(model: "ModelContext", drift: Mapping[str, object] | None, live: Mapping[str, object] | None,
                  estimated: Mapping[str, object] | None) -> None:
    """What the drift report, live quality or estimate the run made (their metadata, None: not made) found, as `status`
    says it: the verdict was only in the UI and `status --dagster` (the own-dataset probe). Read from the run's own
    materializations: a schedule's reading made meanwhile is not this run's."""
    from mlplatform.cli.status import monitor_lines, readings, registry_reads

    champion = registry_reads(model).champion_record()
    for line in monitor_lines({"champion": None if champion is None else champion.version, **readings(drift, live, estimated)}).values():
        print(line)


def _landing_of(instance: "dg.DagsterInstance", model: "ModelContext", run_id: str) -> tuple["Latest | None", tuple[Path | None, str | None]]:
    """The newest landing, and what `_say_landing` adds when it is run `run_id`'s and found no file: the folder it
    looked in and which run took files last (looked up for that case alone)."""
    from mlplatform.orchestration.names import RAW_EVENTS, ModelNames
    from mlplatform.orchestration.trigger import latest

    key = ModelNames(model.name).asset(RAW_EVENTS)
    landed = latest(instance, key)
    found_none = landed is not None and landed.run_id == run_id and not int(str(landed.metadata.get(LANDED_FILES, 0)))
    return landed, (model.settings.landing_dir, _earlier_landing(instance, key, run_id) if found_none else None)


def _earlier_landing(instance: "dg.DagsterInstance", key: "dg.AssetKey", run_id: str) -> str | None:
    """Which run took files last before run `run_id`, in words: `materialize` said "0 files" when the landing sensor's
    run had taken them a moment before, and the user read it as the files being lost (the probe). Reads the newest 100
    landings."""
    from mlplatform.domain.keys import LAUNCHED_BY_TAG

    for record in instance.fetch_materializations(key, limit=100).records:
        meta = {} if record.asset_materialization is None else {k: v.value for k, v in record.asset_materialization.metadata.items()}
        files, ingested = (int(str(meta.get(k, 0))) for k in (LANDED_FILES, INGESTED))
        if record.run_id == run_id or not files:
            continue
        run = instance.get_run_by_id(record.run_id)
        by = "" if run is None else f", started by {run.tags.get(LAUNCHED_BY_TAG, 'hand or the UI')}"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.timestamp))
        return f"the newest files were taken by run {record.run_id} at {when}{by}: {_counted(files, 'file')}, {_counted(ingested, 'event')} ingested"
    return None


def _say_landing(landed: "Latest | None", empty: tuple[Path | None, str | None], run_id: str) -> None:
    """What run `run_id`'s landing took and refused, in one line: quarantined rows and files left were only in the UI.
    A run that found no file says so, with `empty`: the folder it looked in and which run took files last."""
    if landed is None or landed.run_id != run_id:
        return
    d = {key: int(str(landed.metadata.get(key, 0))) for key in (LANDED_FILES, INGESTED, DUPLICATES, QUARANTINED, LABELS_APPLIED, REJECTED_FILES, SKIPPED_ENTRIES,
                                                                UNTIMED_FILES)}
    refused = [f"{_counted(d[QUARANTINED], 'row')} quarantined (mlplatform quarantine)"] * bool(d[QUARANTINED]) + \
              [f"{_counted(d[REJECTED_FILES], 'file')} moved to landing/rejected"] * bool(d[REJECTED_FILES]) + \
              [f"{_counted(d[SKIPPED_ENTRIES], 'entry', 'entries')} left in the landing folder"] * bool(d[SKIPPED_ENTRIES])
    refused += [f"{_counted(d[UNTIMED_FILES], 'file')} without the spec's time column timed as landed"] * bool(d[UNTIMED_FILES])
    ignored = str(landed.metadata.get(IGNORED_COLUMNS, "none"))
    refused += [f"columns the spec does not name ignored: {ignored}"] * (ignored != "none")
    if not d[LANDED_FILES] and not refused:
        folder, took = empty
        print(f"raw_events: no file waited in the landing folder {folder}; {took or 'no earlier run took one'}")
        return
    print(f"raw_events: {_counted(d[LANDED_FILES], 'file')}, {_counted(d[INGESTED], 'event')} ingested, {_counted(d[DUPLICATES], 'duplicate')}, "
          f"{_counted(d[LABELS_APPLIED], 'late label')} applied" + (f"; {', '.join(refused)} (the run's raw_events materialization in the UI says why)" if refused else ""))


def _counted(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _say_decision(decided: "Latest | None", run_id: str | None) -> None:
    """What run `run_id` decided, if it recorded a decision: without opening the UI."""
    from mlplatform.cli.status import decision_said

    if decided is not None and decided.run_id == run_id:
        print(f"evaluation_report: challenger {decision_said(decided.metadata)}")


def cmd_champion(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mlplatform.cli.status import change_line
    from mlplatform.pipeline.champion import ChampionError, ChampionRequest, NothingToChange, change_champion, change_said, own_verdict
    from mlplatform.stores.registry import champion_gone

    if args.action != "set" and (args.version is not None or args.no_pin):  # `show --version 2` showed the champion, saying nothing
        print(f"champion {args.action}: --version and --no-pin go with `champion set`", file=sys.stderr)
        return 2
    model = _existing_platform(args).only(args.model)
    registry = model.registry
    if args.action != "show":
        request = ChampionRequest(args.reason or "", args.version if args.action == "set" else None, pin=args.action == "set" and not args.no_pin)
        before = registry.champion_record()
        try:
            change = change_champion(registry, model.spec, request, by=f"{getpass.getuser()} (mlplatform champion {args.action})")
            # The move just before this one, as the timeline keeps them: another `champion set` at the same time may have
            # moved it after `before` was read (the operator probe: two at once both said "v6 → …"). An alias moved
            # outside the platform is in no timeline: then `before` says it.
            previous = next((c for c in reversed(registry.timeline()) if c.seq < change.seq), None)
            print(f"champion: {change_said(previous if previous is not None and (before is None or before.recorded) else before, change)}")
            if (verdict := own_verdict(registry, change.version)) is not None:
                print(f"champion: note: {verdict}")
        except NothingToChange as exc:  # what was asked already holds: said, and not an error
            print(f"champion: {exc}")
        except ChampionError as exc:
            print(f"champion: {exc}", file=sys.stderr)
            return 2
    record, timeline = registry.champion_record(), registry.timeline()
    if record is None:
        print(f"{model.name}: {champion_gone(timeline) or 'no champion yet'}")
    else:
        print(f"{model.name}: champion v{record.version}" + (f", pinned ({record.pin_reason})" if record.pinned else ""))
    for change in timeline:
        print(f"  {change_line(asdict(change))}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from mlplatform.cli.quarantine import QuarantineError, collect_quarantine, release, render_quarantine

    for option, given in (("--content", args.content), ("--reason", args.reason)):
        if given is not None and args.release is None:
            print(f"quarantine: {option} goes with --release FILE", file=sys.stderr)
            return 2
    if args.reason is not None and not args.reason.strip():
        print("quarantine: --reason is empty: say why, or leave --reason out", file=sys.stderr)
        return 2
    if args.release is not None:
        try:
            model = _existing_platform(args).only(args.model)
            waiting = f"quarantine: waiting for the landing run reading {model.settings.landing_dir} to finish"
            released = release(model, args.release, args.content, by=f"{getpass.getuser()} (mlplatform quarantine --release)", reason=args.reason or "",
                               on_wait=lambda: print(waiting, file=sys.stderr, flush=True))
            print(json.dumps(dataclasses.asdict(released), indent=2) if args.json else released.line())
        except QuarantineError as exc:
            print(f"quarantine: {exc}", file=sys.stderr)
            return 2
        return 0
    found = [collect_quarantine(model, args.limit, args.file) for model in _existing_platform(args).select(args.model)]
    print(json.dumps(found, indent=2, default=str) if args.json else "\n\n".join(map(render_quarantine, found)))
    return 0


def _pairs(values: list[str], kind: type) -> dict[str, object]:
    """COLUMN=VALUE options as a dict; a malformed one is a ValueError that names it."""
    out: dict[str, object] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected COLUMN=VALUE, got {item!r}")
        try:
            out[key.strip()] = kind(value.strip())
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not a {kind.__name__}") from None
    return out


def cmd_replay(args: argparse.Namespace) -> int:
    from mlplatform.pipeline.replay import ApiSink, DriftScenario, LandingSink, ReplayStopped, check_pacing, read_source, run_stream, select_stream
    from mlplatform.domain.spec import load_spec

    try:
        path = ""  # under the serving base URL: a model's own routes, which answer whether it serves one model or several
        if args.spec:
            spec = load_spec(args.spec)
            settings = _settings(args)
            landing = settings.landing_dir / spec.name
        else:
            from mlplatform.serving.routes import model_prefix

            model = _platform(args).only(args.model)
            spec, settings, landing, path = model.spec, model.settings, model.settings.landing_dir, model_prefix(model.name)
        scenario = DriftScenario(
            shift_numeric=_pairs(args.shift, float),  # type: ignore[arg-type]
            category_mix=_pairs(args.category, str),  # type: ignore[arg-type]
            category_share=args.category_share,
            flip_labels=args.flip_labels,
            flip_where=_pairs(args.flip_where, str),  # type: ignore[arg-type]
            seed=args.seed,
            ramp=args.ramp,
        )
        scenario.check(spec)
        label_delay = args.label_delay if args.label_delay is not None or args.to == "landing" else 0.0
        check_pacing(args.batch_size, args.rate, label_delay)
        skipped: list[str] = []  # source rows landing would quarantine: left out, said
        rows = select_stream(read_source(spec, skipped), spec, order=args.order, seed=args.seed, start=args.start, count=args.count, scenario=scenario,
                             drift_from=args.drift_from)
        for note in skipped:
            print(f"replay: {note}", file=sys.stderr)
        # A --url naming the service alone (its host and port) gets the model's routes, as the default does; before, it
        # posted to the service's root and stopped on a 404 (the new-user probe). A path given is kept: a proxy's own.
        url = f"{args.url.rstrip('/')}{path}" if args.url and urlsplit(args.url).path in ("", "/") else args.url or f"http://{settings.serve_host}:{settings.serve_port}{path}"
        token = settings.serve_token.get_secret_value() if settings.serve_token else None
        reconnect = {} if args.reconnect_seconds is None else {"reconnect_seconds": args.reconnect_seconds}
        sink = ApiSink(spec, url, token, **reconnect) if args.to == "api" else LandingSink(spec, landing, fmt=args.format)  # type: ignore[arg-type]
        try:
            summary = run_stream(rows, spec, sink, batch_size=args.batch_size, rate=args.rate, label_delay=label_delay, with_labels=not args.no_labels, progress=not args.quiet)
        finally:
            if isinstance(sink, ApiSink):
                sink.close()
    except (ValueError, OSError) as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        if isinstance(exc, ReplayStopped) and (hint := exc.resume(args.start, args.drift_from or 0, args.ramp)):
            print(f"replay: {hint}", file=sys.stderr)
        return 2
    target = url if args.to == "api" else landing
    print(f"sent {summary.events} events and {summary.labels} labels to {target} in {summary.seconds:.1f}s")
    return 0


def _common(defaults: bool, spec_help: bool = True, model_help: bool = True) -> argparse.ArgumentParser:
    """--state-dir, --model and --spec, accepted before and after the subcommand (given after, it wins); --spec is in the
    help of replay alone, and --model not in dev's, where they apply (elsewhere `main` refuses them, saying so)."""
    parser = argparse.ArgumentParser(add_help=False)
    unset = None if defaults else argparse.SUPPRESS
    parser.add_argument("--state-dir", default=unset, help="state folder (default: MLPLATFORM_STATE_DIR or .mlplatform/)")
    parser.add_argument("--model", default=unset, help="a model of the code location, by name (default: every model, or the only one)"
                        if model_help else argparse.SUPPRESS)
    parser.add_argument("--spec", default=unset, help="replay only: a dataset spec YAML instead of a model's (landing: <landing root>/<spec name>)"
                        if spec_help else argparse.SUPPRESS)
    return parser


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one; an option left unset (None) falls back on a setting its help names."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = _DefaultsShown
    parser = argparse.ArgumentParser(prog="mlplatform", description=__doc__, parents=[_common(True)], formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[_common(False, spec_help=name == "replay", model_help=name != "dev")],
                              formatter_class=fmt)

    command("demo", "run the retraining loop end to end on the embedded defaults (model adult unless --model)").set_defaults(func=cmd_demo)
    dev = command("dev", "Dagster webserver + daemon, MLflow UI and the reports folder on loopback until Ctrl-C")
    dev.add_argument("--profile", choices=["embedded", "production"], default="embedded",
                     help="production: PostgreSQL stores, Celery workers on Redis and the prediction service (docs/production.md)")
    dev.set_defaults(func=cmd_dev)
    serve_cmd = command("serve", "prediction service for every model's champion, or --model's (MLPLATFORM_SERVE_* settings), until Ctrl-C")
    serve_cmd.add_argument("--host", help="bind address (default: MLPLATFORM_SERVE_HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=bounded(int, "a whole number", 0, 65535), help="port (default: MLPLATFORM_SERVE_PORT or 8000)")
    serve_cmd.add_argument("--workers", type=bounded(int, "a whole number", 1, 64),
                           help="serving processes sharing the port (default: MLPLATFORM_SERVE_WORKERS or 1; more need MLPLATFORM_EVENT_LOG_URL)")
    serve_cmd.set_defaults(func=cmd_serve)
    status = command("status", "champion, pin, versions and decisions, event counts of each model (or --model)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--dagster", action="store_true", help="also the latest drift report, live quality, performance estimate and the retraining sensor's runs, from the Dagster instance (slower: imports Dagster)")
    status.set_defaults(func=cmd_status)
    listed = command("settings", "every setting a model runs with (or --model's): its MLPLATFORM_* variable, value, default, source and meaning")
    listed.add_argument("--json", action="store_true", help="machine-readable output")
    listed.set_defaults(func=cmd_settings)
    mat = command("materialize", "materialize a model's assets now, recorded in the state folder's Dagster instance (as from the UI)")
    mat.add_argument("--select", help=f"comma-separated assets (default: {','.join(DEFAULT_ASSETS)}; also drift_report, live_quality, estimated_performance)")
    mat.set_defaults(func=cmd_materialize)
    champ = command("champion", "show the champion timeline, roll back or pin a version, or unpin")
    champ.add_argument("action", choices=["show", "set", "unpin"], help="show: timeline; set: move @champion to --version (pinned unless --no-pin); unpin")
    champ.add_argument("--version", type=int, help="the version to serve (with set)")
    champ.add_argument("--reason", help="why (required by set and unpin): recorded with who and when")
    champ.add_argument("--no-pin", action="store_true", help="with set: let the retraining loop replace this version again")
    champ.set_defaults(func=cmd_champion)
    quarantine = command("quarantine", "the rows landing refused (per file and reason, then the latest rows with their records); "
                         "--release a file's rows once a corrected file took its place")
    quarantine.add_argument("--file", help="only the rows of this landing file (its name as landed)")
    quarantine.add_argument("--limit", type=bounded(int, "a whole number", 1), default=20, help="latest rows shown")
    quarantine.add_argument("--json", action="store_true", help="machine-readable output, records whole")
    quarantine.add_argument("--release", metavar="FILE",
                            help="forget FILE's quarantined rows, e.g. after a corrected file with new bytes replaced it; a file landed again "
                                 "as the same bytes releases its own rows")
    quarantine.add_argument("--content", metavar="SHA256",
                            help="with --release, where FILE's name was landed as several contents: only the rows of the one whose SHA-256 "
                                 "starts with this (shown beside each file)")
    quarantine.add_argument("--reason", help="with --release: why, recorded with who and when (`quarantine` lists releases)")
    quarantine.set_defaults(func=cmd_quarantine)
    replay = command("replay", "replay a model's dataset (or --spec) as a stream into its landing folder or the serving API, paced, with drift")
    replay.add_argument("--to", choices=["landing", "api"], default="landing", help="landing folder files, or POST /predict + /feedback")
    replay.add_argument("--reconnect-seconds", type=bounded(float, "a number of seconds", 0), metavar="S",
                        help="with --to api: how long a refused connection (serving restarting) is tried again before the replay stops (default: a minute)")
    replay.add_argument("--url", help="serving API URL that /predict and /feedback follow (with --to api; default: MLPLATFORM_SERVE_HOST/PORT; a URL without a path, "
                        "e.g. http://127.0.0.1:8000, gets the model's /models/<name>; token from MLPLATFORM_SERVE_TOKEN)")
    replay.add_argument("--order", choices=["time", "shuffled"], default="time", help="event-time order, or shuffled by --seed")
    replay.add_argument("--start", type=int, default=0, help="first row of the ordered dataset")
    replay.add_argument("--count", type=int, default=0, help="rows to send (0: all from --start)")
    replay.add_argument("--batch-size", type=int, default=1000, help="rows per landing file or per /predict request")
    replay.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    replay.add_argument("--label-delay", type=float, default=None, metavar="SECONDS",
                        help="send labels separately this long after their event (landing default: inline; api default: 0)")
    replay.add_argument("--format", choices=["csv", "parquet", "jsonl"], default="csv", help="landing file format")
    replay.add_argument("--seed", type=int, default=0, help="seed of the shuffled order and of the drift scenario")
    replay.add_argument("--drift-from", type=int, default=0, metavar="ROW", help="drift applies from this row of the replayed slice on")
    replay.add_argument("--shift", action="append", default=[], metavar="COLUMN=SIGMAS", help="shift a numeric column")
    replay.add_argument("--category", action="append", default=[], metavar="COLUMN=VALUE", help="make a category dominant")
    replay.add_argument("--category-share", type=float, default=0.6, help="share of rows given the dominant category")
    replay.add_argument("--flip-labels", type=float, default=0.0, help="share of labels changed (concept drift)")
    replay.add_argument("--flip-where", action="append", default=[], metavar="COLUMN=VALUE", help="change labels only where COLUMN is VALUE")
    replay.add_argument("--ramp", action="store_true", help="the drift grows from nothing at --drift-from to the full amounts at the last row")
    replay.add_argument("--no-labels", action="store_true", help="events only; labels come later")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a run: the command ends as Ctrl-C ends it, with SIGTERM's exit code."""


def _terminated(_signum: int, _frame: object) -> None:
    raise Terminated


def run() -> None:
    """The `mlplatform` command (and `python -m mlplatform.cli`): `main`, with SIGTERM ended as Ctrl-C is from the start
    (it killed the command silently while it started), then an exit no late signal turns into a kill: the interpreter's
    teardown lasts about 1.5 s after a run, and a Ctrl-C then killed the command after it had said what it did (the stop
    probe). Such a signal now ends it at once, with the command's own exit code."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:  # ignored when started so (`nohup`, a job of a script): left so
        signal.signal(signal.SIGTERM, _terminated)
    code = main()
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, lambda _signum, _frame: os._exit(code))  # the streams' last bytes may go with it
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a reader gone, or a stream closed: nothing left to say
            stream.flush()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:  # a signal outside a run (while starting, or printing what a run did): said, no traceback
        terminated = isinstance(exc, Terminated)
        print(f"mlplatform: interrupted ({'SIGTERM' if terminated else 'Ctrl-C'})", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors end here, before pandas, Dagster or MLflow is imported
    if args.spec and args.command != "replay":
        parser.error(f"--spec applies to replay; `{args.command}` works on the models of the code location: use --model")
    if args.model and args.command == "dev":
        parser.error("--model does not apply to dev: it runs the whole code location, every model's sensors and jobs (stop a model's "
                     "sensors in the UI's Automation page)")
    from mlplatform.cli.stack import StackError, check_reaches_stack
    from mlplatform.domain.spec import SpecError
    from mlplatform.orchestration.interrupts import Stopped
    from mlplatform.root import PlatformError
    from mlplatform.stores.eventlog import EventLogError

    try:  # runs executed here, sensor ticks and started processes read their settings from the environment: --state-dir too
        with scoped_environment({env_name("state_dir"): str(Path(args.state_dir).resolve())} if getattr(args, "state_dir", None) else {}):
            if args.command != "dev":  # dev checks its state folder itself, holding it
                check_reaches_stack(_settings(args))
            code = int(args.func(args))
            sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
            return code
    except (SpecError, ValidationError, SettingsError, PlatformError, StackError) as exc:  # a wrong spec, defs.yaml or MLPLATFORM_* setting: say which
        print(f"mlplatform {args.command}: {settings_problems(exc) if isinstance(exc, ValidationError) else exc}", file=sys.stderr)
        return 2
    except EventLogError as exc:  # a store that cannot be reached or read: its message names the setting and the URL, no traceback
        print(f"mlplatform {args.command}: {exc}", file=sys.stderr)
        return 1
    except Stopped as exc:  # Ctrl-C or SIGTERM stopped a run executing here (materialize, demo): said, with the shell's exit code
        print(f"mlplatform {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `mlplatform status | head`: the reader left; no traceback, and none at exit's flush either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
    except Exception as exc:
        settings = _settings(args)
        unreachable = tracking_unreachable(exc, settings) or instance_unreachable(exc, settings) or store_locked(exc, settings)
        if unreachable is None:
            raise
        print(f"mlplatform {args.command}: {unreachable}", file=sys.stderr)
        return 1


def _cause(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first of `exc` and the exceptions it came from that is one of `kinds`."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, kinds):
        cause = cause.__cause__ or cause.__context__
    return cause


def store_locked(exc: BaseException, settings: Settings) -> str | None:
    """One line for an embedded store (an SQLite file of the state folder) another process kept locked past the wait
    (the operator probe: `status` printed a 32-line traceback ending "database is locked"). None for any other error."""
    import sqlite3

    cause = _cause(exc, (sqlite3.OperationalError,))
    if cause is None or "database is locked" not in str(cause):
        return None
    return (f"a store in the state folder {settings.state_dir} stayed locked by another process (a long write, or one holding it "
            "open in a transaction): try again once it is done")


def instance_unreachable(exc: BaseException, settings: Settings) -> str | None:
    """One line for the Dagster instance's PostgreSQL failing under a command (the production probe: stopped while
    `materialize` ran, a 200-line traceback ending in "too many retries for DB connection"). None for any other error,
    and on the embedded instance, whose SQLite files are no server."""
    if settings.dagster_postgres_url is None or "dagster_postgres" not in sys.modules:
        return None
    import psycopg2
    import sqlalchemy.exc
    from dagster_postgres.utils import DagsterPostgresException

    cause = _cause(exc, (DagsterPostgresException, sqlalchemy.exc.OperationalError))
    if cause is None or (isinstance(cause, sqlalchemy.exc.OperationalError) and not isinstance(cause.orig, psycopg2.Error)):
        return None  # an OperationalError of another database (MLflow's SQLite store), not dagster-postgres's psycopg2
    first = (str(cause).strip().splitlines() or [""])[0]
    return (f"the Dagster instance's PostgreSQL at {redact(settings.dagster_postgres_url.get_secret_value())} ({env_name('dagster_postgres_url')}) "
            f"failed ({type(cause).__name__}: {first}): is it running? A run this command left unfinished is ended once a retraining of "
            "its model, or a stack, starts")


def tracking_unreachable(exc: BaseException, settings: Settings) -> str | None:
    """One line for MLflow's error about a tracking server that does not answer (a production stack stopped, its
    settings file left loaded): a status printed 111 lines of chained tracebacks. None for any other error."""
    if "requests" not in sys.modules:  # MLflow reaches a tracking server through requests: not imported, not this error
        return None
    import requests

    cause = _cause(exc, (requests.ConnectionError,))
    if cause is None:
        return None

    setting = env_name("mlflow_tracking_uri") if settings.mlflow_tracking_uri else env_name("mlflow_ui_url")
    return (f"the MLflow tracking server at {redact(settings.tracking_uri)} ({setting}) cannot be reached ({type(cause).__name__}): is its "
            "stack (`make prod`) running? A settings file of a stack that stopped is stale")


if __name__ == "__main__":
    run()
