"""Many models in one code location: declarations and their errors, a third model added with `dg scaffold defs` and
no code change, two models looping independently, and two overlapping runs that do not cross inputs."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr, ValidationError
import yaml

from mlplatform.domain.spec import MODEL_NAME, NAME_RULE, model_name_like
from mlplatform.domain.keys import MODEL_TAG, REASON_TAG
from mlplatform.orchestration.names import ModelNames
from mlplatform.pipeline.replay import read_source, write_batches
from mlplatform.root import COMPONENT_FILE_KEYS, Platform, PlatformError
from mlplatform.serving.service import check_supported
from mlplatform.settings import REPO_ROOT, Settings, SettingsError
from mlplatform_tests.conftest import FAST_TRAINING
from mlplatform.ports import free_port
from mlplatform.orchestration.launch import launch
from mlplatform_tests.serving_support import Server, wait_until_up
from mlplatform_tests.support.processes import wait_until
from mlplatform_tests.support.loop import ADULT, BIKE, LOOP, materialize, model, tick

BIN = Path(sys.executable).parent
ADULT_DEFS = "type: mlplatform.RetrainingLoop\nattributes:\n  spec: {spec}\n{extra}"


def _adult_defs(extra: str) -> str:
    """A declaration of the shipped Adult spec with `extra` lines under its attributes."""
    return ADULT_DEFS.format(spec=REPO_ROOT / "data" / "adult.yaml", extra=extra)


def _declare(defs: Path, folder: str, text: str) -> Path:
    (defs / folder).mkdir(parents=True, exist_ok=True)
    path = defs / folder / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ADULT_DEFS.format(spec="nope.yaml", extra=""), "attributes.spec: dataset spec"),
        (_adult_defs("  loop: {retrain_evry_n: 5}\n"), "attributes.loop.retrain_evry_n: Extra inputs are not permitted"),
        (_adult_defs("  loop: {retrain_every_n: 0}\n"), "attributes.loop.retrain_every_n: Input should be greater than or equal to 1"),
        (_adult_defs("  loop: {tuning_trials: many}\n"), "attributes.loop.tuning_trials"),
        (_adult_defs("  loop: {estimated_drop_margin: 1.5}\n"),
         "attributes.loop.estimated_drop_margin: Input should be less than or equal to 1"),
        (_adult_defs("  loop: {estimation_chunk_events: lots}\n"), "attributes.loop.estimation_chunk_events"),
        (_adult_defs("  loop: {retrain_on_estimated_drop: sometimes}\n"), "attributes.loop.retrain_on_estimated_drop"),
        (_adult_defs("  loop: {shadow_min_events: 3}\n"),
         "attributes.loop.shadow_min_events: Input should be greater than or equal to 10"),
        (_adult_defs("  loop: {promotion_requires_shadow_win: perhaps}\n"),
         "attributes.loop.promotion_requires_shadow_win"),
        (_adult_defs("  loop: {serve_port: 9000}\n"), "attributes.loop.serve_port: Extra inputs are not permitted"),
        (_adult_defs("  loop: {serve_shadow_queue: 0}\n"),
         "attributes.loop.serve_shadow_queue: Input should be greater than or equal to 1"),
        (_adult_defs("  loop: {training_window_candidates: [5000, 5000]}\n"),
         "training_window_candidates (MLPLATFORM_TRAINING_WINDOW_CANDIDATES): repeated window sizes [5000]"),
        (_adult_defs("  loop: {training_window: 10000, training_window_candidates: [50000, 1000]}\n"),
         "attributes.loop: Value error, training_window_candidates (MLPLATFORM_TRAINING_WINDOW_CANDIDATES): [50000] larger than training_window (10000)"),
        (_adult_defs("  loop: {training_window: 500, min_training_rows: 800}\n"),
         "attributes.loop: Value error, min_training_rows (MLPLATFORM_MIN_TRAINING_ROWS) 800 is more than the training_window (MLPLATFORM_TRAINING_WINDOW) 500"),
        (_adult_defs("").replace("RetrainingLoop", "RetrainingLoops"),
         "type: 'mlplatform.RetrainingLoops' is no component of mlplatform (its one component type: mlplatform.RetrainingLoop)"),
        (_adult_defs("  loop: {training_window_candidates: 5000}\n"), "attributes.loop.training_window_candidates"),
        (_adult_defs("  owner: me\n"), "attributes.owner: Extra inputs are not permitted"),
        ("type: mlplatform.RetrainingLoop\nattributes: [1, 2\n", "cannot be read as YAML"),
        # the many-models probe: status said "attributes.spec: Field required" of a misspelt `atributes:`
        (_adult_defs("").replace("attributes:", "atributes:"),
         "atributes: not a key of a defs.yaml (its keys: type, attributes, template_vars_module, requirements, post_processing)"),
        (ADULT_DEFS.format(spec=REPO_ROOT / "data", extra=""), f"attributes.spec: dataset spec {REPO_ROOT / 'data'} is a folder: name the spec's YAML file in it"),
        # dg takes several components per file; the platform failed with "expected a single document in the stream" (the review)
        (_adult_defs("") + "---\ntype: other.Component\nattributes: {}\n",
         "2 YAML documents, 1 of them mlplatform.RetrainingLoop: declare each model in a defs.yaml of its own folder"),
        # a model's own floor keyed by another task's metric was taken and ignored: the default floor held its promotions
        (_adult_defs("  loop: {quality_floor: {rmse: 80}}\n"),
         "attributes.loop.quality_floor: adult is a binary model, whose floor is on roc_auc (at least): give {roc_auc: <value>} or a number, not rmse"),
        (_adult_defs("  loop: {quality_floor: {roc_auc: 0.7, log_loss: 0.5}}\n"),
         "attributes.loop.quality_floor: adult is a binary model, whose floor is on roc_auc (at least): give {roc_auc: <value>} or a number, not log_loss, roc_auc"),
        (_adult_defs("  loop: {quality_floor: {accuracy: 0.5}}\n"),  # the yeast probe: pydantic's "float: ...; accuracy.[key]: ..." named no metric
         "attributes.loop.quality_floor: adult is a binary model, whose floor is on roc_auc (at least): give {roc_auc: <value>} or a number, not accuracy"),
        (_adult_defs("  loop: {quality_floor: {roc_auc: high}}\n"), "attributes.loop.quality_floor.float: Input should be a valid number"),
        # the stream probe: the misspelling alone was said, and its fix brought the 0 beside it
        (_adult_defs("  loop: {retrain_every_n: 0, min_trainig_rows: 5}\n"),
         "attributes.loop.min_trainig_rows: Extra inputs are not permitted; attributes.loop.retrain_every_n: Input should be greater than or equal to 1"),
    ],
)
def test_a_wrong_declaration_names_its_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _declare(tmp_path / "defs", "m", text)
    with pytest.raises(PlatformError) as refused:
        Platform.discover(Settings(state_dir=tmp_path / "state"), tmp_path / "defs")
    assert str(path) in str(refused.value) and message in str(refused.value), str(refused.value)


def test_a_process_builds_its_platform_again_once_a_declaration_or_its_spec_changes(tmp_path: Path) -> None:
    """The production probe: the Celery worker's pool kept the Platform it built first, so a model scaffolded while the
    stack ran failed every step of every model ("not a mlplatform.RetrainingLoop declaration"), and an edited `loop:`
    was ignored by the steps it ran (a quality_floor of 0.99999 read as the default 0.6)."""
    from mlplatform.root import platform

    defs, settings = tmp_path / "defs", Settings(state_dir=tmp_path / "state")
    adult = _declare(defs, "adult", _adult_defs(""))
    first = platform(settings, defs)
    assert platform(settings, defs) is first and list(first.models) == ["adult"], "built once while nothing changed"
    adult.write_text(_adult_defs("  loop: {quality_floor: 0.99999}\n"), encoding="utf-8")
    assert platform(settings, defs).model("adult").settings.quality_floor == 0.99999, "an edited loop: is read"
    spec = tmp_path / "bike.yaml"
    shipped = (REPO_ROOT / "data" / "bike_sharing.yaml").read_text(encoding="utf-8")
    spec.write_text(shipped.replace("\nname: bike-sharing\n", "\nname: bikes\n").replace("[bike_sharing/", f"[{REPO_ROOT / 'data' / 'bike_sharing'}/"), encoding="utf-8")
    bikes_defs = ADULT_DEFS.format(spec=spec, extra="")
    _declare(defs, "bikes", bikes_defs)
    grown = platform(settings, defs)
    assert sorted(grown.models) == ["adult", "bikes"] and grown.model_declared_in(defs / "bikes" / "defs.yaml").name == "bikes", "a model added is found"
    spec.write_text(spec.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    edited = platform(settings, defs)
    assert edited is not grown, "a spec edited is read again"
    (defs / "bikes" / "defs.yaml").write_text("type: mlplatform.RetrainingLoop\nattributes: [1, 2\n", encoding="utf-8")  # being written
    assert platform(settings, defs) is edited, "the steps in flight go on with the declarations read before"
    _declare(defs, "bikes", bikes_defs)
    assert platform(settings, defs) is not edited and sorted(platform(settings, defs).models) == ["adult", "bikes"]
    # The review: keyed on settings whose secrets were masked, two that differ in a secret alone (a store's URL) shared one.
    one, other = (platform(settings.model_copy(update={"serve_token": SecretStr(token)}), defs) for token in ("first", "second"))
    assert one is not other and one is platform(settings.model_copy(update={"serve_token": SecretStr("first")}), defs)


def test_a_models_floors_set_by_a_variable_or_its_loop_are_chosen_and_a_default_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The waiver of a default live floor the champion never met rests on which settings were set: the composition root
    merged every model's settings from all of the defaults' values, so every floor read as set (the review)."""
    from mlplatform.pipeline.live_quality import bounds
    from mlplatform.root import platform

    monkeypatch.setenv("MLPLATFORM_LIVE_MIN_PRECISION", "0.5")
    defs = tmp_path / "defs"
    _declare(defs, "adult", _adult_defs("  loop: {live_min_recall: 0.4}\n"))
    model = platform(Settings(state_dir=tmp_path / "state"), defs).model("adult")
    assert [(b.metric, b.value, b.chosen) for b in bounds(model.settings, model.spec)] == [("precision", 0.5, True), ("recall", 0.4, True)]
    _declare(defs, "adult", _adult_defs(""))
    monkeypatch.delenv("MLPLATFORM_LIVE_MIN_PRECISION")
    model = platform(Settings(state_dir=tmp_path / "state"), defs).model("adult")
    assert [(b.metric, b.chosen) for b in bounds(model.settings, model.spec)] == [("precision", False), ("recall", False)]


def test_two_models_with_one_name_are_refused_naming_both_files(tmp_path: Path) -> None:
    defs = tmp_path / "defs"
    first = _declare(defs, "a", _adult_defs(""))
    second = _declare(defs, "b", _adult_defs("  loop: {retrain_every_n: 10}\n"))
    _declare(defs, "other", "type: some_other.Component\nattributes: {}\n---\ntype: some_other.Component\nattributes: {}\n")  # none of ours
    with pytest.raises(PlatformError, match="two models named 'adult'") as refused:
        Platform.discover(Settings(state_dir=tmp_path / "state"), defs)
    assert str(first) in str(refused.value) and str(second) in str(refused.value)


def test_a_defs_yaml_takes_the_keys_dagster_takes() -> None:
    from dagster.components.core.defs_module import ComponentFileModel

    assert set(COMPONENT_FILE_KEYS) == set(ComponentFileModel.model_fields), "a key Dagster added or dropped: COMPONENT_FILE_KEYS follows it"


@pytest.mark.parametrize(("refused", "suggested"), [("ünï", "uni"), ("Churn.V2", "churn_v2"), ("_x", "x"), ("y" * 70, "y" * 63), ("!!!", "my_model")])
def test_a_refused_model_name_gets_a_suggestion_the_rule_takes(refused: str, suggested: str) -> None:
    assert model_name_like(refused) == suggested and re.fullmatch(MODEL_NAME, suggested)


def test_a_model_s_own_floor_on_its_metric_is_taken(tmp_path: Path) -> None:
    defs = tmp_path / "defs"
    _declare(defs, "adult", _adult_defs("  loop: {quality_floor: {roc_auc: 0.75}}\n"))
    assert Platform.discover(Settings(state_dir=tmp_path / "state"), defs).models["adult"].settings.floor_of("roc_auc") == 0.75
    _declare(defs, "adult", _adult_defs("  loop: {live_min_precision: null, live_min_recall: 0.2}\n"))
    loop = Platform.discover(Settings(state_dir=tmp_path / "state"), defs).models["adult"].settings
    assert (loop.live_min_precision, loop.live_min_recall) == (None, 0.2), "an explicit null unsets the floor for this model"
    _declare(defs, "adult", _adult_defs("  loop: {retrain_every_n: null}\n"))
    with pytest.raises(PlatformError, match="attributes.loop.retrain_every_n: Input should be a valid integer"):
        Platform.discover(Settings(state_dir=tmp_path / "state"), defs)


def test_the_components_own_path_declares_a_model_as_its_short_name_does(tmp_path: Path) -> None:
    """dg resolves `mlplatform.orchestration.component.RetrainingLoop` to the component; the CLI skipped it as none of ours."""
    defs = tmp_path / "defs"
    _declare(defs, "adult", _adult_defs("").replace(
        "mlplatform.RetrainingLoop", "mlplatform.orchestration.component.RetrainingLoop"))
    assert list(Platform.discover(Settings(state_dir=tmp_path / "state"), defs).models) == ["adult"]


def test_two_models_whose_names_are_one_dagster_name_are_refused_naming_each(tmp_path: Path) -> None:
    """`adult_fast` and `adult-fast` are one asset prefix: the message said "two models named 'adult-fast'"."""
    defs = tmp_path / "defs"
    (tmp_path / "adult").symlink_to(REPO_ROOT / "data" / "adult")  # the specs' source files, relative to their folder
    for folder, name in (("a", "adult_fast"), ("b", "adult-fast")):
        spec = tmp_path / f"{folder}.yaml"
        spec.write_text((REPO_ROOT / "data" / "adult.yaml").read_text(encoding="utf-8").replace("name: adult\n", f"name: {name}\n"), encoding="utf-8")
        _declare(defs, folder, ADULT_DEFS.format(spec=spec, extra=f"  landing_dir: {folder}-drop\n"))
    with pytest.raises(PlatformError, match=r"models 'adult_fast' \(.*\) and 'adult-fast' \(.*\) have one Dagster name, 'adult_fast': names that differ only"):
        Platform.discover(Settings(state_dir=tmp_path / "state"), defs)


def test_one_quality_floor_for_models_whose_metrics_differ_is_refused_and_a_floor_per_metric_is_taken(tmp_path: Path) -> None:
    """MLPLATFORM_QUALITY_FLOOR=0.7, the README's AUC, was also bike-sharing's RMSE ceiling: no regression model was ever promoted."""
    with pytest.raises(PlatformError, match=r"MLPLATFORM_QUALITY_FLOOR=0.7 would be the floor of models whose primary metrics differ "
                                            r"\(adult: roc_auc ≥ 0.7, bike-sharing: rmse ≤ 0.7\)"):
        Platform.discover(Settings(state_dir=tmp_path / "state", quality_floor=0.7))
    models = Platform.discover(Settings(state_dir=tmp_path / "state", quality_floor={"roc_auc": 0.7})).models
    assert models["adult"].settings.floor_of("roc_auc") == 0.7 and models["bike-sharing"].settings.floor_of("rmse") is None
    defs = tmp_path / "defs"  # one metric: one number is meant for every model
    _declare(defs, "adult", _adult_defs(""))
    assert Platform.discover(Settings(state_dir=tmp_path / "state", quality_floor=0.7), defs).models["adult"].settings.floor_of("roc_auc") == 0.7
    with pytest.raises(ValidationError, match="Input should be 'roc_auc', 'log_loss' or 'rmse'"):
        Settings(state_dir=tmp_path / "state", quality_floor={"auc": 0.7})
    with pytest.raises(ValidationError, match="Input should be a valid number"):
        Settings(state_dir=tmp_path / "state", quality_floor={"roc_auc": "high"})


@pytest.mark.parametrize("bike_landing", ["../adult/drop", "../adult/drop/bike", "../adult"])
def test_two_models_sharing_a_landing_folder_are_refused(tmp_path: Path, bike_landing: str) -> None:
    """Each file went, without a word, to whichever model ingested it first."""
    defs = tmp_path / "defs"
    adult = _declare(defs, "adult", _adult_defs("  landing_dir: drop\n"))
    bike = _declare(defs, "bike", ADULT_DEFS.format(spec=REPO_ROOT / "data" / "bike_sharing.yaml", extra=f"  landing_dir: {bike_landing}\n"))
    with pytest.raises(PlatformError, match="models 'adult' .* and 'bike-sharing' .* share a landing folder") as refused:
        Platform.discover(Settings(state_dir=tmp_path / "state"), defs)
    assert str(adult) in str(refused.value) and str(bike) in str(refused.value) and "attributes.landing_dir" in str(refused.value)


def test_loop_settings_in_the_yaml_win_over_the_environment_and_landing_is_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLATFORM_RETRAIN_EVERY_N", "123")
    defs = tmp_path / "defs"
    _declare(defs, "adult", _adult_defs("  loop: {retrain_every_n: 777, promotion_margin: 0.01}\n"))
    _declare(defs, "bike", ADULT_DEFS.format(spec=REPO_ROOT / "data" / "bike_sharing.yaml", extra="  landing_dir: drop\n"))
    platform = Platform.discover(Settings(state_dir=tmp_path / "state"), defs)
    adult, bike = platform.model("adult"), platform.model("bike_sharing")
    assert (adult.settings.retrain_every_n, adult.settings.promotion_margin, bike.settings.retrain_every_n) == (777, 0.01, 123)
    assert adult.settings.landing_dir == tmp_path / "state" / "landing" / "adult" and bike.settings.landing_dir == defs / "bike" / "drop"
    assert bike.name == "bike-sharing" and bike.key == "bike_sharing" and platform.model("bike-sharing") is bike


def test_a_model_s_own_serving_settings_let_the_correction_serve_beside_a_model_that_cannot_have_it(tmp_path: Path) -> None:
    """The README listed the online correction among each model's own serving settings, but `loop:` refused it: with a
    multiclass model in the code location, the correction could not be on for any model of one `serve`."""
    defs = tmp_path / "defs"
    colours = tmp_path / "colours.yaml"
    colours.write_text("name: colours\ntask: multiclass\nlabel: y\nclasses: [red, green, blue]\nfeatures: {x: numeric}\n", encoding="utf-8")
    _declare(defs, "adult", _adult_defs("  loop: {serve_online_correction: true, serve_max_batch_rows: 10}\n"))
    _declare(defs, "colours", ADULT_DEFS.format(spec=colours, extra=""))
    platform = Platform.discover(Settings(state_dir=tmp_path / "state"), defs)
    adult, multiclass = platform.model("adult"), platform.model("colours")
    assert (adult.settings.serve_online_correction, adult.settings.serve_max_batch_rows) == (True, 10)
    assert (multiclass.settings.serve_online_correction, multiclass.settings.serve_max_batch_rows) == (False, 1000)
    for model in (adult, multiclass):
        check_supported(model.settings, model.spec)
    with pytest.raises(SettingsError, match="serve_online_correction is on for dataset 'colours' .*, but it is multiclass.*loop: {serve_online_correction: true}"):
        check_supported(multiclass.settings.model_copy(update={"serve_online_correction": True}), multiclass.spec)
    # Declared on the multiclass model itself: refused as the code location loads (dg check defs, status), not at `serve`.
    _declare(defs, "colours", ADULT_DEFS.format(spec=colours, extra="  loop: {serve_online_correction: true}\n"))
    with pytest.raises(PlatformError, match=r"colours/defs.yaml: attributes.loop.serve_online_correction: it is multiclass: the online correction supports"):
        Platform.discover(Settings(state_dir=tmp_path / "state"), defs)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of this project (pyproject.toml, the package, data/) using this environment's packages: `dg scaffold` writes
    into the copy's defs folder, never into the checkout."""
    root = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "workspace.yaml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "mlplatform", root / "mlplatform", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "data", root / "data")
    yield root


def _write_sample(rows: pd.DataFrame, path: Path) -> Path:
    """`rows` as an export in the format its suffix names (csv, parquet or jsonl), as a user's sample for the draft."""
    {"csv": lambda: rows.to_csv(path, index=False), "parquet": lambda: rows.to_parquet(path),
     "jsonl": lambda: rows.to_json(path, orient="records", lines=True)}[path.suffix.lstrip(".")]()
    return path


def _run(project: Path, *argv: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command of this environment run in the copied project, importing the copy's `mlplatform`, with its own Dagster
    home (Dagster refuses a DAGSTER_HOME that does not exist; dg's telemetry, now off, used to create it)."""
    (project / "state" / "dagster").mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "PYTHONPATH": str(project), "DAGSTER_HOME": str(project / "state" / "dagster"), "MLPLATFORM_STATE_DIR": str(project / "state"),
            **FAST_TRAINING, **(env or {})}
    done = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=project, env=full, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _churn_events(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], size=n)
    calls = rng.integers(0, 10, size=n)
    churned = np.where((calls > 5) & (rng.random(n) < 0.85) | (rng.random(n) < 0.08), "yes", "no")
    times = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 60 + seed * 10_000_000, unit="s")
    return pd.DataFrame({"customer_id": [f"s{seed}-{i}" for i in range(n)], "signup_time": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "plan": plan,
                         "monthly_fee": np.round(rng.uniform(5, 90, size=n), 2), "support_calls": calls, "churned": churned})


def test_a_scaffold_whose_sample_cannot_be_drafted_makes_no_model(project: Path, tmp_path: Path) -> None:
    """It left defs.yaml without its dataset.yaml, and that half-made folder stopped every model of the code location loading."""
    sample = tmp_path / "meter.csv"
    sample.write_text("day;load_kw\n", encoding="utf-8")  # a header and no row
    done = _run(project, "dg", "scaffold", "defs", "mlplatform.RetrainingLoop", "meter", "--json-params", json.dumps({"sample": str(sample)}), check=False)
    assert done.returncode != 0 and "no model 'meter' made: cannot draft its spec from" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (project / "mlplatform" / "defs" / "meter").exists()
    # A folder name no spec takes: it was written, and every model of the code location then failed to load.
    done = _run(project, "dg", "scaffold", "defs", "mlplatform.RetrainingLoop", "Churn.V2", check=False)
    assert done.returncode != 0 and "no model 'churn.v2' made: the folder's name gives the model name 'churn.v2', which must be " \
        "1 to 63 lower-case letters, digits, '_' or '-', the first a letter or digit (it names files and the MLflow model); name the folder e.g. churn_v2" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (project / "mlplatform" / "defs" / "Churn.V2").exists()
    # The many-models probe: a second 'bike-sharing' was written, and then no model of the code location loaded.
    for taken in ("bike-sharing", "bike_sharing"):
        done = _run(project, "dg", "scaffold", "defs", "mlplatform.RetrainingLoop", f"again/{taken}", check=False)
        assert done.returncode != 0 and f"no model 'bike-sharing' made: {project / 'mlplatform' / 'defs' / 'bike_sharing' / 'defs.yaml'} declares a model " \
            "of that name already" in done.stderr, done.stderr[-2000:]
        assert not (project / "mlplatform" / "defs" / "again" / taken).exists()
    done = _run(project, "dg", "scaffold", "defs", "mlplatform.RetrainingLoop", "y" * 70, check=False)
    assert done.returncode != 0 and f"name the folder e.g. {'y' * 63}" in done.stderr, "it suggested the refused 70 letters again"


def test_a_third_model_added_by_dg_scaffold_trains_with_no_code_change(project: Path, tmp_path: Path) -> None:
    sample = tmp_path / "churn-sample.csv"
    _churn_events(500, seed=1).to_csv(sample, index=False)
    _run(project, "dg", "scaffold", "defs", "mlplatform.RetrainingLoop", "churn", "--json-params", json.dumps({"sample": str(sample), "label": "churned"}))
    spec_text = (project / "mlplatform" / "defs" / "churn" / "dataset.yaml").read_text(encoding="utf-8")
    assert "label: churned" in spec_text and "id_column: customer_id" in spec_text and "time_column: signup_time" in spec_text
    assert "monthly_fee: numeric" in spec_text and "plan: categorical" in spec_text
    declared = yaml.safe_load((project / "mlplatform" / "defs" / "churn" / "defs.yaml").read_text(encoding="utf-8"))
    assert declared["attributes"]["loop"] == {}, "no loop setting written: it would hide its MLPLATFORM_* variable (the new-user probe)"
    # History features by plan, read over a horizon of one event: most rows' plan was last seen further back (the
    # own-dataset probe: nothing said that serving, rebuilt from that horizon, reads such a key as new).
    (project / "mlplatform" / "defs" / "churn" / "dataset.yaml").write_text(
        spec_text + "history:\n  warmup_events: 1\n  features:\n    - {kind: events, by: plan}\n    - {kind: mean, of: monthly_fee, n: 2, by: plan}\n",
        encoding="utf-8")
    assert "All definitions loaded successfully" in _run(project, "dg", "check", "defs").stdout
    listed = _run(project, "dg", "list", "defs", "--json").stdout
    assert "churn/trained_model" in listed and "churn_retraining_sensor" in listed and "adult/trained_model" in listed

    landing = project / "state" / "landing" / "churn"
    landing.mkdir(parents=True)
    _churn_events(1500, seed=2).to_csv(landing / "first.csv", index=False)
    done = _run(project, "mlplatform", "materialize", "--model", "churn")
    assert "materialized raw_events, features, trained_model, evaluation_report of churn" in done.stdout
    [status] = json.loads(_run(project, "mlplatform", "status", "--model", "churn", "--json", "--dagster").stdout)
    assert status["champion"] == 1 and status["events"]["total"] == 1500 and status["registered_model"] == "mlplatform-churn"
    horizon = status["history_horizon"]["plan"]
    assert re.match(r"plan: [1-9]\d* of 1497 rows \(\d+\.\d%\) read an event of the key further back than serving's horizon \(warmup_events 1,",
                    horizon), horizon
    said = _run(project, "mlplatform", "status", "--model", "churn", "--dagster").stdout
    assert f"history horizon of the latest features: {horizon}" in said

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(project), "MLPLATFORM_STATE_DIR": str(project / "state"), "MLPLATFORM_SERVE_RELOAD_SECONDS": "0.2"}
    log_path = project / "state" / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([str(BIN / "mlplatform"), "serve", "--model", "churn", "--port", str(port)], cwd=project, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until_up(server, "/models/churn/readyz")
        url = server.url
        record = {"plan": "team", "monthly_fee": 80.5, "support_calls": 8}
        answer = httpx.post(f"{url}/models/churn/predict", json=record, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == 1 and answer.json()["prediction"] in ("no", "yes")
        _serving_follows_its_spec_file(url, answer.json()["event_id"], project / "mlplatform" / "defs" / "churn" / "dataset.yaml")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _serving_follows_its_spec_file(url: str, event_id: str, spec_path: Path) -> None:
    """A label spelling (or class) added to the spec while serving is taken by /feedback at the next reload tick, where
    it was refused until a restart (labels lost); an edit of the features keeps the spec serving has and /readyz says to
    restart; so does a spec file that no longer loads. The spec is restored after."""
    spec_text = spec_path.read_text(encoding="utf-8")

    def feedback() -> httpx.Response:
        return httpx.post(f"{url}/models/churn/feedback", json={"event_id": event_id, "label": "left"}, timeout=10)

    def note() -> str | None:
        return httpx.get(f"{url}/models/churn/readyz", timeout=10).json().get("spec_note")

    try:
        refused = feedback()
        assert refused.status_code == 422 and "'left' is not one of" in refused.text
        spec_path.write_text(spec_text + "label_map: {left: 'yes'}\n", encoding="utf-8")
        wait_until("the label spelling taken", lambda: feedback().status_code == 200, 30)
        assert note() is None
        fewer = spec_text.replace("  support_calls: numeric\n", "")
        assert fewer != spec_text
        spec_path.write_text(fewer, encoding="utf-8")
        wait_until("the spec note", lambda: note() is not None, 30)
        assert "(features)" in str(note()) and "restart it" in str(note())
        assert httpx.post(f"{url}/models/churn/predict", json={"plan": "team", "monthly_fee": 80.5, "support_calls": 8}, timeout=10).status_code == 200
        spec_path.write_text("name: [", encoding="utf-8")
        wait_until("the spec note", lambda: "no longer loads" in str(note()), 30)
        renamed = yaml.safe_load(spec_text)  # a class renamed: taken, and the served model, which predicts 'no', said not to fit
        assert renamed["positive_class"] == "yes"
        renamed.update(classes=["stayed", "yes"])
        spec_path.write_text(yaml.safe_dump(renamed), encoding="utf-8")
        wait_until("the spec note", lambda: "does not fit the edited dataset spec" in str(note()), 30)
        assert "predicts classes dataset spec 'churn' does not have: ['no']" in str(note())
        flipped = yaml.safe_load(spec_text)  # taken live, every served probability (of 'yes') would have been read as of 'no'
        flipped.update(positive_class="no")
        spec_path.write_text(yaml.safe_dump(flipped), encoding="utf-8")
        wait_until("the spec note", lambda: "changed (positive_class)" in str(note()), 30)
        assert "restart it" in str(note())
        spec_path.write_text(spec_text + "decision_threshold: best_f1\n", encoding="utf-8")  # the next training's: the served model keeps its own
        wait_until("the threshold edit taken", lambda: note() is None, 30)
    finally:
        spec_path.write_text(spec_text, encoding="utf-8")


def test_a_broken_declaration_fails_dg_check_defs_naming_the_file_and_field(project: Path) -> None:
    broken = _declare(project / "mlplatform" / "defs", "broken", ADULT_DEFS.format(spec="../../../data/adult.yaml", extra="  loop: {retrain_every_n: -3}\n"))
    try:
        done = _run(project, "dg", "check", "defs", check=False)
        assert done.returncode != 0
        said = done.stdout + done.stderr
        assert str(broken) in said and "attributes.loop.retrain_every_n" in said, said[-3000:]
        refused = _run(project, "mlplatform", "status", check=False)
        assert refused.returncode == 2 and "attributes.loop.retrain_every_n" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        shutil.rmtree(broken.parent)


def test_an_mlplatform_variable_that_names_no_setting_fails_the_code_location_load_naming_it(project: Path) -> None:
    """It was ignored: the code location loaded, and the misspelt setting did nothing (the new-user probe). Dagster shows
    the refusal's own sentence as the load's error."""
    done = _run(project, "dg", "check", "defs", env={"MLPLATFORM_RETRAIN_EVRY_N": "10"}, check=False)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "SettingsError: MLPLATFORM_RETRAIN_EVRY_N is no setting (did you mean MLPLATFORM_RETRAIN_EVERY_N?)" in said, said[-3000:]


def test_two_overlapping_retrainings_one_refused_or_each_on_its_own_snapshot(project: Path, adult_rows: pd.DataFrame) -> None:
    """`mlplatform materialize` and an asset run launched outside it at once (a run of the UI's asset job, which carries
    no retraining tag): the one that finds the other unfinished is refused, naming it; each that ran (both, if one ended
    before the other looked) used the snapshot and challenger its own run produced, not the other run's."""
    from mlplatform.domain.spec import load_spec

    spec = load_spec(project / "data" / "adult.yaml")
    write_batches(adult_rows.iloc[:2000], spec, project / "state" / "landing" / "adult", 2000, prefix="overlap")
    _run(project, "mlplatform", "materialize", "--model", "adult", "--select", "raw_events")
    commands = [("mlplatform", "materialize", "--model", "adult", "--select", "features,trained_model,evaluation_report"),
                ("dagster", "asset", "materialize", "-m", "mlplatform.orchestration.definitions", "--select",
                 "adult/features,adult/trained_model,adult/evaluation_report")]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda argv: _run(project, *argv, check=False), commands))
    ran = [o for o in outcomes if o.returncode == 0]
    assert ran, [o.stderr[-2000:] for o in outcomes]
    for refused in (o for o in outcomes if o.returncode != 0):
        said = refused.stdout + refused.stderr
        assert re.search(r"retraining run \S+ of adult is unfinished|a retraining of adult is already running", said), said[-3000:]
    with dg.DagsterInstance.from_config(str(project / "state" / "dagster")) as instance:
        versions = set()
        for run in instance.get_runs(limit=3):
            records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
            meta = {r.event_log_entry.dagster_event.asset_key.path[-1]: {k: v.value for k, v in  # type: ignore[union-attr]
                    r.event_log_entry.asset_materialization.metadata.items()} for r in records}  # type: ignore[union-attr]
            if "raw_events" in meta or not meta:
                continue
            assert set(meta) == {"features", "trained_model", "evaluation_report"}
            assert meta["features"]["snapshot"] == meta["trained_model"]["snapshot"] and run.run_id in str(meta["trained_model"]["snapshot"])
            assert meta["evaluation_report"]["challenger_version"] == meta["trained_model"]["mlflow_version"]
            versions.add(meta["trained_model"]["mlflow_version"])
        assert len(versions) == len(ran), "each run that ran registered and judged its own challenger"


def test_two_models_loop_independently(state: Settings, instance: dg.DagsterInstance, adult_rows: pd.DataFrame) -> None:
    """Each model's sensor reads only its own log and champion, and its runs touch only its own assets and registry."""
    adult, bike = model(ADULT), model(BIKE)
    bike_rows = read_source(bike.spec)
    write_batches(adult_rows.iloc[:1500], adult.spec, adult.settings.landing_dir, 1500)
    write_batches(bike_rows.iloc[:1500], bike.spec, bike.settings.landing_dir, 1500)
    for name in (ADULT, BIKE):
        assert materialize(instance, LOOP, name, raise_on_error=True).success
    assert adult.registry.champion_record().version == 1 and bike.registry.champion_record().version == 1  # type: ignore[union-attr]

    write_batches(adult_rows.iloc[1500:2600], adult.spec, adult.settings.landing_dir, 1100, prefix="more")
    materialize(instance, ["raw_events"], ADULT, raise_on_error=True)
    adult_tick = tick(instance, ModelNames(ADULT).retraining_sensor, None)
    bike_tick = tick(instance, ModelNames(BIKE).retraining_sensor, None)
    assert not bike_tick.run_requests and (bike_tick.skip_message or "").startswith("0 new labelled events")
    [request] = adult_tick.run_requests or []
    assert request.tags[MODEL_TAG] == ADULT and request.tags[REASON_TAG] == "new_observations"
    run = launch(instance, ADULT, request)
    keys = {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}  # type: ignore[union-attr]
    assert keys == {"adult/features", "adult/trained_model", "adult/evaluation_report"}
    assert [v.version for v in bike.registry.versions()] == [1] and len(adult.registry.versions()) == 2
    assert bike.event_log.counts().total == 1500


def test_a_draft_spec_from_a_bad_sample_says_what_is_wrong(tmp_path: Path) -> None:
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    one_column = tmp_path / "one.csv"
    one_column.write_text("churned\nyes\nno\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least one row with a feature and a label column"):
        draft_spec("churn", one_column)
    sample = tmp_path / "sample.csv"
    _churn_events(50, seed=3).to_csv(sample, index=False)
    with pytest.raises(ValueError, match="no column 'outcome'"):
        draft_spec("churn", sample, label="outcome")
    with pytest.raises(FileNotFoundError):
        draft_spec("churn", tmp_path / "missing.csv")
    template = yaml.safe_load(draft_spec("churn", None))
    assert parse_spec(template).name == "churn", "the template is a valid spec to edit"



def test_a_draft_spec_reads_a_date_column_and_an_hour_column_as_one_clock(tmp_path: Path) -> None:
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    sample = tmp_path / "rides.csv"
    rides = pd.DataFrame({"dteday": ["2011-01-01", "2011-01-01", "2011-01-02"], "hr": [0, 23, 5], "temp": [0.2, 0.3, 0.1], "cnt": [16.5, 40, 32]})
    for separator in (",", ";"):  # a European export is read as landing reads it
        rides.to_csv(sample, index=False, sep=separator)
        spec = parse_spec(yaml.safe_load(draft_spec("rides", sample)))
        assert (spec.time_column, spec.time_offset and spec.time_offset.model_dump(), list(spec.features)) == ("dteday", {"column": "hr", "unit": "hours"}, ["hr", "temp"])
    rides.assign(dteday=["2011-01-01T05:30", "2011-01-01T06:00", "2011-01-02T00:00"]).to_csv(sample, index=False)
    assert parse_spec(yaml.safe_load(draft_spec("rides", sample))).time_offset is None, "a time column with times of day needs no offset"
    rides.assign(hr=[0, 24, 5]).to_csv(sample, index=False)
    assert parse_spec(yaml.safe_load(draft_spec("rides", sample))).time_offset is None, "24 is not an hour of a day"


def test_a_draft_says_a_record_number_is_one_and_a_series_without_a_feature_what_it_needs(tmp_path: Path) -> None:
    """The River probe: `rid`, an export's row index 0..N-1, was drafted as a numeric feature (each row's position, a value
    never seen again) without a word, and a series of a time and a label alone was refused naming no way on."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    sample = tmp_path / "sea.csv"
    rows = pd.DataFrame({"rid": range(50), "x0": [i * 0.37 % 10 for i in range(50)], "alarm": ["yes", "no"] * 25})
    rows.to_csv(sample, index=False)
    text = draft_spec("sea", sample)
    assert "rid" in parse_spec(yaml.safe_load(text)).features, text
    assert ("# 'rid': whole numbers counting up by 1 in every row (a record number?); kept as a numeric feature, which tells the model each "
            "row's position, a value never seen again: if it numbers the rows, make it id_column (or put it in drop)") in text
    rows.assign(rid=[3 * i for i in range(50)]).to_csv(sample, index=False)
    assert "record number" not in draft_spec("sea", sample), "numbers that do not count up by 1 are said to be nothing"
    # The new-user probe: a 2,000-event stream never retrained by its count, and nothing said why.
    assert ("# the sample has 50 rows, fewer than the 5000 new labelled events that retrain a model by their count (retrain_every_n): if the "
            "stream is this size, set in this model's defs.yaml loop: {retrain_every_n: 100}") in draft_spec("sea", sample, retrain_every_n=5000)
    assert "retrain_every_n" not in draft_spec("sea", sample, retrain_every_n=40), "a sample with more rows than that"
    pd.DataFrame({"month": pd.date_range("1949-01-01", periods=30, freq="MS").strftime("%Y-%m-%d"), "passengers": range(100, 130)}).to_csv(sample, index=False)
    with pytest.raises(ValueError, match=r"a series predicted from its own past needs one its events carry, e.g. a calendar field \(month, hour\)"):
        draft_spec("airline", sample)


@pytest.mark.parametrize(
    ("times", "time_format", "note"),
    [
        (["2011-01-01", "2011-01-13T05:00", "2011-02-01"], None, ""),
        (["01/01/2011", "13/01/2011", "01/02/2011"], "%d/%m/%Y", ""),
        (["01/01/2011", "12/01/2011", "01/02/2011"], "%d/%m/%Y", "# time_format '%d/%m/%Y' guessed; '%m/%d/%Y' reads the sample too: check"),
        (["01/13/2011", "02/01/2011", "03/01/2011"], "%m/%d/%Y", ""),
        (["12/06/2026 04:54 AM", "12/06/2026 01:05 PM", "12/13/2026 11:59 PM"], "%m/%d/%Y %I:%M %p", ""),  # a 12-hour clock (the new-user probe)
        ([1293840000, 1293843600, 1293847200], "epoch_s", ""),
        ([1293840000000, 1293843600000, 1293847200000], "epoch_ms", ""),
        ([2011, 2012, 2013], "year", ""),
        ([20110101, 20110113, 20110201], "%Y%m%d", ""),
        ([20110101, None, 20110201], "%Y%m%d", ""),  # read as floats for the empty cell: dropped as no time (the review)
        (["soon", "later", "never"], None, "# 'date' is named like a time, but no time_format the draft knows reads its values (e.g. 'soon'): kept as a "
         "feature, not the time column; a count of days or hours since a start is a time with time_offset (the start's date as time_column, and "
         "time_offset: {column: date, unit: days})"),
        # The history probe: a day number (0, 2, … 21) drafted as the time column in iso quarantined every row at landing.
        ([0, 2, 4], None, "# 'date' is named like a time, but no time_format the draft knows reads its values (e.g. '0'): kept as a feature, not the "
         "time column; a count of days or hours since a start is a time with time_offset (the start's date as time_column, and time_offset: "
         "{column: date, unit: days})"),
        # The own-dataset probe: 3 of 5,000 values that were no time at all read as a wrong format.
        ([f"2026-09-{d:02d}T09:16:55+09:00" for d in range(1, 29)] + ["not a time"], None,
         "# time_format 'iso' reads 28 of the 29 values of 'date'; 1 is no time in it (e.g. 'not a time'): landing quarantines those rows"),
        ([f"{d:02d}/01/2011" for d in range(13, 32)] + ["n/a?"], "%d/%m/%Y",
         "# time_format '%d/%m/%Y' reads 19 of the 20 values of 'date'; 1 is no time in it (e.g. 'n/a?'): landing quarantines those rows"),
    ],
)
def test_a_draft_spec_guesses_how_the_time_column_is_written(tmp_path: Path, times: list[object], time_format: str | None, note: str) -> None:
    """Drafted without a time_format, a date column written '13/01/2011' quarantined every row at landing."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    sample = tmp_path / "sample.csv"
    n = len(times)
    pd.DataFrame({"date": times, "temp": [0.2, 0.3, 0.1] * (n // 3) + [0.2] * (n % 3), "cnt": [16.5, 40, 32] * (n // 3) + [5] * (n % 3)}).to_csv(sample, index=False)
    text = draft_spec("rides", sample)
    drafted = parse_spec(yaml.safe_load(text))
    assert drafted.time_format == time_format and (drafted.time_column == "date") == ("named like a time" not in note), text
    assert (note in text.splitlines()) if note else not [line for line in text.splitlines() if "time_format" in line and line.startswith("#")]


def test_a_count_drafted_as_classes_says_regression_would_predict_between_and_beyond(tmp_path: Path) -> None:
    """The third new-user probe: solar flares' counts 0-8 (no 7) were drafted as 8 classes without a word; /feedback of a 7
    was then refused, and a class-8 row in the hold-out failed the model's floor."""
    from mlplatform.domain.spec_draft import draft_spec

    sample = tmp_path / "flares.csv"
    pd.DataFrame({"area": [1, 2, 1, 3, 2, 1, 2, 1, 3], "flares": [0, 0, 1, 2, 3, 4, 5, 6, 8]}).to_csv(sample, index=False)
    text = draft_spec("flares", sample, label="flares")
    assert ("# label 'flares' holds whole numbers 0 to 8: drafted as 8 classes; if it counts or measures something, task: regression predicts "
            "the values between and beyond them (as classes, a label of 7, which the file lacks, is refused)") in text.splitlines(), text
    assert "holds whole numbers" not in draft_spec("flares", sample, label="flares", task="multiclass"), "a task the user chose is not questioned"
    pd.DataFrame({"area": [1, 2, 1, 3], "grade": ["a", "b", "c", "a"]}).to_csv(sample, index=False)
    assert "holds whole numbers" not in draft_spec("flares", sample, label="grade")


def test_a_draft_spec_keeps_codes_with_leading_zeros_as_text(tmp_path: Path) -> None:
    """Read as numbers, a zip code `02134` was drafted as a numeric feature (2134.0, the zeros lost), and classes `01`,
    `02` as `1`, `2`, which no landed label (read as text) matched."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    sample = tmp_path / "codes.csv"
    sample.write_text("zip,amount,grade\n02134,1.5,01\n10001,2.5,02\n,0.5,01\n00501,0,02\n", encoding="utf-8")
    text = draft_spec("codes", sample, label="grade")
    spec = parse_spec(yaml.safe_load(text))
    assert dict(spec.features) == {"zip": "categorical", "amount": "numeric"} and spec.classes == ["01", "02"], text
    assert "# 'zip': digits with leading zeros (a code?): categorical, so '02134' stays '02134'; check" in text


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_drafted_spec_lands_its_own_sample_whole(tmp_path: Path, fmt: str) -> None:
    """The new-user probe: a pandas CSV of a 0/1 label with gaps says 1.0 and 0.0, which the drafted classes '0', '1'
    did not take, and landing quarantined every labelled row; a JSON Lines file's zip codes "02134" were drafted as a
    numeric feature (pandas read them as numbers), and landed as 2134."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec
    from mlplatform.pipeline.landing import ingest_file
    from mlplatform.stores.eventlog import EventLog

    rows = pd.DataFrame({"id": [f"b{i}" for i in range(300)], "zip": [f"0{i % 50:04d}" for i in range(300)], "x": np.arange(300.0),
                         "churned": [1, 0, np.nan] * 100})
    sample = _write_sample(rows, tmp_path / f"churn.{fmt}")
    text = draft_spec("churn", sample, label="churned")
    spec = parse_spec(yaml.safe_load(text))
    assert text.startswith(f"# Dataset spec of model churn, drafted from churn.{fmt}"), text
    assert spec.classes == ["0", "1"] and dict(spec.features) == {"zip": "categorical", "x": "numeric"}, text
    assert spec.label_map == ({"0.0": "0", "1.0": "1"} if fmt == "csv" else {}), text
    mixed = tmp_path / "mixed.csv"  # 1 and 1.0 in one file (the review: "4 distinct labels in the whole file, 2 in its first 4 rows")
    mixed.write_text("x,y\n1,1\n2,1.0\n3,0\n4,0.0\n", encoding="utf-8")
    drafted = draft_spec("mixed", mixed, label="y")
    assert parse_spec(yaml.safe_load(drafted)).label_map == {"0.0": "0", "1.0": "1"} and "distinct labels" not in drafted, drafted
    cased = tmp_path / "cased.csv"
    rows.assign(churned=["yes", "YES", " yes "] * 100).to_csv(cased, index=False)
    assert ("# classes 'YES' and 'yes' differ only in case: if they are one class, keep one in classes and map the others to it "
            "in label_map (e.g. {'YES': 'yes'})") in draft_spec("cased", cased, label="churned").splitlines()
    # Two classes spelt in several cases (the new-user probe: 'NO, No, YES, Yes, no, yes' drafted as a 6-class multiclass):
    # binary, one spelling each, the others mapped to it; the file lands whole.
    rows.assign(churned=["Yes", "YES", "no", "NO", "No", "yes"] * 50).to_csv(cased, index=False)
    merged = parse_spec(yaml.safe_load(text_of_cased := draft_spec("cased", cased, label="churned")))
    assert (merged.task.value, merged.classes, merged.positive_class) == ("binary", ["no", "yes"], "yes"), text_of_cased
    assert merged.label_map == {"NO": "no", "No": "no", "YES": "yes", "Yes": "yes"}, text_of_cased
    assert "# classes 'NO' and 'No' and 'no' differ only in case: drafted as one class, 'no', label_map mapping the others to it" in text_of_cased
    log = EventLog(tmp_path / "cased.sqlite", merged)
    try:
        assert (ingest_file(cased, merged, log).ingested, log.counts().labelled) == (300, 300)
    finally:
        log.close()
    log = EventLog(tmp_path / "events.sqlite", spec)
    try:
        outcome = ingest_file(sample, spec, log)
        assert (outcome.ingested, outcome.quarantined, log.counts().labelled) == (300, 0, 200)
        assert log.events_between()["zip"].head(2).tolist() == ["00000", "00001"]
    finally:
        log.close()


def test_a_draft_spec_of_an_export_with_spaced_and_foreign_names_loads(tmp_path: Path) -> None:
    """A wine export: `lot id` and `bottled at` were drafted as categorical features (the name patterns needed '_'),
    and `alcohol %` and `magnésium` as features the spec then refused, so the scaffolded model did not load."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    n = 40
    sample = tmp_path / "wine.csv"
    pd.DataFrame({"lot id": [f"LOT-{i:04d}" for i in range(n)], "bottled at": pd.date_range("2026-01-01", periods=n, freq="h", tz="+02:00").astype(str),
                  "alcohol %": [12.5] * n, "magnésium": [100.0] * n, "région": ["Piémont", "Bordeaux"] * (n // 2), "colour intensity": range(n),
                  "cultivar": ["barolo", "barbera"] * (n // 2)}).to_csv(sample, index=False)
    text = draft_spec("wine", sample, label="cultivar")
    spec = parse_spec(yaml.safe_load(text))
    assert (spec.id_column, spec.time_column, spec.time_format, list(spec.features)) == ("lot id", "bottled at", None, ["colour intensity"])
    notes = [line for line in text.splitlines() if line.startswith("# left out")]
    assert notes == [f"# left out {name!r} (in drop): feature name {name!r} must be {NAME_RULE}; rename the column in your export to use it as a feature"
                     for name in ("alcohol %", "magnésium", "région")], text
    assert spec.drop == ["alcohol %", "magnésium", "région"], "a record sent as it appears in the export is served, its left-out columns ignored"
    assert "magnésium" in text and "\\x" not in text, "names are written as they are, not escaped"
    export = pd.read_csv(sample)
    export[["bottled at", "lot", "alcohol %", "colour intensity", "Colour Intensity", "cultivar"]] = export[
        ["bottled at", "lot id", "alcohol %", "colour intensity", "colour intensity", "cultivar"]].to_numpy()
    export["colour_intensity"] = export["colour intensity"]  # LightGBM's name for 'colour intensity': training failed on the pair
    export[["bottled at", "lot", "colour intensity", "Colour Intensity", "colour_intensity", "cultivar"]].rename(columns={"bottled at": "when"}).to_csv(sample, index=False)
    guessed = draft_spec("wine", sample, label="cultivar")
    spec = parse_spec(yaml.safe_load(guessed))
    assert (spec.id_column, spec.time_column, list(spec.features)) == ("lot", "when", ["colour intensity"]), "times are distinct too: never the id guess"
    assert "# left out 'colour_intensity' (in drop): it is 'colour intensity' to LightGBM, which reads a space in a name as '_'; rename the column in your export to use it as a feature" in guessed
    assert {"# id_column 'lot' guessed: its every value in the sample differs; check", "# time_column 'when' guessed: its values read as times; check"} <= set(guessed.splitlines())
    assert "# left out 'Colour Intensity' (in drop): it differs only in case from 'colour intensity': the event log's column names do not; rename the column in your export to use it as a feature" in guessed
    tasted = export[["lot", "cultivar"]].assign(tasted=[f"{1 + i % 28:02d}/01/2024 {i % 24:02d}:00" for i in range(n)])  # probe: a categorical feature
    tasted.assign(score=range(n)).to_csv(sample, index=False)
    spec = parse_spec(yaml.safe_load(draft_spec("wine", sample, label="cultivar")))
    assert (spec.time_column, spec.time_format, list(spec.features)) == ("tasted", "%d/%m/%Y %H:%M", ["score"])
    export[["bottled at", "lot id", "alcohol %", "cultivar"]].to_csv(sample, index=False)
    with pytest.raises(ValueError, match=r"no column can be a feature \(left out 'alcohol %'"):
        draft_spec("wine", sample, label="cultivar")


@pytest.mark.parametrize("name", ["created_ms", "timestamp_utc", "event_epoch", "updated_at", "created"])
def test_a_draft_spec_knows_common_time_column_names(tmp_path: Path, name: str) -> None:
    """`created_ms` was drafted as a numeric feature: the name was not known as a time."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    sample = tmp_path / "sample.csv"
    pd.DataFrame({name: [1293840000000, 1293843600000], "temp": [0.2, 0.3], "cnt": [16.5, 40]}).to_csv(sample, index=False)
    spec = parse_spec(yaml.safe_load(draft_spec("rides", sample)))
    assert (spec.time_column, spec.time_format, list(spec.features)) == (name, "epoch_ms", ["temp"])


def test_a_draft_spec_with_no_time_column_says_so(tmp_path: Path) -> None:
    """The own-dataset probe: epoch milliseconds under a name the draft did not know became a numeric feature, with no
    word that no time column was found (the model learns from a rising number, and file order is time order)."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    sample = tmp_path / "sample.csv"
    pd.DataFrame({"stamp": [1293840000000, 1293843600000], "temp": [0.2, 0.3], "cnt": [16.5, 40]}).to_csv(sample, index=False)
    assert "# no time column found (by name, or by values that read as times): events would be timed as they land" in draft_spec("rides", sample)
    pd.DataFrame({"updated": [1293850000000, 1293853600000], "created": [1293840000000, 1293843600000], "cnt": [16.5, 40]}).to_csv(sample, index=False)
    assert parse_spec(yaml.safe_load(draft_spec("rides", sample))).time_column == "created", "when it happened, not when it last changed"


def test_a_draft_spec_takes_no_repeating_column_for_the_event_id(tmp_path: Path) -> None:
    """The own-dataset probe: the first name ending `_id` became the id, whatever its values: `customer_id` (500
    customers over 5000 orders) was drafted as the event id, and landing the very sample refused 90 % of it as ids
    repeated with other values. An entity key is drafted a categorical feature (the draft says `key` makes it history's alone)."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    n = 60
    sample = tmp_path / "orders.csv"
    orders = pd.DataFrame({"customer_id": [i % 7 for i in range(n)], "Store ID": [f"S{i % 3}" for i in range(n)], "order_id": [f"o{i}" for i in range(n)],
                           "amount": [float(i) for i in range(n)], "outcome": ["kept", "returned"] * (n // 2)})
    orders.to_csv(sample, index=False)
    text = draft_spec("orders", sample)
    spec = parse_spec(yaml.safe_load(text))
    assert spec.id_column == "order_id", text
    assert (spec.features["customer_id"], spec.features["Store ID"], spec.features["amount"]) == ("categorical", "categorical", "numeric")
    assert f"# 'customer_id' is named like an id but has 7 distinct values in {n} rows: not the event id" in text
    assert "make it `key` if only history features `by:` it should read it" in text
    orders.drop(columns="order_id").to_csv(sample, index=False)
    spec = parse_spec(yaml.safe_load(draft_spec("orders", sample)))
    assert spec.id_column is None and {"customer_id", "Store ID"} <= set(spec.features), "no id: landing makes one per event"
    orders.assign(order_id=orders["order_id"].where(orders.index != 5)).to_csv(sample, index=False)
    text = draft_spec("orders", sample)
    assert parse_spec(yaml.safe_load(text)).id_column is None, "an event without an id cannot be told apart"
    assert f"# 'order_id' is named like an id but 1 of the sample's {n} rows have none: not the event id" in text and "'order_id' is named like an id but has" not in text
    orders.assign(line_id=[f"l{i}" for i in range(n)]).to_csv(sample, index=False)
    text = draft_spec("orders", sample)
    assert parse_spec(yaml.safe_load(text)).id_column == "order_id" and "'line_id' is named like an id" not in text, "unique: no key, and no repeats to speak of"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_a_draft_spec_takes_its_classes_from_the_whole_file(tmp_path: Path, fmt: str) -> None:
    """The draft read its first 5000 rows: an export in time order whose third class came later was drafted binary with
    two classes, and landing quarantined every row of the third."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import SAMPLE_ROWS, draft_spec

    rows = pd.DataFrame({"x": np.arange(SAMPLE_ROWS + 2000, dtype="float64"), "weather": [1, 2] * (SAMPLE_ROWS // 2) + [3, 1] * 1000})
    rows.loc[SAMPLE_ROWS + 7, "weather"] = None  # a gap: the chunk reads 1.0, landing and the spec say 1
    sample = _write_sample(rows, tmp_path / f"weather.{fmt}")
    text = draft_spec("weather", sample, label="weather")
    spec = parse_spec(yaml.safe_load(text))
    assert spec.task.value == "multiclass" and spec.classes == ["1", "2", "3"], text
    assert f"# 3 distinct labels in the whole file, 2 in its first {SAMPLE_ROWS} rows: classes are the whole file's" in text


@pytest.mark.parametrize(("positives", "threshold"), [(40, "best_f1"), (400, None)])
def test_a_draft_spec_of_a_rare_positive_class_chooses_its_threshold_by_f1(tmp_path: Path, positives: int, threshold: str | None) -> None:
    """The new-user probe: a 1-in-50 class drafted with the default threshold was never predicted (precision and recall
    0, the live floors firing for ever). A positive class under a tenth of the sample is drafted with best_f1, saying why."""
    from mlplatform.domain.spec import parse_spec
    from mlplatform.domain.spec_draft import draft_spec

    rare = pd.DataFrame({"amount": np.arange(2000, dtype="float64"), "outcome": ["yes"] * positives + ["no"] * (2000 - positives)})
    text = draft_spec("payments", _write_sample(rare, tmp_path / "rare.csv"), label="outcome")
    spec = parse_spec(yaml.safe_load(text))
    assert (spec.positive_class, spec.decision_threshold) == ("yes", threshold), text
    assert ("# positive_class 'yes' is 2.0% of the sample's labels: decision_threshold best_f1" in text) == (threshold is not None), text


def test_a_draft_spec_reads_the_label_in_chunks_as_landing_spells_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk by chunk, a gap read 1 as 1.0 in one and text in another: classes '1' and '1.0' (review). A leading zero
    later in the file, and more than 20 text classes (drafted as a regression), the same."""
    from mlplatform.domain import spec_draft
    from mlplatform.domain.spec import parse_spec

    monkeypatch.setattr(spec_draft, "LABEL_CHUNK_ROWS", 3000)
    labels = [1, 2] * 3000 + ["other"] * 10
    rows = pd.DataFrame({"x": np.arange(len(labels), dtype="float64"), "y": pd.Series(labels, dtype=object)})
    rows.loc[2500, "y"] = None
    rows.to_csv(tmp_path / "gaps.csv", index=False)
    assert parse_spec(yaml.safe_load(spec_draft.draft_spec("gaps", tmp_path / "gaps.csv", label="y"))).classes == ["1", "2", "other"]
    codes = pd.DataFrame({"x": np.arange(7000.0), "y": ["1", "2"] * 3000 + ["03"] * 1000})
    codes.to_csv(tmp_path / "codes.csv", index=False)
    assert parse_spec(yaml.safe_load(spec_draft.draft_spec("codes", tmp_path / "codes.csv", label="y"))).classes == ["03", "1", "2"]
    many = pd.DataFrame({"x": np.arange(9000.0), "y": [f"c{i % 5}" for i in range(6000)] + [f"d{i % 25}" for i in range(3000)]})
    many.to_csv(tmp_path / "many.csv", index=False)
    spec = parse_spec(yaml.safe_load(spec_draft.draft_spec("many", tmp_path / "many.csv", label="y")))
    assert spec.task.value == "multiclass" and len(spec.classes or []) == 30
    names = pd.DataFrame({"x": np.arange(7000.0), "y": ["a", "b"] * 2500 + [f"n{i}" for i in range(2000)]})  # free text, not classes
    names.to_csv(tmp_path / "names.csv", index=False)
    with pytest.raises(ValueError, match=r"label 'y' has more than 1000 distinct values, and not all are numbers"):
        spec_draft.draft_spec("names", tmp_path / "names.csv", label="y")
