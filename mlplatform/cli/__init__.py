"""`mlplatform ...`: thin commands over the core and the Dagster layer."""

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from mlplatform.settings import Settings, SettingsError
from mlplatform.domain.spec import SpecError


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "spec", None):
        overrides["dataset_spec"] = Path(args.spec)
    if getattr(args, "state_dir", None):
        overrides["state_dir"] = Path(args.state_dir)
    return Settings(**overrides)


def cmd_demo(args: argparse.Namespace) -> int:
    from mlplatform.cli.demo import DemoError, run_demo

    try:
        run_demo(_settings(args))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from mlplatform.cli.dev import serve_until_stopped

    return serve_until_stopped(_settings(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from mlplatform.serving import serve

    overrides = {k: v for k, v in (("serve_host", args.host), ("serve_port", args.port)) if v is not None}
    serve(_settings(args).model_copy(update=overrides))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mlplatform.cli.status import collect_status, render_status

    status = collect_status(_settings(args))
    print(json.dumps(status, indent=2, default=str) if args.json else render_status(status))
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
    from mlplatform.pipeline.replay import ApiSink, DriftScenario, LandingSink, check_pacing, read_source, run_stream, select_stream
    from mlplatform.domain.spec import load_spec

    settings = _settings(args)
    try:
        spec = load_spec(settings.dataset_spec)
        scenario = DriftScenario(
            shift_numeric=_pairs(args.shift, float),  # type: ignore[arg-type]
            category_mix=_pairs(args.category, str),  # type: ignore[arg-type]
            category_share=args.category_share,
            flip_labels=args.flip_labels,
            flip_where=_pairs(args.flip_where, str),  # type: ignore[arg-type]
            seed=args.seed,
        )
        scenario.check(spec)
        label_delay = args.label_delay if args.label_delay is not None or args.to == "landing" else 0.0
        check_pacing(args.batch_size, args.rate, label_delay)
        rows = select_stream(read_source(spec), spec, order=args.order, seed=args.seed, start=args.start, count=args.count, scenario=scenario, drift_from=args.drift_from)
        url = args.url or f"http://{settings.serve_host}:{settings.serve_port}"
        token = settings.serve_token.get_secret_value() if settings.serve_token else None
        sink = ApiSink(spec, url, token) if args.to == "api" else LandingSink(spec, settings.landing_dir, fmt=args.format)  # type: ignore[arg-type]
        try:
            summary = run_stream(rows, spec, sink, batch_size=args.batch_size, rate=args.rate, label_delay=label_delay, with_labels=not args.no_labels, progress=not args.quiet)
        finally:
            if isinstance(sink, ApiSink):
                sink.close()
    except (ValueError, OSError) as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return 2
    target = url if args.to == "api" else settings.landing_dir
    print(f"sent {summary.events} events and {summary.labels} labels to {target} in {summary.seconds:.1f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlplatform", description=__doc__)
    parser.add_argument("--spec", help="dataset spec YAML (default: MLPLATFORM_DATASET_SPEC or data/adult.yaml)")
    parser.add_argument("--state-dir", help="state folder (default: MLPLATFORM_STATE_DIR or .mlplatform/)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the retraining loop end to end on the embedded defaults").set_defaults(func=cmd_demo)
    sub.add_parser("dev", help="Dagster webserver + daemon, MLflow UI and the reports folder on loopback until Ctrl-C").set_defaults(func=cmd_dev)
    serve_cmd = sub.add_parser("serve", help="prediction service for the champion (MLPLATFORM_SERVE_* settings) until Ctrl-C")
    serve_cmd.add_argument("--host", help="bind address (default: MLPLATFORM_SERVE_HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (default: MLPLATFORM_SERVE_PORT or 8000)")
    serve_cmd.set_defaults(func=cmd_serve)
    status = sub.add_parser("status", help="champion, versions, decisions, event counts")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    replay = sub.add_parser("replay", help="replay a dataset as a stream (landing folder or serving API), paced, with drift")
    replay.add_argument("--to", choices=["landing", "api"], default="landing", help="landing folder files, or POST /predict + /feedback")
    replay.add_argument("--url", help="serving API base URL (with --to api; default from MLPLATFORM_SERVE_HOST/PORT, token from MLPLATFORM_SERVE_TOKEN)")
    replay.add_argument("--order", choices=["time", "shuffled"], default="time", help="event-time order, or shuffled by --seed")
    replay.add_argument("--start", type=int, default=0, help="first row of the ordered dataset")
    replay.add_argument("--count", type=int, default=0, help="rows to send (0: all from --start)")
    replay.add_argument("--batch-size", type=int, default=1000, help="rows per landing file or per /predict request")
    replay.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    replay.add_argument("--label-delay", type=float, default=None, metavar="SECONDS",
                        help="send labels separately this long after their event (landing default: inline; api default: 0)")
    replay.add_argument("--format", choices=["csv", "parquet", "jsonl"], default="csv")
    replay.add_argument("--seed", type=int, default=0, help="seed of the shuffled order and of the drift scenario")
    replay.add_argument("--drift-from", type=int, default=0, metavar="ROW", help="drift applies from this row of the replayed slice on")
    replay.add_argument("--shift", action="append", default=[], metavar="COLUMN=SIGMAS", help="shift a numeric column")
    replay.add_argument("--category", action="append", default=[], metavar="COLUMN=VALUE", help="make a category dominant")
    replay.add_argument("--category-share", type=float, default=0.6, help="share of rows given the dominant category")
    replay.add_argument("--flip-labels", type=float, default=0.0, help="share of labels changed (concept drift)")
    replay.add_argument("--flip-where", action="append", default=[], metavar="COLUMN=VALUE", help="change labels only where COLUMN is VALUE")
    replay.add_argument("--no-labels", action="store_true", help="events only; labels come later")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SpecError, ValidationError, SettingsError) as exc:  # a wrong dataset spec or MLPLATFORM_* setting: say which, no traceback
        print(f"mlplatform {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
