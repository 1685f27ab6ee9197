"""`mlplatform ...`: thin commands over the core and the Dagster layer."""

import argparse
import json
import sys
from pathlib import Path

from mlplatform.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "spec", None):
        overrides["dataset_spec"] = Path(args.spec)
    if getattr(args, "state_dir", None):
        overrides["state_dir"] = Path(args.state_dir)
    return Settings(**overrides)


def cmd_demo(args: argparse.Namespace) -> int:
    from mlplatform.orchestration.demo import DemoError, run_demo

    try:
        run_demo(_settings(args))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mlplatform.orchestration.status import collect_status, render_status

    status = collect_status(_settings(args))
    print(json.dumps(status, indent=2, default=str) if args.json else render_status(status))
    return 0


def _pairs(values: list[str], kind: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected COLUMN=VALUE, got {item!r}")
        out[key] = kind(value)
    return out


def cmd_replay(args: argparse.Namespace) -> int:
    from mlplatform.replay import DriftScenario, inject_drift, read_source, write_batches
    from mlplatform.spec import load_spec

    settings = _settings(args)
    spec = load_spec(settings.dataset_spec)
    rows = read_source(spec)
    if args.shuffle:
        rows = rows.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    chunk = rows.iloc[args.start : args.start + args.count] if args.count else rows.iloc[args.start :]
    scenario = DriftScenario(shift_numeric=_pairs(args.shift, float), category_mix=_pairs(args.category, str), flip_labels=args.flip_labels, seed=args.seed)  # type: ignore[arg-type]
    if scenario.active:
        chunk = inject_drift(chunk, spec, scenario, reference=rows.iloc[: max(1, args.start)])
    paths = write_batches(chunk, spec, settings.landing_dir, args.batch_size, fmt=args.format, with_labels=not args.no_labels)
    print(f"wrote {len(chunk)} events in {len(paths)} file(s) to {settings.landing_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlplatform", description=__doc__)
    parser.add_argument("--spec", help="dataset spec YAML (default: MLPLATFORM_DATASET_SPEC or data/adult.yaml)")
    parser.add_argument("--state-dir", help="state folder (default: MLPLATFORM_STATE_DIR or .mlplatform/)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the retraining loop end to end on the embedded defaults").set_defaults(func=cmd_demo)
    status = sub.add_parser("status", help="champion, versions, decisions, event counts")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    replay = sub.add_parser("replay", help="write a dataset's rows to the landing folder in batches")
    replay.add_argument("--start", type=int, default=0)
    replay.add_argument("--count", type=int, default=0, help="rows to write (0: all from --start)")
    replay.add_argument("--batch-size", type=int, default=1000)
    replay.add_argument("--format", choices=["csv", "parquet", "jsonl"], default="csv")
    replay.add_argument("--shuffle", action="store_true")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--shift", action="append", default=[], metavar="COLUMN=SIGMAS", help="shift a numeric column")
    replay.add_argument("--category", action="append", default=[], metavar="COLUMN=VALUE", help="make a category dominant")
    replay.add_argument("--flip-labels", type=float, default=0.0, help="share of labels changed (concept drift)")
    replay.add_argument("--no-labels", action="store_true", help="events only; labels come later")
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
