"""`mlplatform status` after two versions, and the CLI's answer to a wrong spec or setting: a message, exit code 2."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlplatform.cli import main
from mlplatform.orchestration.assets import all_assets
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.pipeline.replay import write_batches
from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec


def _materialize(instance: dg.DagsterInstance, keys: list[str]) -> None:
    result = dg.materialize(all_assets, selection=keys, instance=instance, resources={"platform": PlatformResource()})
    assert result.success


def test_status_json_after_two_versions(
    state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = adult_rows.iloc[[0]].assign(event_id="broken", age="old")
    write_batches(pd.concat([adult_rows.iloc[:1500], bad]), adult_spec, state.landing_dir, 2000)
    _materialize(instance, ["raw_events", "features", "trained_model", "evaluation_report"])
    write_batches(adult_rows.iloc[1500:2500], adult_spec, state.landing_dir, 1000, prefix="more")
    _materialize(instance, ["raw_events", "features", "trained_model", "evaluation_report"])
    capsys.readouterr()

    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    versions = {v["version"]: v for v in status["versions"]}
    assert sorted(versions) == [1, 2]
    assert status["champion"] in (1, 2) and "champion" in versions[status["champion"]]["aliases"]
    assert versions[1]["decision"] == "promoted" and versions[2]["decision"] in ("promoted", "rejected")
    assert versions[2]["reason"] and "valid_roc_auc" in versions[2]["metrics"]
    assert versions[2]["window"]["rows"] == "2500"
    assert status["events"] == {"total": 2500, "labelled": 2500, "quarantined": 1, "label_watermark": 2500} | {
        k: v for k, v in status["events"].items() if k not in ("total", "labelled", "quarantined", "label_watermark")
    }
    assert status["dataset"] == "adult" and status["model"] == "mlplatform-adult"

    assert main(["status"]) == 0
    human = capsys.readouterr().out
    assert f"champion: v{status['champion']}" in human and "2500 total, 2500 labelled, 1 quarantined" in human


def test_status_on_an_empty_state_folder(state: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["champion"] is None and status["versions"] == [] and status["events"]["total"] == 0


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        (None, "does not exist"),
        ("name: x\ntask: binary\nlabel: y\nclasses: [a, b]\npositive_class: c\nfeatures: {f: numeric}\n", "positive_class: 'c' is not one of classes"),
        ("- just\n- a list\n", "expected a mapping at the top level, got list"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_wrong_spec_is_a_message_not_a_traceback(
    state: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], spec_text: str | None, message: str
) -> None:
    path = tmp_path / "spec.yaml"
    if spec_text is not None:
        path.write_text(spec_text, encoding="utf-8")
    assert main(["--spec", str(path), "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlplatform status: ") and message in err and "Traceback" not in err


def test_a_wrong_setting_names_the_variable(state: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MLPLATFORM_TUNING_TRIALS", "lots")
    assert main(["status"]) == 2
    assert "tuning_trials" in capsys.readouterr().err
