"""What a process pays before doing anything: the code location (every run worker, code server and the daemon load it)
and the CLI's help must not import the heavy libraries that only training, scoring, the registry or serving use.
Not timed (benchmarks/bench_import.py measures): these check which modules a fresh process has loaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.settings import REPO_ROOT

HEAVY = ("mlflow", "sklearn", "scipy", "evidently", "optuna", "fastapi", "uvicorn", "starlette", "lightgbm", "psycopg", "httpx")
HELP_FREE_OF = ("mlflow", "dagster", "pandas")
SUBCOMMANDS = ("demo", "dev", "serve", "status", "materialize", "champion", "replay")


def _loaded(code: str, watched: tuple[str, ...], tmp_path: Path) -> tuple[list[str], str]:
    """Run `code` in a fresh interpreter; which of `watched` it left in sys.modules, and what it printed before."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {watched!r} if m in sys.modules))"
    env = {**os.environ, "MLPLATFORM_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    *before, last = done.stdout.strip().splitlines()
    return eval(last), "\n".join(before)  # noqa: S307 (our own probe's printed list)


def test_loading_and_building_the_code_location_imports_no_heavy_library(tmp_path: Path) -> None:
    build = ("import mlplatform.orchestration.definitions as d\n"
             "defs = d.defs()\n"
             "print(' '.join(sorted(k.to_user_string() for k in defs.resolve_all_asset_keys())))")
    loaded, printed = _loaded(build, HEAVY, tmp_path)
    assert loaded == []
    assert {"adult/trained_model", "bike_sharing/drift_report"} <= set(printed.split()), "the probe built every model's assets"


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The check above can fail: a module that imports LightGBM at load (as the code location's did) is seen."""
    loaded, _ = _loaded("import mlplatform.orchestration.definitions\nimport mlplatform.serving.singlerow", HEAVY, tmp_path)
    assert {"lightgbm", "sklearn", "scipy"} <= set(loaded)


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in SUBCOMMANDS)], ids=lambda a: " ".join(a))
def test_help_imports_neither_mlflow_nor_dagster_nor_pandas(argv: list[str], tmp_path: Path) -> None:
    code = f"from mlplatform.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code"
    loaded, printed = _loaded(code, HELP_FREE_OF, tmp_path)
    assert printed.startswith("usage: mlplatform") and "--state-dir" in printed
    assert loaded == []
