"""Serving's per-record validation and encoding agree with ingestion's validate_frame and with Predictor.predict."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from mlplatform.domain.predictor import Predictor
from mlplatform.serving.champion import ServedModel
from mlplatform.serving.records import KEY_FIELD_LABEL, MAX_FIELD_ERRORS, ModelMismatch, RecordCodec, event_id_of
from mlplatform.serving.schemas import feedback_body_schema, record_schema
from mlplatform.serving.service import ApiError, feedback_label
from mlplatform.domain.spec import DatasetSpec, FeatureType, Task, TimeOffset, load_spec, parse_spec
from mlplatform.domain.training import train
from mlplatform.domain.validation import MAX_TEXT_LENGTH, validate_frame
from mlplatform.pipeline.replay import read_source
from mlplatform_tests.conftest import BIKE_SPEC
from mlplatform_tests.serving_support import TINY, canonical


@pytest.fixture(scope="module")
def predictor(adult_spec: DatasetSpec, adult_rows: pd.DataFrame) -> Predictor:
    return train(canonical(adult_rows.head(2000), adult_spec), adult_spec, TINY).predictor


@pytest.fixture(scope="module")
def model(adult_spec: DatasetSpec, predictor: Predictor) -> ServedModel:
    return ServedModel.load(1, predictor, adult_spec)


def _records(frame: pd.DataFrame, spec: DatasetSpec) -> list[dict[str, object]]:
    out = []
    for row in frame[list(spec.features)].to_dict("records"):
        out.append({k: (None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v) for k, v in row.items()})
    return out


def test_predictions_equal_predictor_predict(adult_spec: DatasetSpec, adult_rows: pd.DataFrame, model: ServedModel, predictor: Predictor) -> None:
    """Unseen categories, missing values, padded and blank strings: same probabilities and unseen counts as the pandas path."""
    events = canonical(adult_rows.iloc[5000:7000], adult_spec)
    records = _records(events, adult_spec)
    for i in range(0, len(records), 7):
        records[i]["native-country"] = "Atlantis"
    for i in range(3, len(records), 11):
        records[i]["occupation"] = f"  {records[i]['occupation']}  " if records[i]["occupation"] else "   "
    for i in range(5, len(records), 13):
        records[i]["age"] = None
        records[i]["workclass"] = None
    clean, errors = model.codec.check(records, ("body", "records"))
    assert errors == []
    (prediction, probability, matrix), unseen = model.predict(clean)
    expected = predictor.predict(pd.DataFrame(records))
    np.testing.assert_allclose(probability, expected["probability"].to_numpy(), rtol=1e-12)
    assert list(prediction) == list(expected["prediction"])
    assert matrix is None
    assert unseen == predictor.transformer.unseen_counts(pd.DataFrame(records))
    assert unseen["native-country"] >= len(records) // 7
    for i in range(0, len(records), 97):
        (one, one_probability, _), _ = model.predict(clean[i : i + 1])
        assert list(one) == [expected["prediction"].iloc[i]] and one_probability.tolist() == pytest.approx([expected["probability"].iloc[i]], rel=1e-12)


NUMERIC_CASES = [0, 39, -1.5, 1e308, None, 10**400, float("inf"), -float("inf"), True]
TEXT_CASES = ["Private", "  Private  ", "", "   ", None, "x" * MAX_TEXT_LENGTH, "x" * (MAX_TEXT_LENGTH + 1), " " + "x" * MAX_TEXT_LENGTH + " ",
              True, False, 7, 7.0]


def test_validity_agrees_with_ingestion(adult_spec: DatasetSpec, model: ServedModel, adult_rows: pd.DataFrame) -> None:
    """A record is refused exactly when ingestion would quarantine its row, and what it accepts is spelled as ingestion
    spells it: a boolean for a number is refused by both; for a category it is "True" / "False", as a boolean column lands."""
    base = _records(canonical(adult_rows.head(1), adult_spec), adult_spec)[0]
    records = [{**base, "age": value} for value in NUMERIC_CASES] + [{**base, "workclass": value} for value in TEXT_CASES]
    checked = [model.codec.check([record], ("body",)) for record in records]
    refused = [bool(errors) for _, errors in checked]
    validated = validate_frame(pd.DataFrame(records, dtype=object), adult_spec, generated_id_prefix="q", generated_time_start_us=0)
    quarantined = set(validated.quarantined["row_number"] - 1)
    assert refused == [i in quarantined for i in range(len(records))]
    assert any(refused) and not all(refused)
    accepted = [clean[0] for clean, errors in checked if not errors]
    for name in ("age", "workclass"):
        ours = pd.Series([row[name] for row in accepted], dtype=object)
        theirs = validated.events[name].astype(object).where(validated.events[name].notna(), None)
        assert ours.tolist() == theirs.tolist()


LABEL_CASES = ["1", " 2 ", 1, 2.0, 3, -0.0, 2.5, "one", "One", True, "4", 4, "x" * 300, "", [1]]


def test_a_feedback_label_is_read_as_a_landed_label_and_as_its_schema_says() -> None:
    """/feedback refuses a label exactly when landing would quarantine it, accepts it as the class landing records (3,
    3.0 and "3" alike, label_map applied), and the OpenAPI schema admits exactly the accepted values."""
    spec = parse_spec({"name": "weather", "task": "multiclass", "label": "y", "classes": ["0", "1", "2", "3"],
                       "label_map": {"one": "1"}, "features": {"x": "numeric"}})
    ours: list[str | None] = []
    for value in LABEL_CASES:
        try:
            ours.append(str(feedback_label(value, spec)))
        except ApiError:
            ours.append(None)
    frame = pd.DataFrame({"y": pd.Series(LABEL_CASES, dtype=object), "x": 1.0})
    validated = validate_frame(frame, spec, generated_id_prefix="q", generated_time_start_us=0)
    quarantined = set(validated.quarantined["row_number"] - 1)
    kept = iter(validated.events["label"].tolist())
    theirs = [None if i in quarantined else next(kept) for i in range(len(LABEL_CASES))]
    theirs = [None if pd.isna(label) else label for label in theirs]  # a blank lands unlabelled: no label either way
    assert ours == theirs and ours[:6] == ["1", "2", "1", "2", "3", "0"] and ours[7] == "1"
    schema = feedback_body_schema(spec)
    admitted = [jsonschema.Draft202012Validator(schema).is_valid({"event_id": "e", "label": value}) for value in LABEL_CASES]
    assert admitted == [label is not None for label in ours]
    for missing in (None, "  "):
        with pytest.raises(ApiError, match=r"label: missing \(null or blank\); expected one of"):
            feedback_label(missing, spec)


REGRESSION_LABELS = [55.5, 0, -3, 1e100, -1e100, 1e101, 1.7e308, -1e300, 10**400]


def test_a_regression_feedback_label_is_refused_where_landing_quarantines_it() -> None:
    """A label beyond ±1e100 makes every RMSE inf and no two versions comparable (a 1e300 label blocked promotions):
    /feedback, landing and the OpenAPI schema refuse the same ones, in the same words."""
    spec = parse_spec({"name": "sales", "task": "regression", "label": "y", "features": {"x": "numeric"}})
    ours: list[float | None] = []
    for value in REGRESSION_LABELS:
        try:
            ours.append(float(feedback_label(value, spec)))
        except ApiError as err:
            assert "is not a finite number within ±1e+100" in str(err.detail), err.detail
            ours.append(None)
    assert ours == [55.5, 0.0, -3.0, 1e100, -1e100, None, None, None, None]
    frame = pd.DataFrame({"y": pd.Series(REGRESSION_LABELS, dtype=object), "x": 1.0})
    validated = validate_frame(frame, spec, generated_id_prefix="q", generated_time_start_us=0)
    assert set(validated.quarantined["row_number"] - 1) == {i for i, label in enumerate(ours) if label is None}
    assert validated.quarantined["reason"].iloc[0] == "label: '1e+101' is not a finite number within ±1e+100"
    schema = feedback_body_schema(spec)
    assert [jsonschema.Draft202012Validator(schema).is_valid({"event_id": "e", "label": v}) for v in REGRESSION_LABELS[:-1]] == [o is not None for o in ours[:-1]]
    for value, said in ((None, "label: missing (null); expected a number"), ("55.5", "label: expected a number, got str"), (True, "expected a number, got bool")):
        with pytest.raises(ApiError, match=re.escape(said)):
            feedback_label(value, spec)


def test_every_field_problem_is_reported(adult_spec: DatasetSpec, model: ServedModel, adult_rows: pd.DataFrame) -> None:
    base = _records(canonical(adult_rows.head(1), adult_spec), adult_spec)[0]
    record = {**base, "age": "39", "sex": [1], "hours-per-week": True, "colour": "blue"}
    del record["race"]
    _, errors = model.codec.check([record, "not a record", base], ("body", "records"))
    found = {(e.loc, e.type) for e in errors}
    assert found == {
        (("body", "records", 0, "age"), "type_error"),
        (("body", "records", 0, "sex"), "type_error"),
        (("body", "records", 0, "hours-per-week"), "type_error"),
        (("body", "records", 0, "race"), "missing"),
        (("body", "records", 0, "colour"), "extra_forbidden"),
        (("body", "records", 1), "type_error"),
    }
    _, errors = model.codec.check([{**base, "workclass": "\ud800"}], ("body",))
    assert [(e.loc, e.msg) for e in errors] == [(("body", "workclass"), "workclass: not valid UTF-8 text")]
    _, errors = model.codec.check([{**base, "workclass": "Pri\x00vate"}], ("body",))  # PostgreSQL's text holds no NUL: the log write failed
    assert [(e.loc, e.msg) for e in errors] == [(("body", "workclass"), "workclass: contains a NUL character (U+0000), which the event log cannot store")]
    assert event_id_of("e\x001") == (None, "not an event id (valid UTF-8 without NUL, at most 128 characters)")
    _, errors = model.codec.check([{}] * 1000, ("body", "records"))  # the serving probe: 13,000 errors built for a 422 showing 100
    assert MAX_FIELD_ERRORS <= len(errors) < MAX_FIELD_ERRORS + len(adult_spec.features) and errors[-1].loc[:3] == ("body", "records", 7)


def test_model_of_another_dataset_is_refused(predictor: Predictor) -> None:
    with pytest.raises(ModelMismatch, match="not the features of dataset spec 'bike"):
        RecordCodec(load_spec(BIKE_SPEC), predictor)


def test_regression_model_and_numbers_for_categories() -> None:
    """Bike sharing (regression, integer-coded categories): numbers sent for categories mean what ingestion makes of them."""
    spec = load_spec(BIKE_SPEC)
    events = canonical(read_source(spec).head(3000), spec)
    predictor = train(events, spec, TINY).predictor
    model = ServedModel.load(1, predictor, spec)
    records = _records(events.iloc[2000:2300], spec)
    as_numbers = [{k: (float(v) if k == "season" else int(v) if k == "weekday" else v) if v is not None and k in spec.categorical_features else v
                   for k, v in r.items()} for r in records]
    clean, errors = model.codec.check(as_numbers, ("body", "records"))
    assert errors == []
    assert clean == model.codec.check(records, ("body", "records"))[0]
    (prediction, probability, matrix), unseen = model.predict(clean)
    assert probability is None and matrix is None and unseen == {}
    np.testing.assert_allclose(prediction, predictor.predict(pd.DataFrame(records))["prediction"].to_numpy(), rtol=1e-12)
    _, errors = model.codec.check([{**records[0], "season": float("inf")}], ("body",))
    assert [e.loc for e in errors] == [("body", "season")]


def test_a_category_spelled_as_another_format_spells_it_is_that_category() -> None:
    """A model fitted on a CSV export's `true` and `12.0` (text) is sent JSON true and 12.0, which serving and JSON
    Lines spell "True" and "12": they were unseen, so treated as missing (train/serve skew). Now each is the category
    it spells, on the serving path and the pandas path alike, and counted as seen; a value that is really new is not.
    So is "Zürich" decomposed (NFD, as macOS and some exports write it) for a model fitted on it composed (NFC): the
    own-dataset probe's one category served 0.366 and 0.399."""
    spec = parse_spec({"name": "spell", "task": "binary", "label": "y", "classes": ["no", "yes"], "positive_class": "yes",
                       "features": {"member": "categorical", "code": "categorical", "city": "categorical", "x": "numeric"}})
    rng = np.random.default_rng(3)
    member, code, city = rng.choice(["true", "false"], 800), rng.choice(["12.0", "7.0", "A"], 800), rng.choice(["Zürich", "Genève"], 800)
    y = np.where((member == "true") ^ (code == "12.0") ^ (city == "Zürich") ^ (rng.random(800) < 0.1), "yes", "no")
    frame = pd.DataFrame({"member": member, "code": code, "city": city, "x": rng.random(800), "y": y})
    predictor = train(validate_frame(frame, spec, generated_id_prefix="s", generated_time_start_us=0).events, spec, TINY).predictor
    assert predictor.transformer.categories == {"member": ["false", "true"], "code": ["12.0", "7.0", "A"], "city": ["Genève", "Zürich"]}
    model = ServedModel.load(1, predictor, spec)
    as_trained = [{"member": m, "code": c, "city": t, "x": 0.5} for m in ("true", "false") for c in ("12.0", "7.0") for t in ("Zürich", "Genève")]
    decomposed = [unicodedata.normalize("NFD", t) for t in ("Zürich", "Genève")]
    as_sent = [{"member": m, "code": c, "city": t, "x": 0.5} for m in (True, "FALSE") for c in (12.0, 7) for t in decomposed]
    (expected, expected_p, _), _ = model.predict(model.codec.check(as_trained, ("body", "records"))[0])
    clean, errors = model.codec.check(as_sent, ("body", "records"))
    (served, served_p, _), unseen = model.predict(clean)
    assert errors == [] and unseen == {} and list(served) == list(expected) and served_p.tolist() == expected_p.tolist()
    assert predictor.predict(pd.DataFrame(as_sent))["probability"].tolist() == pytest.approx(expected_p.tolist(), rel=1e-12)
    _, unseen = model.predict(model.codec.check([{"member": "maybe", "code": "12.5", "city": "Zurich", "x": 0.5}], ("body",))[0])
    assert unseen == {"member": 1, "code": 1, "city": 1}


def test_a_champion_with_a_class_the_spec_gained_loads_once_serving_follows_the_edited_spec(tmp_path: Path) -> None:
    """Serving started with classes a, b; the spec gained c and a champion was retrained on it: against the start-up spec
    it predicts a class the spec lacks and is refused; against the followed spec (what each reload tick sets) it loads."""
    from mlplatform.serving.champion import ChampionWatcher
    from mlplatform.serving.metrics import ServingMetrics
    from mlplatform.settings import Settings
    from mlplatform.stores.registry import Registry

    gained = parse_spec({"name": "tri", "task": "multiclass", "label": "y", "classes": ["a", "b", "c"], "features": {"x": "numeric"}})
    started = gained.model_copy(update={"classes": ["a", "b"]})
    rng = np.random.default_rng(5)
    x = rng.random(900)
    frame = pd.DataFrame({"x": x, "y": np.select([x < 0.33, x < 0.66], ["a", "b"], "c")})
    events = validate_frame(frame, gained, generated_id_prefix="t", generated_time_start_us=0).events
    settings = Settings(state_dir=tmp_path / "state")
    settings.ensure_dirs()
    registry = Registry(settings.tracking_uri, settings.artifact_root, gained)
    registry.promote(registry.log_model(train(events, gained, TINY), events, {}, {}).version)
    watcher = ChampionWatcher(registry, started, 60.0, ServingMetrics().model("tri"))
    refused = watcher.check()
    assert watcher.current is None and "the model predicts classes dataset spec 'tri' does not have: ['c']" in str(refused.error)
    watcher.spec = gained
    assert watcher.check(retry_failed=True).version == 1 and watcher.current is not None


def test_dropped_columns_are_ignored_and_unknown_fields_follow_the_policy(adult_spec: DatasetSpec, predictor: Predictor, adult_rows: pd.DataFrame) -> None:
    """MLPLATFORM_SERVE_UNKNOWN_FIELDS: `refuse` reports fields that are neither features nor dropped columns, `ignore` drops them too."""
    record = {**_records(canonical(adult_rows.iloc[:1], adult_spec), adult_spec)[0], "fnlwgt": 77516}
    refusing, ignoring = RecordCodec(adult_spec, predictor), RecordCodec(adult_spec, predictor, refuse_unknown=False)
    assert refusing.check([record], ("body",))[1] == []
    clean, errors = refusing.check([{**record, "shoe-size": 42}], ("body",))
    assert [(e.loc, e.type) for e in errors] == [(("body", "shoe-size"), "extra_forbidden")]
    clean, errors = ignoring.check([{**record, "shoe-size": 42}], ("body",))
    assert errors == [] and list(clean[0]) == list(adult_spec.features)
    assert [e.loc for e in ignoring.check([{"shoe-size": 42}], ("body",))[1]] == [("body", name) for name in adult_spec.features]
    # The label is refused under `ignore` too: dropped, a label sent inline was lost without a word (the schema says so).
    _, errors = ignoring.check([{**record, "income": ">50K"}], ("body",))
    assert [(e.loc, e.msg) for e in errors] == [(("body", "income"), f"extra field not permitted ({KEY_FIELD_LABEL})")]
    schema = record_schema(adult_spec, ignore_unknown=True)
    assert schema["additionalProperties"] is True and schema["properties"]["income"]["not"] == {}
    jsonschema.validate({**record, "shoe-size": 42}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "income": ">50K"}, schema)


def test_an_optional_feature_may_be_left_out_of_a_request_and_is_missing_there(adult_spec: DatasetSpec, predictor: Predictor, adult_rows: pd.DataFrame) -> None:
    """A spec's `optional` features (a column an older export or client lacks) may be left out of a request: missing
    there, as null is, and the schema does not require them. A required one left out is still refused, by name."""
    optional = adult_spec.model_copy(update={"optional": ["hours-per-week", "native-country"]})
    record = _records(canonical(adult_rows.iloc[:1], adult_spec), adult_spec)[0]
    without = {k: v for k, v in record.items() if k not in ("hours-per-week", "native-country")}
    clean, errors = RecordCodec(optional, predictor).check([without], ("body",))
    assert errors == [] and list(clean[0]) == list(adult_spec.features) and clean[0]["hours-per-week"] is None and clean[0]["native-country"] is None
    assert clean == RecordCodec(optional, predictor).check([{**without, "hours-per-week": None, "native-country": None}], ("body",))[0]
    _, errors = RecordCodec(optional, predictor).check([{k: v for k, v in without.items() if k != "age"}], ("body",))
    assert [(e.loc, e.msg) for e in errors] == [(("body", "age"), "field required")]
    _, errors = RecordCodec(adult_spec, predictor).check([without], ("body",))
    assert [e.loc[-1] for e in errors] == ["hours-per-week", "native-country"], "required where the spec does not say optional"
    schema = record_schema(optional, ignore_unknown=False)
    jsonschema.validate(without, schema)
    assert "hours-per-week" not in schema["required"] and "age" in schema["required"]


def test_the_specs_time_column_in_a_request_is_refused_saying_why(adult_spec: DatasetSpec, predictor: Predictor, adult_rows: pd.DataFrame) -> None:
    """A record sent as it appears in the data may carry the spec's time column (and time_offset column): a served
    event's time is when it is served, so it is refused with that reason, not as an unknown field. Columns the spec drops are still ignored; any other
    field is refused as not a feature. (The id column is the service's: it keys the event, see test_serving_api.)"""
    timed = adult_spec.model_copy(update={"time_column": "seen_at", "time_offset": TimeOffset(column="seen_hour", unit="hours")})
    base = _records(canonical(adult_rows.head(1), adult_spec), adult_spec)[0]
    _, errors = RecordCodec(timed, predictor).check([{**base, "seen_at": "2026-01-01", "seen_hour": 5, "fnlwgt": 1, "colour": "blue"}], ("body",))
    said = {e.loc[-1]: e.msg for e in errors}
    assert set(said) == {"seen_at", "seen_hour", "colour"} and all(e.type == "extra_forbidden" for e in errors)
    assert "the spec's time_column: a served event's time is when it is served" in said["seen_at"]
    assert "the spec's time_offset column: a served event's time is when it is served" in said["seen_hour"]
    _, errors = RecordCodec(timed, predictor).check([{**base, "income": ">50K"}], ("body",))
    assert [e.msg for e in errors] == ["extra field not permitted (the spec's label: a served event's label comes back through /feedback)"]
    assert "not a feature of the dataset spec" in said["colour"]
    ignoring = RecordCodec(timed, predictor, refuse_unknown=False).check([{**base, "seen_at": "2026-01-01", "colour": "blue"}], ("body",))[1]
    assert [e.loc[-1] for e in ignoring] == ["seen_at"], "ignored: an unknown field; refused still: the time column"


def test_a_model_that_does_not_fit_the_spec_is_refused_naming_the_difference(adult_spec: DatasetSpec, predictor: Predictor) -> None:
    """A reload of a champion trained on other features logs this; the two full input lists hid the one name that differed."""
    wider = adult_spec.model_copy(update={"features": {**adult_spec.features, "shoe-size": FeatureType.numeric}})
    with pytest.raises(ModelMismatch, match=re.escape("the spec has ['shoe-size'] the model lacks, the model nothing the spec lacks")):
        RecordCodec(wider, predictor)
    retyped = adult_spec.model_copy(update={"features": {**adult_spec.features, "age": FeatureType.categorical}})
    with pytest.raises(ModelMismatch, match="the same names, some numeric in one and categorical in the other"):
        RecordCodec(retyped, predictor)
    renamed = adult_spec.model_copy(update={"classes": ["low", "high"], "positive_class": "high"})
    with pytest.raises(ModelMismatch, match=re.escape("the model predicts classes dataset spec 'adult' does not have: ['<=50K', '>50K']")):
        RecordCodec(renamed, predictor)  # it answered '<=50K' while /feedback took 'low': two vocabularies
    flipped = adult_spec.model_copy(update={"positive_class": adult_spec.negative_class})
    with pytest.raises(ModelMismatch, match=re.escape("the model's probability is of class '>50K', dataset spec 'adult' has positive class '<=50K'")):
        RecordCodec(flipped, predictor)  # its probability, of '>50K', was read as of '<=50K': every AUC and floor turned round
    regression = adult_spec.model_copy(update={"task": Task.regression, "classes": None, "positive_class": None})
    with pytest.raises(ModelMismatch, match="the model is a binary model, dataset spec 'adult' a regression task"):
        RecordCodec(regression, predictor)
    RecordCodec(adult_spec.model_copy(update={"classes": ["<=50K", ">50K", "unknown"]}), predictor)  # a class gained: served until retrained


def test_a_champion_served_after_the_spec_gained_a_class_gives_it_probability_zero(tmp_path: Path) -> None:
    """The yeast probe: after `classes` gained one, the champion trained before kept serving (as it should: it never
    predicts the class) and its `probabilities` lacked it, where the README says they map every class; the review: the
    class gained by an edit while serving ran (which /feedback takes at once) was left out until a restart."""
    import time

    import yaml

    from mlplatform.settings import Settings
    from mlplatform.stores.eventlog import EventLog
    from mlplatform.stores.registry import Registry
    from mlplatform_tests.test_history_serving import Parts, serving

    declared = {"name": "tri", "task": "multiclass", "label": "y", "classes": ["a", "b"], "features": {"x": "numeric"}}
    spec_path = tmp_path / "tri.yaml"
    spec_path.write_text(yaml.safe_dump(declared), encoding="utf-8")
    started = load_spec(spec_path)
    x = np.random.default_rng(5).random(900)
    events = validate_frame(pd.DataFrame({"x": x, "y": np.where(x < 0.5, "a", "b")}), started, generated_id_prefix="t", generated_time_start_us=0).events
    settings = Settings(state_dir=tmp_path / "state", dataset_spec=spec_path, serve_reload_seconds=0.2)
    settings.ensure_dirs()
    registry = Registry(settings.tracking_uri, settings.artifact_root, started)
    registry.promote(registry.log_model(train(events, started, TINY), events, {}, {}).version)
    log = EventLog.for_dataset(settings.events_dir, started)
    try:
        with serving(Parts("tri", settings, started, log, registry)) as client:
            assert list(client.post("/predict", json={"x": 0.2}).json()["probabilities"]) == ["a", "b"]
            spec_path.write_text(yaml.safe_dump({**declared, "classes": ["a", "b", "c"]}), encoding="utf-8")
            deadline = time.monotonic() + 30
            while "c" not in (answer := client.post("/predict", json={"x": 0.2}).json())["probabilities"]:
                assert time.monotonic() < deadline, answer
                time.sleep(0.2)
        assert answer["prediction"] == "a" and list(answer["probabilities"]) == ["a", "b", "c"] and answer["probabilities"]["c"] == 0.0, answer
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    finally:
        log.close()
