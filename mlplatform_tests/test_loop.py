"""The retraining loop through Dagster on a real instance, real MLflow (SQLite) and a real event log."""

import importlib
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from mlplatform.domain.evaluation import primary_metric, score
from mlplatform.domain.keys import (CHAMPION_CHANGE, CHAMPION_MOVING, DAGSTER_RUN_TAG, CHOSEN_WINDOW, DECISION_THRESHOLD_PARAM, FITTED_ROWS, TRAINED_WINDOW, JUDGED_ROWS, REFIT, REFIT_ROWS, REFIT_ROWS_TAG, RETRY_ON_FAILURE_TAG, VALIDATION_PREDICTIONS, WILL_RETRY_TAG,
                                   WINDOW_SCORES, mlflow_tag)
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_ID, LABEL
from mlplatform.orchestration.assets import latest_metadata
from mlplatform.orchestration.launch import LaunchError, raise_on_failure
from mlplatform.orchestration.names import EVALUATION_REPORT, FEATURES, QUALITY_FLOOR_CHECK, RAW_EVENTS, TRAINED_MODEL
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.pipeline.replay import write_batches
from mlplatform.pipeline.retraining import EvidenceError, FeatureSnapshot, hold_out_evidence
from mlplatform.settings import REPO_ROOT, Settings
from mlplatform.stores.registry import MOVE_MARK_SECONDS
from mlplatform_tests.support.loop import LOOP, RETRAIN, failures, materialize, model, names


def test_the_loop_promotes_refuses_bad_windows_and_rejects_worse_challengers(
    state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec, adult_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One state folder through every decision (a fresh MLflow store costs seconds, so the steps share it)."""
    reg = model().registry
    adult = names()

    # Too few labelled events: the features asset fails with the numbers; nothing is trained.
    write_batches(adult_rows.iloc[:60], adult_spec, state.landing_dir, 60)
    write_batches(adult_rows.iloc[60:400], adult_spec, state.landing_dir, 340, with_labels=False, prefix="unlabelled")
    result = materialize(instance, LOOP)
    assert not result.success
    assert "only 60 labelled events in the window; at least 100 are needed (min_training_rows: the model's loop in defs.yaml, or MLPLATFORM_MIN_TRAINING_ROWS); the champion is unchanged" in failures(result)
    failed = instance.get_run_by_id(result.run_id)  # running it again cannot mend it: the daemon's run retry leaves it
    assert failed is not None and (failed.tags.get(RETRY_ON_FAILURE_TAG), failed.tags.get(WILL_RETRY_TAG)) == ("false", "false")
    raw = latest_metadata(instance, adult.asset(RAW_EVENTS))
    assert raw is not None and (raw["total"], raw["labelled"]) == (400, 60)
    assert latest_metadata(instance, adult.asset(TRAINED_MODEL)) is None and reg.champion() is None

    # Enough labels: v1 is trained, registered and promoted (there is no champion yet).
    write_batches(adult_rows.iloc[400:2400], adult_spec, state.landing_dir, 1000)
    result = materialize(instance, LOOP)
    assert result.success, failures(result)
    raw = latest_metadata(instance, adult.asset(RAW_EVENTS))
    assert raw is not None and (raw["ingested"], raw["total"], raw["labelled"], raw["quarantined"]) == (2000, 2400, 2060, 0)
    features = latest_metadata(instance, adult.asset(FEATURES))
    assert features is not None and (features["rows"], features["holdout_rows"]) == (2060, 412)
    first = latest_metadata(instance, adult.asset(EVALUATION_REPORT))
    assert first is not None and (first["decision"], first["challenger_version"], first["champion_version"]) == ("promoted", 1, 1)
    trained = latest_metadata(instance, adult.asset(TRAINED_MODEL))  # refit_on_holdout (the default): served = refit on training rows + hold-out
    assert trained is not None and trained[REFIT] is True and trained[REFIT_ROWS] == trained[FITTED_ROWS] == 2060 and first[JUDGED_ROWS] == 412
    assert trained[DECISION_THRESHOLD_PARAM] == 0.5, "binary, the spec sets none: the default, shown beside the version"
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == QUALITY_FLOOR_CHECK]
    assert len(checks) == 1 and checks[0].passed
    v1 = reg.get_version(1)
    assert int(reg.champion().version) == 1 and v1.tags[mlflow_tag("decision")] == "promoted"
    assert v1.tags[mlflow_tag("window.first_event_id")] == "adult-0" and v1.tags[DAGSTER_RUN_TAG] == result.run_id
    assert str(reg.version_by_alias("challenger").version) == "1"

    # evaluation_report again on its own (a retry past the alias move, or a launch from the UI): v1 is already the champion,
    # so nothing is decided again: its decision, the timeline and the report's reason stay what the first run recorded.
    timeline = reg.timeline()
    again = materialize(instance, ["evaluation_report"], raise_on_error=True)
    rerun = latest_metadata(instance, adult.asset(EVALUATION_REPORT))
    assert rerun is not None and (rerun["decision"], rerun["champion_version_before"], rerun["champion_version"]) == ("promoted", 1, 1)
    assert str(rerun["reason"]) == f"v1 is already the champion: nothing decided again; its decision: {first['reason']}", again.run_id
    assert reg.get_version(1).tags[mlflow_tag("decision_reason")] == first["reason"] and reg.timeline() == timeline
    # an attempt that moved the alias and failed before its timeline entry: the retry writes the entry it left out
    reg.client.delete_registered_model_tag(reg.name, f"{CHAMPION_CHANGE}{timeline[-1].seq:06d}")
    reg.client.set_registered_model_tag(reg.name, CHAMPION_MOVING, f"1:{timeline[-1].seq}:{time.time() - 2 * MOVE_MARK_SECONDS}")  # it died a while ago
    assert not reg.champion_record().recorded  # type: ignore[union-attr]
    materialize(instance, ["evaluation_report"], raise_on_error=True)
    assert reg.champion_record().recorded and [(c.version, c.reason) for c in reg.timeline()] == [(1, first["reason"])]  # type: ignore[union-attr]

    # A window of one class only: the features asset fails with the reason, nothing is registered.
    one_class = adult_rows.iloc[2400:4400]
    one_class = one_class[one_class["income"] == "<=50K"].head(300)
    write_batches(one_class, adult_spec, state.landing_dir, 300, prefix="oneclass")
    monkeypatch.setenv("MLPLATFORM_TRAINING_WINDOW", "100")
    result = materialize(instance, LOOP)
    assert not result.success
    assert "the window holds one class only (['<=50K']); a classifier needs at least two; the champion is unchanged" in failures(result)
    assert [v.version for v in reg.versions()] == [1] and int(reg.champion().version) == 1
    monkeypatch.delenv("MLPLATFORM_TRAINING_WINDOW")

    # A challenger that must beat the champion by an impossible margin is rejected; v1 stays champion.
    write_batches(adult_rows.iloc[4400:6400], adult_spec, state.landing_dir, 1000, prefix="more")
    monkeypatch.setenv("MLPLATFORM_PROMOTION_MARGIN", "1.0")
    monkeypatch.setenv("MLPLATFORM_TRAINING_WINDOW_CANDIDATES", "[2500]")  # fewer rows than the snapshot's: the window tags must say so
    result = materialize(instance, LOOP)
    monkeypatch.delenv("MLPLATFORM_TRAINING_WINDOW_CANDIDATES")
    assert result.success, failures(result)
    second = latest_metadata(instance, adult.asset(EVALUATION_REPORT))
    assert second is not None and (second["decision"], second["challenger_version"], second["champion_version"]) == ("rejected", 2, 1)
    assert "below the margin 1.0" in str(second["reason"]) and Path(str(second["report_path"])).is_file()
    v2 = reg.get_version(2)
    assert v2.tags[mlflow_tag("decision")] == "rejected" and v2.tags[mlflow_tag("compared_with")] == "1"
    assert float(v2.tags[mlflow_tag("champion_score")]) > 0.6 and int(reg.champion().version) == 1
    # v2 was refit on its hold-out: judged by its validation model's recorded hold-out predictions, not by its own in-sample
    # ones; all hold-out rows came after the refit champion v1's cut-off, so all are judged
    trained = latest_metadata(instance, adult.asset(TRAINED_MODEL))
    assert trained is not None
    snapshot = FeatureSnapshot.load(Path(str(trained["snapshot"])))
    holdout, metric = snapshot.holdout, primary_metric(adult_spec)[0]
    chosen = next(c for c in trained[WINDOW_SCORES] if c["window"] == trained[CHOSEN_WINDOW])  # type: ignore[union-attr]
    assert v2.tags[REFIT_ROWS_TAG] == str(trained[REFIT_ROWS]) == str(chosen["train_rows"] + len(holdout))
    # its window tags (the drift reference) say which rows it learned from: the chosen window's, not the whole snapshot's
    learned = snapshot.train.iloc[-chosen["train_rows"]:]
    assert len(learned) < len(snapshot.train)
    assert (v2.tags[mlflow_tag("window.train_rows")], v2.tags[mlflow_tag("window.first_event_id")]) == (str(chosen["train_rows"]), learned[EVENT_ID].iloc[0])
    # The probe: trained_model's train_rows (the rows fitted, hold-out included) read as a third count of "training rows"
    # beside the snapshot's and the tags'; its metadata now names the window the tags record, in the same words.
    assert {mlflow_tag(f"window.{k}"): str(v) for k, v in trained[TRAINED_WINDOW].items()} == {k: v for k, v in v2.tags.items() if k.startswith(mlflow_tag("window."))}  # type: ignore[union-attr]
    assert trained[FITTED_ROWS] == chosen["train_rows"] + len(holdout)
    evidence = reg.read_frame(2, VALIDATION_PREDICTIONS)
    assert evidence["event_id"].tolist() == holdout["event_id"].tolist()
    with pytest.raises(EvidenceError, match="recorded hold-out predictions miss 3 of the 3 events"):  # another snapshot's hold-out
        hold_out_evidence(reg, holdout.head(3).assign(event_id=lambda f: f["event_id"] + "-elsewhere"), 2)
    assert second["challenger_score"] == score(adult_spec, holdout[LABEL], evidence)[metric] != score(adult_spec, holdout[LABEL], reg.load_predictor(2).predict(holdout))[metric]
    assert second[JUDGED_ROWS] == second["holdout_rows"] == len(holdout) and (holdout["label_seq"] > int(v1.tags[mlflow_tag("window.label_seq_cutoff")])).all()
    # Judged again (the asset run again, a pin released): the probe found v2's one report rewritten, and the first
    # materialization's link showing the later decision. Each evaluation has a report of its own, in MLflow too.
    first_report = Path(str(second["report_path"]))
    recorded = first_report.read_text(encoding="utf-8")
    materialize(instance, ["evaluation_report"], raise_on_error=True)
    rejudged = latest_metadata(instance, adult.asset(EVALUATION_REPORT))
    assert rejudged is not None and rejudged["challenger_version"] == 2 and Path(str(rejudged["report_path"])) != first_report
    assert first_report.read_text(encoding="utf-8") == recorded and Path(str(rejudged["report_path"])).is_file()
    logged = {a.path for a in reg.client.list_artifacts(v2.run_id, "evaluation")}
    assert {f"evaluation/{first_report.name}", f"evaluation/{Path(str(rejudged['report_path'])).name}"} <= logged, logged
    assert str(reg.version_by_alias("challenger").version) == "2"

    # Below the quality floor: rejected even with no margin, and the blocking check fails.
    monkeypatch.setenv("MLPLATFORM_PROMOTION_MARGIN", "0")
    monkeypatch.setenv("MLPLATFORM_QUALITY_FLOOR", '{"roc_auc": 0.999}')  # adult's metric only: bike-sharing's rmse keeps its default
    monkeypatch.setenv("MLPLATFORM_REFIT_ON_HOLDOUT", "false")  # and today's behaviour: the validation model itself registered
    result = materialize(instance, RETRAIN)
    trained = latest_metadata(instance, adult.asset(TRAINED_MODEL))
    assert trained is not None and trained[REFIT] is False and trained[REFIT_ROWS] == 0 and reg.get_version(3).tags[REFIT_ROWS_TAG] == "0"
    assert reg.client.list_artifacts(reg.get_version(3).run_id, "evidence") == []
    third = latest_metadata(instance, adult.asset(EVALUATION_REPORT))
    assert third is not None and (third["decision"], third["challenger_version"], third["champion_version"]) == ("rejected", 3, 1)
    assert "misses the quality floor" in str(third["reason"])
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == QUALITY_FLOOR_CHECK]
    assert len(checks) == 1 and not checks[0].passed
    refused = instance.get_run_by_id(result.run_id)  # a retry would judge v3 again, and the policy count its rejection twice
    assert refused is not None and refused.tags.get(RETRY_ON_FAILURE_TAG) == "false"
    assert reg.get_version(3).tags[mlflow_tag("decision")] == "rejected" and int(reg.champion().version) == 1
    with pytest.raises(LaunchError, match=r"failed \(run .*\): adult/evaluation_report's blocking check quality_floor failed \(\w+ [0-9.]+ vs floor 0\.9990\)$"):
        raise_on_failure(result, "materializing")  # what `mlplatform materialize` prints: not "1 blocking asset check failed"


def test_a_champion_whose_files_are_gone_is_replaced_not_a_wall(state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec,
                                                                 adult_rows: pd.DataFrame) -> None:
    """The review: with the champion's booster file deleted, trained_model and evaluation_report raised loading it, run
    after run, and nothing could ever replace a champion that serving could not load either. It is judged as if there
    were no champion, as one the spec no longer fits, and the reason says why."""
    write_batches(adult_rows.iloc[:1500], adult_spec, state.landing_dir, 1500)
    assert materialize(instance, LOOP).success
    [booster] = list(state.state_dir.rglob("booster.txt"))
    booster.unlink()
    write_batches(adult_rows.iloc[1500:2500], adult_spec, state.landing_dir, 1000)
    result = materialize(instance, LOOP)
    assert result.success, failures(result)
    evaluation = latest_metadata(instance, names().asset(EVALUATION_REPORT))
    assert evaluation is not None and (evaluation["decision"], evaluation["challenger_version"]) == ("promoted", 2)
    assert str(evaluation["reason"]).startswith("champion v1 cannot be loaded (FileNotFoundError: [Errno 2] No such file or directory: "), evaluation["reason"]
    assert "so serving cannot load it: judged as if there were no champion, challenger roc_auc" in str(evaluation["reason"])
    assert int(model().registry.champion().version) == 2


@pytest.mark.usefixtures("state")  # its registry in the test's own state folder: the default one, in the clone, made `make demo` refuse it after `make test`
@pytest.mark.parametrize("fault", [ConnectionError("connection reset by the artifact proxy"), OSError(28, "No space left on device"), "503"])
def test_a_champion_the_store_fails_to_give_for_a_while_fails_the_step_not_the_comparison(fault: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The diff review: a store or network failing for a while (a reset connection, a 503, a full disk) read as files
    gone, and the challenger was judged as if there were no champion, promoted on the floor alone; it fails the step,
    which is retried. Only a file or an artifact that is not there is judged so."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from mlplatform.pipeline.retraining import loaded_champion

    registry = model().registry
    raised = MlflowException("API request failed with error code 503") if fault == "503" else fault

    def failing(version: object) -> None:
        raise raised  # type: ignore[misc]

    monkeypatch.setattr(registry, "load_predictor", failing)
    with pytest.raises(type(raised)):  # type: ignore[arg-type]
        loaded_champion(registry, 1)
    for gone in (FileNotFoundError(2, "No such file or directory"), MlflowException("No such artifact", error_code=RESOURCE_DOES_NOT_EXIST)):
        raised = gone
        assert loaded_champion(registry, 1)[0] is None


def test_a_label_file_mostly_applied_passes_the_quarantine_share(state: Settings, instance: dg.DagsterInstance, adult_spec: DatasetSpec,
                                                                  adult_rows: pd.DataFrame) -> None:
    """raw_events_quality left the applied labels out of the rows read: a file of 1000 labels, 20 of them for unknown
    events, was '100.0% of the last ingestion was quarantined' and failed the check (the review); it is 2%."""
    write_batches(adult_rows.iloc[:1000], adult_spec, state.landing_dir, 1000, with_labels=False)
    materialize(instance, [RAW_EVENTS], raise_on_error=True)
    labels = adult_rows.iloc[:1000][[EVENT_ID, adult_spec.label]].copy()
    labels.iloc[:20, 0] = [f"unknown-{i}" for i in range(20)]
    labels.to_csv(state.landing_dir / "labels.csv", index=False)
    result = materialize(instance, [RAW_EVENTS], raise_on_error=True)
    raw = latest_metadata(instance, names().asset(RAW_EVENTS))
    assert raw is not None and (raw["labels_applied"], raw["quarantined"]) == (980, 20)
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "raw_events_quality"]
    assert check.passed and check.metadata["quarantine_share"].value == pytest.approx(0.02), check.description
    # The diff review: known events resent with their labels are duplicates and labels applied both, so summing the
    # outcomes counted them twice: 60 resent and 40 refused read as 25 % quarantined. It is 40 % of the 100 rows read.
    write_batches(adult_rows.iloc[1000:1060], adult_spec, state.landing_dir, 60, with_labels=False, prefix="unlabelled")
    materialize(instance, [RAW_EVENTS], raise_on_error=True)
    resent = pd.concat([adult_rows.iloc[1000:1060], adult_rows.iloc[1060:1100].assign(age="old")])
    write_batches(resent, adult_spec, state.landing_dir, 100, prefix="resent")
    result = materialize(instance, [RAW_EVENTS], raise_on_error=True)
    raw = latest_metadata(instance, names().asset(RAW_EVENTS))
    assert raw is not None and (raw["rows_read"], raw["duplicates"], raw["labels_applied"], raw["quarantined"]) == (100, 60, 60, 40), raw
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "raw_events_quality"]
    assert not check.passed and check.metadata["quarantine_share"].value == pytest.approx(0.4), check.description


def test_the_definitions_load_from_workspace_yaml() -> None:
    """Every model's keys, jobs and sensors, by name: a renamed asset key fails here in milliseconds, not in a UI test."""
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text(encoding="utf-8"))
    (target,) = workspace["load_from"]
    module = importlib.import_module(target["python_module"]["module_name"])
    defs = getattr(module, target["python_module"]["attribute"])()
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {f"{m}/{a}" for m in ("adult", "bike_sharing") for a in (*LOOP, "drift_report", "retraining_trigger", "drift_dashboard", "live_quality",
                                                                                    "estimated_performance")}
    assert {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")} == {
        "adult_retrain", "adult_set_champion", "bike_sharing_retrain", "bike_sharing_set_champion", "run_history_retention"}
    assert {s.name for s in defs.schedules} == {"adult_live_quality_schedule", "bike_sharing_live_quality_schedule", "run_history_retention"}
    assert {s.name for s in defs.sensors} == {
        *(f"{m}_{s}" for m in ("adult", "bike_sharing") for s in ("retraining_sensor", "drift_report_sensor", "landing_sensor", "alerts_sensor")),
        "run_failure_alerts", "run_success_alerts"}
    assert {c.to_user_string() for c in defs.resolve_asset_graph().asset_check_keys} == {
        f"{m}/{a}:{c}" for m in ("adult", "bike_sharing") for a, c in (("raw_events", "raw_events_quality"), ("evaluation_report", "quality_floor"),
                                                                     ("drift_report", "drift_check"), ("live_quality", "live_quality_floor"),
                                                                     ("estimated_performance", "estimate_floor"), ("estimated_performance", "estimate_trust"))}
    assert target["python_module"]["location_name"] == "mlplatform"


@pytest.mark.parametrize(("config", "says"), [
    ({"retrain_cooldown_seconds": -5}, "resources.platform.config.retrain_cooldown_seconds: Input should be greater than or equal to 0"),
    ({"retrain_every_n": 0}, "resources.platform.config.retrain_every_n: Input should be greater than or equal to 1"),
    ({"state_dir": "/nonexistent/state"}, "resources.platform.config.state_dir: /nonexistent/state is not a folder"),
])
def test_a_launchpad_resource_config_that_cannot_hold_fails_once_naming_the_field(config: dict[str, object], says: str) -> None:
    """Not a pydantic traceback retried by the step's policy three times; nor an empty state started elsewhere."""
    with pytest.raises(dg.Failure) as failed:
        PlatformResource(**config).platform()  # type: ignore[arg-type]
    assert failed.value.description is not None and failed.value.description.startswith(says) and not failed.value.allow_retries


def test_a_run_worker_with_a_variable_that_names_no_setting_fails_once_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The review: a SettingsError in a run worker was retried by the step's policy, as if a retry could mend it."""
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVRY_N", "10")
    with pytest.raises(dg.Failure) as failed:
        PlatformResource().platform()
    assert "MLPLATFORM_RETRAIN_EVRY_N is no setting" in (failed.value.description or "") and not failed.value.allow_retries
