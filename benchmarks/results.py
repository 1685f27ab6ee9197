"""Writes one benchmark's table into benchmarks/RESULTS.md, between its own markers, with command and date."""

import datetime as dt
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by its benchmark (`make bench` runs them all). Machines are shared and noisy: read the ratios.\n"


def record(name: str, command: str, body: str) -> None:
    """Replace (or append) the section of benchmark `name`."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{start}\n## {name}\n\n`{command}` — {stamp}, {platform.node() and 'this machine'} ({platform.python_version()}, {_cores()} cores)\n\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def report(name: str, script: str, argv: list[str] | None, body: str, no_record: bool) -> None:
    """Print a benchmark's body and, unless `no_record`, record it with the command line that produced it."""
    print(body)
    if not no_record:
        record(name, " ".join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])]), body)


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def markdown_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "_no rows_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
