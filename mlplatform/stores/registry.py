"""The MLflow side: one registered model per dataset, versions with aliases `champion` and `challenger`.

Models are logged as self-contained pyfuncs (feature transformer + booster) with explicit pip
requirements, so logging does not spend seconds inferring them in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mlplatform.domain.keys import (CHAMPION_CHANGE, CHAMPION_MOVING, DAGSTER_RUN_TAG, DECISION_THRESHOLD_PARAM, DECISION_THRESHOLD_TAG, ESTIMATOR, ESTIMATOR_REFERENCE_PREFIX, NO_ESTIMATOR_PREFIX,
                                    PINNED, POSITIVE_CLASS_TAG, WINDOW_CUTOFF)
from mlplatform.domain.retry_budget import RetryBudget
from mlplatform.domain.spec import DatasetSpec, Task

if TYPE_CHECKING:  # LightGBM and scikit-learn load only where a model is logged or loaded, not for a status or an alias read
    from mlflow.data.pandas_dataset import PandasDataset
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.exceptions import MlflowException

    from mlplatform.domain.predictor import Predictor
    from mlplatform.domain.training import TrainingResult

log = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
CHAMPION = "champion"
CHALLENGER = "challenger"
TRAINING = "training"  # MLflow's dataset context of a version's training window


# What `limit_mlflow_retries` sets in the environment (a caller that scopes its environment restores these too).
MLFLOW_RETRY_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def limit_mlflow_retries(budget: RetryBudget) -> None:
    """Turn MLflow's own retries off and cap its request timeout, for this process and the ones it starts.

    MLflow retries inside every one of Dagster's attempts: HTTP requests 7 times with backoff (~4 min against a closed
    port) and SQLAlchemy engine creation 10 times (~100 s against a SQLite file that cannot be opened; a module
    constant, no environment variable). Dagster's retry policy, from the same budget, does the backing off instead.
    MLflow is imported here, when a store is first used, not when the code location loads.
    """
    import mlflow.store.db.utils

    retries, timeout = MLFLOW_RETRY_ENV
    os.environ[retries] = "0"
    os.environ[timeout] = str(budget.mlflow_request_timeout_seconds)
    mlflow.store.db.utils.MAX_RETRY_COUNT = 1


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("lightgbm", "pandas", "numpy", "scikit-learn", "mlflow")]


ABANDONED_RUNS_SCAN = 100  # RUNNING training runs looked at per training: a few at most are ever left
MOVE_MARK_SECONDS = 60.0  # a platform move's alias and timeline entry are a second apart; a mark older than this is a move that died


@dataclass(frozen=True)
class ChampionRecord:
    """Who serves, read from the registry alone: the alias, the label cut-off of that version's window and any pin."""

    version: int
    label_seq_cutoff: int
    pinned: bool
    pin_reason: str
    recorded: bool  # the timeline's last move names this version, or the platform is moving to it (False: moved outside the platform)
    since: float = 0.0  # when the timeline says it became champion (its pins and unpins since are no change), epoch seconds (0: not recorded there)
    registered_at: float = 0.0  # when the version was registered, epoch seconds (0: not known)


@dataclass(frozen=True)
class ChampionChange:
    """One move of `@champion`: which version, when, by whom, why (the registry keeps one tag per move)."""

    seq: int
    version: int
    at: float
    by: str
    reason: str
    pinned: bool = False


def champion_gone(timeline: Sequence[ChampionChange]) -> str | None:
    """Why there is no champion although the `timeline` shows `@champion` was set before (None: it never was, "no
    champion yet"): its version was deleted, or the alias removed, outside mlplatform. A model that had one must not
    read as a fresh model waiting for its first."""
    if not timeline:
        return None
    return (f"no champion: @champion is gone, last moved to v{timeline[-1].version} (that version deleted, or the alias removed outside mlplatform); "
            "set one with `mlplatform champion set --version N`")


@dataclass(frozen=True)
class VersionInfo:
    version: int
    run_id: str
    aliases: list[str]
    tags: dict[str, str]


class Registry:
    """MLflow tracking + registry for one dataset's model."""

    def __init__(self, tracking_uri: str, artifact_root: str, spec: DatasetSpec) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.spec = spec
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.name = spec.model_name
        experiment = self.client.get_experiment_by_name(self.name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(self.name, artifact_location=f"{artifact_root}/{spec.name}")
            except MlflowException:
                self.experiment_id = self.client.get_experiment_by_name(self.name).experiment_id
        else:
            self.experiment_id = experiment.experiment_id

    def log_model(
        self,
        result: TrainingResult,
        sample: pd.DataFrame,
        metrics: dict[str, float],
        tags: dict[str, str],
        inputs: dict[str, PandasDataset] | None = None,
        frames: dict[str, pd.DataFrame] | None = None,
    ) -> ModelVersion:
        """Log params, metrics, importance, spec and the pyfunc; register it as a new `challenger`. `inputs` (context →
        dataset: the training window under `training`, its hold-out) become the run's inputs, linked to the LoggedModel
        with the metrics (measured on the training window's latest part). `frames` (artifact path ending in .parquet →
        frame) are side files of the run, uploaded with the others (read back with `read_frame`).

        Few store round trips on purpose (each is a SQLite commit): params and metrics in one batch, the datasets in
        one call, the side files in one artifact upload, and the version registered with its tags in one call.
        """
        import mlflow
        from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput, Metric, Param
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
        from mlflow.models import ModelSignature

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        example = sample[result.predictor.transformer.input_columns].head(5).reset_index(drop=True)
        # Outputs only: MLflow's input-schema check ran before the model and refused what serving and landing take
        # (int64 for a numeric feature, numbers for a categorical), and named only the columns the example had no gap in.
        # The model checks its inputs itself (mlflow_model.py), by the platform's rules.
        signature = ModelSignature(outputs=mlflow.models.infer_signature(example, result.predictor.predict(example)).outputs)
        params = [Param(k, str(v)) for k, v in result.params.items() if k != "verbosity"]
        if result.predictor.task == "binary":
            params.append(Param(DECISION_THRESHOLD_PARAM, f"{result.predictor.threshold:.6g}"))
        values = {**metrics, "validation_loss": result.validation_loss, "best_iteration": result.best_iteration,
                  "train_rows": result.train_rows, "validation_rows": result.validation_rows,
                  "tuning_trials": result.trials, "training_seconds": result.seconds}
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=self.experiment_id, tags=tags) as run:
            side = Path(tmp, "side")
            side.mkdir()
            (side / "feature_importance.json").write_text(result.importance.to_json(orient="split", index=False), encoding="utf-8")
            (side / "dataset_spec.yaml").write_text(self.spec.to_yaml(), encoding="utf-8")
            for artifact_file, frame in (frames or {}).items():
                (side / artifact_file).parent.mkdir(parents=True, exist_ok=True)
                frame.to_parquet(side / artifact_file, index=False)
            self.client.log_artifacts(run.info.run_id, str(side))
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts=result.predictor.save(Path(tmp, "model")),
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
            )
            inputs = inputs or {}
            training = inputs.get(TRAINING)
            on = {"dataset_name": training.name, "dataset_digest": training.digest} if training is not None else {}
            now = int(time.time() * 1000)
            self.client.log_batch(run.info.run_id, params=params, metrics=[Metric(k, float(v), now, 0, model_id=info.model_id, **on) for k, v in values.items()])
            if inputs:
                self.client.log_inputs(run.info.run_id, [DatasetInput(Dataset(**d.to_dict()), [InputTag(MLFLOW_DATASET_CONTEXT, context)]) for context, d in inputs.items()],
                                       models=[LoggedModelInput(info.model_id)])
        positive = {} if result.predictor.task != "binary" else {POSITIVE_CLASS_TAG: str(result.predictor.positive_class),
                                                                  DECISION_THRESHOLD_TAG: f"{result.predictor.threshold:.6g}"}
        version = mlflow.register_model(info.model_uri, self.name, tags={**tags, **positive})
        self.client.set_registered_model_alias(self.name, CHALLENGER, version.version)
        return version

    def end_abandoned_runs(self, abandoned: Callable[[str], bool]) -> list[str]:
        """Mark FAILED the training runs still RUNNING whose Dagster run (their `dagster_run_id` tag) `abandoned` says
        ended: a worker killed mid-training, or whose store went down, left its MLflow run RUNNING for ever (the
        production probe). Returns their ids; a run of another tool, without the tag, is left alone."""
        from mlflow.entities import RunStatus

        running = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=ABANDONED_RUNS_SCAN)
        ended = [r.info.run_id for r in running if (dagster_run := r.data.tags.get(DAGSTER_RUN_TAG)) and abandoned(dagster_run)]
        for run_id in ended:
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        return ended

    def version_by_alias(self, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException, RestException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except (RestException, MlflowException) as exc:
            return _none_if_missing(exc)

    def champion(self) -> ModelVersion | None:
        return self.version_by_alias(CHAMPION)

    def get_version(self, version: int | str) -> ModelVersion:
        return self.client.get_model_version(self.name, str(version))

    def champion_record(self) -> ChampionRecord | None:
        """The champion as sensors, alerts, status and serving see it; None without one. Two store reads: the
        registered model (alias, pin, timeline tags) and the version (its window's cut-off).

        A version whose alias was moved by hand (MLflow UI, a rollback) is the champion like any other: its
        cut-off comes from its own window tag, so "new labels since the champion" follows the move.
        """
        model = self._registered_model()
        version = None if model is None else model.aliases.get(CHAMPION)
        if version is None:
            return None
        found = self.get_version(version)
        return read_champion(int(version), dict(model.tags), found.tags, (found.creation_timestamp or 0) / 1000)  # type: ignore[union-attr]

    def _registered_model(self) -> RegisteredModel | None:
        from mlflow.exceptions import MlflowException, RestException

        try:
            return self.client.get_registered_model(self.name)
        except (RestException, MlflowException) as exc:
            return _none_if_missing(exc)

    def _model_tags(self) -> dict[str, str]:
        model = self._registered_model()
        return {} if model is None else dict(model.tags)

    def promote(self, version: int | str, reason: str = "promoted", by: str = "mlplatform") -> None:
        """Move `@champion` to `version` and record the move; a pinned champion is only replaced through `set_champion`."""
        self._move(int(version), reason, by, pinned=False)

    def set_champion(self, version: int | str, reason: str, by: str, pin: bool) -> ChampionChange:
        """A rollback or pin by a person: `@champion` moves to `version` and, with `pin`, stays there until `unpin`."""
        self.get_version(version)  # refuses an unknown version before anything moves
        if pin:
            self.client.set_registered_model_tag(self.name, PINNED, f"{version}:{reason}")
        else:
            self._unpin()
        return self._move(int(version), reason, by, pinned=pin)

    def unpin(self, reason: str, by: str) -> ChampionChange | None:
        """Let the retraining loop replace the champion again; the timeline entry, or None without a champion."""
        champion = self.champion()
        self._unpin()
        if champion is None:
            return None
        return self._record_change(int(champion.version), f"unpinned: {reason}", by, pinned=False)

    def _unpin(self) -> None:
        if PINNED in self._model_tags():
            self.client.delete_registered_model_tag(self.name, PINNED)

    def _move(self, version: int, reason: str, by: str, pinned: bool) -> ChampionChange:
        """The alias moved and the move recorded, marked as the platform's own before the alias moves: a sensor reading
        between the alias and the timeline entry took it for a move outside the platform. The mark (CHAMPION_MOVING:
        version, the timeline entry it announces, when) holds only until that entry exists and for MOVE_MARK_SECONDS at
        most, so it is left in place: a move that died after the alias is noted as an outside move once its mark lapses."""
        seq = max((c.seq for c in self.timeline()), default=0) + 1
        self.client.set_registered_model_tag(self.name, CHAMPION_MOVING, f"{version}:{seq}:{time.time():.3f}")
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        return self._record_change(version, reason, by, pinned, seq)

    def _record_change(self, version: int, reason: str, by: str, pinned: bool, seq: int | None = None) -> ChampionChange:
        """The timeline entry of a move: number `seq`, by default the next."""
        seq = max((c.seq for c in self.timeline()), default=0) + 1 if seq is None else seq
        change = ChampionChange(seq, version, round(time.time(), 3), by, reason[:2000], pinned)
        value = json.dumps({"version": version, "at": change.at, "by": by, "reason": change.reason, "pinned": pinned})
        self.client.set_registered_model_tag(self.name, f"{CHAMPION_CHANGE}{change.seq:06d}", value)
        return change

    def note_outside_move(self, by: str) -> ChampionRecord | None:
        """Record in the timeline a move of `@champion` made outside the platform (the MLflow UI or API), if the champion,
        read again, is still neither the timeline's last move nor the one the platform is making. A pin of another version
        ends with it: left behind, it came back when the alias did. Returns the record noted, or None."""
        record = self.champion_record()
        if record is None or record.recorded:
            return None
        pinned, _, pin_reason = self._model_tags().get(PINNED, "").partition(":")
        dropped = f"; the pin of v{pinned} ({pin_reason}) ends" if pinned and pinned != str(record.version) else ""
        if dropped:
            self._unpin()
        self._record_change(record.version, f"alias moved outside mlplatform (MLflow UI or API){dropped}", by, pinned=record.pinned)
        return record

    def timeline(self) -> list[ChampionChange]:
        """Every recorded move of `@champion`, oldest first."""
        return _timeline(self._model_tags())

    def tag_version(self, version: int | str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, value)

    def load_predictor(self, version: int | str) -> Predictor:
        """The version's pyfunc, loaded from this registry, unwrapped to the in-process predictor.

        MLflow resolves `models:/` through its process-global URIs, which a fresh serving process has not set.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        from mlplatform.domain.predictor import ESTIMATOR_NOT_FITTED, NO_ESTIMATOR

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        model = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        predictor: Predictor = model.unwrap_python_model().predictor
        if predictor.estimator is None and predictor.no_estimator == NO_ESTIMATOR:  # none logged: its tag may say why
            with contextlib.suppress(MlflowException):  # a message only: a store that fails here does not fail the load
                recorded = self.get_version(version).tags.get(ESTIMATOR, "")  # the estimation probe: "before estimation existed"
                if recorded.startswith(NO_ESTIMATOR_PREFIX):  # for a hold-out too small to fit one
                    predictor.no_estimator = f"{ESTIMATOR_NOT_FITTED}: {recorded.removeprefix(NO_ESTIMATOR_PREFIX)}"
        return predictor

    def probability_of(self, version: int | str) -> str | None:
        """The class a binary version's probability is of (None: the spec is not binary, with nothing to read): its
        version tag, one store read where loading the model would download and unpickle it; a version logged before the
        tag existed is loaded."""
        if self.spec.task is not Task.binary:
            return None
        recorded = self.get_version(version).tags.get(POSITIVE_CLASS_TAG)
        return recorded if recorded is not None else self.load_predictor(version).positive_class

    def holdout_reference(self, version: int | str) -> dict[str, float]:
        """The version's realized metrics on its own hold-out, as logged with its performance estimator (empty for a
        version logged without one): one store read, where loading the model for its estimator would unpickle it."""
        logged = self.client.get_run(self.get_version(version).run_id).data.metrics
        return {k.removeprefix(ESTIMATOR_REFERENCE_PREFIX): v for k, v in logged.items() if k.startswith(ESTIMATOR_REFERENCE_PREFIX)}

    def record_evaluation(self, holdout: PandasDataset, challenger: int, predicted: pd.DataFrame, scores: dict[int, dict[str, float]]) -> dict[str, float]:
        """The challenger's hold-out evaluation in its run (MLflow's evaluator: metrics, plots, per-segment quality), and
        each version's decision metrics on this hold-out (`holdout_*`) linked to its LoggedModel and this dataset, so
        `search_logged_models` ranks the versions compared on it. Returns MLflow's metrics."""
        import mlflow
        from mlflow.entities import Metric

        from mlplatform.stores.mlflow_records import HOLDOUT_METRIC_PREFIX, evaluate_version

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        mine = self.get_version(challenger)
        metrics = evaluate_version(self.spec, holdout, predicted, logged_model_id(mine), mine.run_id)
        now = int(time.time() * 1000)
        for number, values in scores.items():
            version = mine if number == challenger else self.get_version(number)
            self.client.log_batch(version.run_id, metrics=[
                Metric(f"{HOLDOUT_METRIC_PREFIX}{k}", float(v), now, challenger, model_id=logged_model_id(version), dataset_name=holdout.name, dataset_digest=holdout.digest)
                for k, v in values.items()])
        return metrics

    def log_metrics(self, version: int | str, metrics: dict[str, float]) -> None:
        """Metrics on the version's run and LoggedModel (its live shadow comparison), in one batch."""
        from mlflow.entities import Metric

        mine = self.get_version(version)
        now = int(time.time() * 1000)
        self.client.log_batch(mine.run_id, metrics=[Metric(k, float(v), now, 0, model_id=logged_model_id(mine)) for k, v in metrics.items()])

    def log_artifact(self, version: int | str, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.get_version(version).run_id, str(path), artifact_path)

    def log_dict(self, version: int | str, data: dict[str, object], artifact_file: str) -> None:
        self.client.log_dict(self.get_version(version).run_id, data, artifact_file)

    def read_frame(self, version: int | str, artifact_file: str) -> pd.DataFrame:
        """The Parquet artifact `artifact_file` of the version's run (one of log_model's `frames`)."""
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_parquet(self.client.download_artifacts(self.get_version(version).run_id, artifact_file, tmp))

    def versions(self, limit: int | None = None) -> list[VersionInfo]:
        """The newest `limit` versions (all by default), newest first, with their aliases and tags: two store queries.

        Aliases come from the registered model: search_model_versions leaves them empty.
        """
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
            aliases = self.client.get_registered_model(self.name).aliases if found else {}
        except MlflowException:
            return []
        return read_versions([(int(v.version), v.run_id, dict(v.tags)) for v in found], aliases, limit)


def read_champion(version: int, model_tags: dict[str, str], version_tags: Mapping[str, str], registered_at: float = 0.0) -> ChampionRecord:
    """The champion `version` as its registered model's tags (pin, timeline) and its own tags (window cut-off) describe it,
    registered at `registered_at` (epoch seconds, 0: not known)."""
    pinned_version, _, reason = model_tags.get(PINNED, "").partition(":")
    history = _timeline(model_tags)
    named = bool(history) and history[-1].version == version
    recorded = named or _moving_to(model_tags.get(CHAMPION_MOVING, ""), history) == version
    return ChampionRecord(version, int(version_tags.get(WINDOW_CUTOFF, 0)), pinned=pinned_version == str(version), pin_reason=reason, recorded=recorded,
                          since=_became_champion(history) if named else 0.0, registered_at=registered_at)


def _became_champion(history: Sequence[ChampionChange]) -> float:
    """When the last version of `history` took over: the first of the moves naming it since another version's (a pin,
    an unpin or a set to the version it already was is no change of champion)."""
    since = history[-1].at
    for change in reversed(history):
        if change.version != history[-1].version:
            break
        since = change.at
    return since


def _moving_to(mark: str, history: list[ChampionChange], now: float | None = None) -> int | None:
    """The version a platform move in progress is taking `@champion` to: its mark names a timeline entry not written yet
    and is younger than MOVE_MARK_SECONDS. None for no mark, a finished move, or one that died (then the alias it moved
    is an outside move)."""
    version, seq, at = (mark.split(":") + ["", "", ""])[:3]
    try:
        fresh = (time.time() if now is None else now) - float(at) < MOVE_MARK_SECONDS
        pending = int(seq) > max((c.seq for c in history), default=0)
        return int(version) if fresh and pending else None
    except ValueError:
        return None


def read_versions(found: list[tuple[int, str, dict[str, str]]], aliases: Mapping[str, int | str], limit: int | None) -> list[VersionInfo]:
    """(version, run id, tags) of a model's versions with the aliases pointing at each, the newest `limit` first."""
    return [VersionInfo(version, run_id, sorted(alias for alias, v in aliases.items() if str(v) == str(version)), tags)
            for version, run_id, tags in sorted(found, key=lambda f: f[0], reverse=True)[:limit]]


def logged_model_id(version: ModelVersion) -> str:
    """The LoggedModel behind a version: the SQL registry leaves `model_id` empty, its source says `models:/<model id>`."""
    return version.model_id or version.source.removeprefix("models:/")


def _none_if_missing(exc: MlflowException) -> None:
    """None when MLflow says the model or alias does not exist (its wording differs by store); any other error is raised."""
    text = str(exc).lower()
    if "resource_does_not_exist" in text or "not found" in text or "does not exist" in text:
        return None
    raise exc


def _timeline(model_tags: dict[str, str]) -> list[ChampionChange]:
    out = []
    for key, value in model_tags.items():
        if key.startswith(CHAMPION_CHANGE):
            entry = json.loads(value)
            out.append(ChampionChange(int(key.removeprefix(CHAMPION_CHANGE)), int(entry["version"]), float(entry["at"]), str(entry["by"]),
                                      str(entry["reason"]), bool(entry.get("pinned", False))))
    return sorted(out, key=lambda c: c.seq)


def json_tag(value: object) -> str:
    return json.dumps(value, default=str)[:4900]
