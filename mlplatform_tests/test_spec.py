"""The dataset spec: a wrong spec is an error that names the field; any valid spec runs the same code as Adult."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform.domain.evaluation import primary_metric, score
from mlplatform.pipeline.replay import json_records, read_source
from mlplatform.settings import REPO_ROOT
from mlplatform.domain.spec import DatasetSpec, SpecError, Task, load_spec, parse_spec
from mlplatform.domain.training import TrainingConfig, TrainingError, train
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL, validate_frame

GOOD = {
    "name": "tiny",
    "task": "binary",
    "label": "y",
    "positive_class": "yes",
    "classes": ["no", "yes"],
    "features": {"x": "numeric", "colour": "categorical", "shape": "categorical"},
}
FAST = TrainingConfig(min_rows=50, trials=1, seconds=30, num_boost_round=200, early_stopping_rounds=10)


def _with(**changes: object) -> dict[str, object]:
    spec = {**GOOD, **changes}
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_with(label=None), "label: Field required"),
        (_with(task="clustering"), "task: Input should be 'binary', 'multiclass' or 'regression'"),
        (_with(positive_class="maybe"), "positive_class: 'maybe' is not one of classes"),
        (_with(classes=["no", "yes", "perhaps"]), "classes: a binary task has exactly two classes"),
        (_with(classes=["yes"]), "classes: task binary needs at least two distinct classes"),
        (_with(features={"x": "numeric", "y": "numeric"}), "features: ['y'] is also the label"),
        (_with(features={"x": "numeric", "label": "categorical"}), "features: ['label'] is a name of the platform's own columns"),
        (_with(features={"event_id": "categorical"}), "features: ['event_id'] is a name of the platform's own columns"),
        (_with(features={"event_time": "numeric"}), "features: ['event_time'] is a name of the platform's own columns"),
        (_with(features={"prediction": "numeric", "seq": "numeric"}), "features: ['prediction', 'seq'] is a name of the platform's own columns"),
        (_with(features={"Age": "numeric", "age": "numeric"}), "features: feature name 'age' differs only in case from 'Age'"),
        (_with(features={"mean radius": "numeric", "mean_radius": "numeric"}), "features: feature name 'mean_radius' is 'mean radius' to LightGBM"),
        (_with(features={"mean radius": "numeric", "Mean_Radius": "numeric"}), "features: feature name 'Mean_Radius' is one column with 'mean radius' once case"),
        (_with(features={"age ": "numeric"}), "features: feature name 'age ' must be 1-61 ASCII letters, digits, '_', '-', '.' or spaces, with no space at either end"),
        (_with(features={"x" * 62: "numeric"}), f"features: feature name {'x' * 62!r} must be 1-61 ASCII letters"),
        (_with(features={"x": "numeric"}, crosses=[["x", "x"]]), "crosses: 'x' is not a categorical feature"),
        (_with(crosses=[["colour", "weight"]]), "crosses: 'weight' is not a categorical feature"),
        (_with(features={"x": "float"}), "features.x: Input should be 'numeric', 'categorical' or 'key'"),
        (_with(features={}), "features: at least one is needed (a file of ids and labels alone is a label file); a stream predicted from its history alone"),
        (_with(name="Bad Name!"), "name: must be 1 to 63 lower-case"),
        (_with(drop=["x"]), "drop: ['x'] is also used"),
        (_with(unknown_key=1), "unknown_key: Extra inputs are not permitted"),
        (_with(task="regression"), "positive_class/classes: only for classification tasks"),
        (_with(task="multiclass", classes=["no", "yes", "maybe"]), "positive_class: only for task binary (a multiclass model reports a probability per class)"),
        (_with(task="multiclass", classes=["a", "b", "a", 1, 1.0], positive_class=None), "classes: '1', 'a' given more than once"),
        (_with(label_map={"Y": "si"}), "label_map: 'si' is not one of classes"),
        (_with(features=["x", "colour"]), "features: Input should be a valid dictionary"),
        (_with(classes=[False, True], positive_class=None), "classes.0: false is a YAML boolean (unquoted yes/no/on/off/true/false); quote the label"),
        (_with(label_map={"Y": True}), "label_map.Y: true is a YAML boolean"),
        (_with(time_column="t", time_format="weekly"), "time_format: 'weekly' is not one of ['iso', 'epoch_s', 'epoch_ms', 'epoch_us', 'epoch_ns', 'year'] nor a strftime pattern"),
        (_with(time_column="t", time_format="%Y-%Q"), "time_format: '%Y-%Q' is not a usable strftime pattern"),
        (_with(time_format="year"), "time_format: says how time_column is written, but the spec has no time_column"),
        (_with(time_offset={"column": "hr", "unit": "hours"}), "time_offset: is added to time_column's time, but the spec has no time_column"),
        (_with(time_column="t", time_offset={"column": "hr", "unit": "weeks"}), "time_offset.unit: Input should be 'seconds', 'minutes', 'hours' or 'days'"),
        (_with(time_column="t", time_offset={"column": "hr"}), "time_offset.unit: Field required"),
        (_with(time_column="t", time_offset={"column": "colour", "unit": "hours"}), "time_offset.column: 'colour' is a categorical feature; an offset is a number of hours"),
        (_with(time_column="t", time_offset={"column": "t", "unit": "hours"}), "time_offset.column: 't' is the label, id or time column"),
        (_with(time_column="t", time_offset={"column": "y", "unit": "days"}), "time_offset.column: 'y' is the label, id or time column"),
        (_with(time_column="t", drop=["hr"], time_offset={"column": "hr", "unit": "hours"}), "time_offset.column: 'hr' is in drop; an offset column is read"),
        (_with(optional=["y"]), "optional: ['y'] is not a feature; optional names features a file or a request may leave out"),
        (_with(decision_threshold=0), "decision_threshold: 0 is neither a probability between 0 and 1 (both excluded) nor best_f1"),
        (_with(decision_threshold=1.0), "decision_threshold: 1.0 is neither a probability"),
        (_with(decision_threshold="f1"), "decision_threshold: 'f1' is neither a probability"),
        (_with(decision_threshold=True), "decision_threshold: True is neither a probability"),
        (_with(decision_threshold="0.3"), "decision_threshold: '0.3' is neither a probability"),
        (_with(task="regression", classes=None, positive_class=None, decision_threshold=0.3), "decision_threshold: only for task binary (a regression model"),
        (_with(task="multiclass", classes=["a", "b", "c"], positive_class=None, decision_threshold="best_f1"), "decision_threshold: only for task binary"),
        (_with(optional=["x", "colour", "shape"]), "optional: every feature is optional; at least one is required"),
        (_with(optional=["colour"], history={"features": [{"kind": "count", "by": "colour"}]}), "history.features.0.by: 'colour' is optional, and a key must be sent"),
        (_with(csv_missing="NA"), "csv_missing: Input should be a valid list"),
        (_with(csv_missing=["", 1]), "csv_missing.1: Input should be a valid string"),
        (_with(csv_missing=["x" * 65]), "csv_missing.0: String should have at most 64 characters"),
        ([GOOD], "expected a mapping at the top level, got list"),
        ("just text", "expected a mapping at the top level, got str"),
        (None, "expected a mapping at the top level, got NoneType"),
    ],
)
def test_a_wrong_spec_names_the_field(data: object, field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(data, origin="my.yaml")
    assert str(err.value).startswith(f"my.yaml: {field}") or (field in str(err.value) and not isinstance(data, dict))
    assert "<root>" not in str(err.value) and "Value error" not in str(err.value)


def test_csv_missing_says_how_the_replayed_csv_spells_a_missing_value_too(tmp_path: Path) -> None:
    """Landing and replay read a CSV alike: by default NA is missing (pandas' spellings and the source's `na_values`);
    with `csv_missing: [""]` a category spelt NA (Namibia) stays text, and only an empty field is missing."""
    (tmp_path / "rows.csv").write_text("x,colour,shape,y\n1.5,NA,?,yes\n,red,square,no\n", encoding="utf-8")
    source = {"files": [str(tmp_path / "rows.csv")], "na_values": ["?"]}
    default, spelt = (read_source(parse_spec(_with(source=source, **extra))) for extra in ({}, {"csv_missing": [""]}))
    assert default[["x", "colour", "shape"]].isna().values.tolist() == [[False, True, True], [True, False, False]]
    assert spelt["colour"].tolist() == ["NA", "red"] and spelt[["x", "shape"]].isna().values.tolist() == [[False, True], [True, False]]


def test_a_source_without_an_optional_feature_replays_with_it_missing(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("x,colour,y\n1.5,red,yes\n2.5,blue,no\n", encoding="utf-8")
    spec = parse_spec(_with(optional=["shape"], source={"files": [str(tmp_path / "rows.csv")]}))
    rows = read_source(spec)
    assert rows["shape"].isna().all() and [r["shape"] for r in json_records(rows, spec)] == [None, None]


def test_numbers_in_classes_positive_class_and_label_map_are_labels_as_text() -> None:
    spec = parse_spec(_with(classes=[0, 1], positive_class=1.0, label_map={2: 1, 0.5: 0, "no": 0}))
    assert (spec.classes, spec.positive_class, spec.negative_class) == (["0", "1"], "1", "0")
    assert spec.label_map == {"2": "1", "0.5": "0", "no": "0"}
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_source_files_resolve_against_the_spec_folder_and_sep_is_separator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "specs"
    (folder / "files").mkdir(parents=True)
    (folder / "files" / "rows.csv").write_text("x;colour;shape;y\n1.5;red;round;yes\n2.5;blue;square;no\n", encoding="utf-8")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(GOOD | {"source": {"files": ["files/rows.csv"], "sep": ";"}}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    spec = load_spec("specs/tiny.yaml")
    assert spec.source is not None and spec.source.separator == ";"
    assert read_source(spec)[["x", "colour", "y"]].values.tolist() == [["1.5", "red", "yes"], ["2.5", "blue", "no"]]
    assert "separator: ;" in spec.to_yaml()


def test_a_missing_source_file_is_refused_when_the_spec_loads(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(GOOD | {"source": {"files": ["exports/rows.csv"]}}), encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "tiny.yaml")
    assert str(err.value) == (
        f"{tmp_path / 'tiny.yaml'}: source.files: no such file {tmp_path / 'exports' / 'rows.csv'} "
        f"(relative paths resolve against the spec's folder, {tmp_path})"
    )


def test_unknown_source_keys_are_refused_by_name() -> None:
    with pytest.raises(SpecError, match="source.delimiter: Extra inputs are not permitted"):
        parse_spec(GOOD | {"source": {"files": ["x.csv"], "delimiter": ";"}})


def test_invalid_yaml_missing_file_and_bad_bytes(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\ntask: binary\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(latin)


def test_an_oversized_spec_fails_on_its_field_not_by_crashing() -> None:
    huge = _with(features={f"f{i}": "numeric" for i in range(20_000)} | {"bad name!": "numeric"})
    with pytest.raises(SpecError, match="feature name 'bad name!'"):
        parse_spec(huge)


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys silently: of `colour: numeric` and `colour: categorical` one was dropped unsaid."""
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(GOOD) + "task: regression\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"not valid YAML: 'task' is given twice, on lines \d+ and \d+"):
        load_spec(path)
    path.write_text(yaml.safe_dump(GOOD).replace("  x: numeric\n", "  x: numeric\n  colour: numeric\n"), encoding="utf-8")
    with pytest.raises(SpecError, match=r"not valid YAML: 'colour' is given twice, on lines \d+ and \d+"):
        load_spec(path)


def test_yaml_merge_keys_merge_and_keys_given_twice_beside_them_are_still_refused(tmp_path: Path) -> None:
    """`<<: *anchor` is YAML's way to share entries; the duplicate-key check had tried to read `<<` as a key."""
    path = tmp_path / "merge.yaml"
    body = yaml.safe_dump({**GOOD, "task": "regression", "positive_class": None, "classes": None, "features": {"x": "numeric", "colour": "categorical"}})
    body = body.replace("classes: null\n", "").replace("positive_class: null\n", "")
    history = "history:\n  features:\n    - &lag {kind: lag, k: 1}\n    - {<<: *lag, k: 3, by: colour}\n"
    path.write_text(body + history, encoding="utf-8")
    [first, merged] = load_spec(path).history.features  # type: ignore[union-attr]
    assert (first.k, merged.kind, merged.k, merged.by) == (1, "lag", 3, "colour")
    path.write_text(body + history.replace("k: 3, by: colour}", "k: 3, k: 4}"), encoding="utf-8")
    with pytest.raises(SpecError, match=r"'k' is given twice"):
        load_spec(path)


def test_the_shipped_specs_load_and_round_trip(adult_spec: DatasetSpec) -> None:
    bike = load_spec(REPO_ROOT / "data" / "bike_sharing.yaml")
    assert bike.task is Task.regression and bike.id_column == "instant" and bike.model_name == "mlplatform-bike-sharing"
    assert adult_spec.task is Task.binary and adult_spec.negative_class == "<=50K"
    assert parse_spec(yaml.safe_load(adult_spec.to_yaml())).model_dump() == adult_spec.model_dump()


def _train_and_score(spec: DatasetSpec, rows: pd.DataFrame) -> dict[str, float]:
    """The path every dataset takes: validation, training, prediction, scoring."""
    validated = validate_frame(rows, spec, generated_id_prefix="t", generated_time_start_us=0)
    assert validated.quarantined.empty
    events = validated.events.sort_values([EVENT_TIME, EVENT_ID], kind="stable").reset_index(drop=True)
    split = int(len(events) * 0.8)
    result = train(events.iloc[:split], spec, FAST)
    holdout = events.iloc[split:]
    predicted = result.predictor.predict(holdout)
    assert list(result.predictor.predict(holdout.head(0)).columns) == list(predicted.columns)  # no rows: the same columns, every task
    return score(spec, holdout[LABEL], predicted)


def test_bike_sharing_regression_runs_through_the_same_code() -> None:
    spec = load_spec(REPO_ROOT / "data" / "bike_sharing.yaml")
    rows = read_source(spec).head(3000)
    metrics = _train_and_score(spec, rows)
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["r2"] > 0.5, metrics


def _multiclass_spec(tmp_path: Path) -> DatasetSpec:
    path = tmp_path / "colours.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "colours",
                "task": "multiclass",
                "label": "kind",
                "classes": ["red", "green", "blue"],
                "label_map": {"R": "red"},
                "features": {"x": "numeric", "z": "numeric", "tag": "categorical", "grp": "categorical"},
                "crosses": [["tag", "grp"]],
                "drop": ["note"],
            }
        ),
        encoding="utf-8",
    )
    return load_spec(path)


def _multiclass_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    tag = rng.choice(["a", "b", "c"], size=n)
    kind = np.where(x > 0.5, "red", np.where(tag == "a", "green", "blue"))
    return pd.DataFrame(
        {
            "x": x.round(4).astype(str),
            "z": rng.normal(size=n).round(4).astype(str),
            "tag": tag,
            "grp": rng.choice(["p", "q"], size=n),
            "kind": np.where(kind == "red", "R", kind),
            "note": "ignored",
        }
    )


def test_a_multiclass_spec_written_by_a_user_trains_and_evaluates(tmp_path: Path) -> None:
    spec = _multiclass_spec(tmp_path)
    metrics = _train_and_score(spec, _multiclass_rows(1500))
    assert primary_metric(spec) == ("log_loss", False)
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "log_loss"}
    assert metrics["accuracy"] > 0.9, metrics


def test_a_multiclass_window_with_one_class_is_refused(tmp_path: Path) -> None:
    spec = _multiclass_spec(tmp_path)
    rows = _multiclass_rows(300).assign(kind="green")
    events = validate_frame(rows, spec, generated_id_prefix="t", generated_time_start_us=0).events
    with pytest.raises(TrainingError, match=r"one class only \(\['green'\]\)"):
        train(events, spec, FAST)


def test_multiclass_log_loss_matches_the_classes_whatever_their_order(tmp_path: Path) -> None:
    spec = _multiclass_spec(tmp_path)
    truth = pd.Series(["red", "green", "blue"])
    confident = pd.DataFrame({"prediction": truth, "proba_red": [0.98, 0.01, 0.01], "proba_green": [0.01, 0.98, 0.01], "proba_blue": [0.01, 0.01, 0.98]})
    assert score(spec, truth, confident)["log_loss"] == pytest.approx(-np.log(0.98))


def test_multiclass_scores_a_class_absent_from_the_window_or_from_the_model_as_scikit_learn_would(tmp_path: Path) -> None:
    """Probe: with a class of the spec absent from the window, macro precision and recall counted it as 0 (a model right on
    every event scored 0.75 and the live floors fired); a class the spec gained after the model was trained left the
    champion without a log loss, and any challenger replaced it."""
    spec = _multiclass_spec(tmp_path)
    truth = pd.Series(["red", "green", "green"])
    right = pd.DataFrame({"prediction": truth})
    assert {k: score(spec, truth, right)[k] for k in ("accuracy", "precision", "recall", "f1")} == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    older = pd.DataFrame({"prediction": truth, "proba_red": [0.9, 0.2, 0.1], "proba_green": [0.1, 0.8, 0.9]})  # trained before 'blue' existed
    assert score(spec, truth, older)["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.9])))
