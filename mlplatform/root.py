"""The composition root: every model of the code location, and the stores each one uses, built once per process.

Models are declared as Dagster components (`mlplatform/defs/<folder>/defs.yaml`, type
`mlplatform.RetrainingLoop`). This module reads those files itself, without importing Dagster, so that
serving and the CLI know the same models as the code location and start fast. The Dagster component, the
Dagster resource, serving, the CLI, the benchmarks and the tests all take their models from `platform()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mlplatform.domain.evaluation import primary_metric
from mlplatform.domain.spec import DatasetSpec, SpecError, dagster_name, load_spec
from mlplatform.settings import SERVE_MODELS_ENV, Settings, SettingsError, env_name, env_value

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlplatform.stores.alerting import Alerter
    from mlplatform.stores.eventlog import EventStore
    from mlplatform.stores.registry import Registry

COMPONENT_TYPE = "mlplatform.RetrainingLoop"
COMPONENT_TYPES = (COMPONENT_TYPE, "mlplatform.orchestration.component.RetrainingLoop")  # its short name, and the class's own path, which dg takes too
DEFS_DIR = Path(__file__).resolve().parent / "defs"
DEFS_FILE = "defs.yaml"
# A defs.yaml's own keys, as Dagster's ComponentFileModel takes them (a test holds the two equal): checked here, where a
# misspelt `atributes:` read as no attributes at all, and status said "attributes.spec: Field required".
COMPONENT_FILE_KEYS = ("type", "attributes", "template_vars_module", "requirements", "post_processing")

# The loop settings a model may set for itself in its defs.yaml; MLPLATFORM_* variables stay the defaults.
LOOP_FIELDS = (
    "retrain_every_n", "min_new_labelled_for_drift", "retrain_cooldown_seconds", "training_window", "training_window_candidates", "training_window_since_change", "holdout_fraction",
    "holdout_max_rows", "refit_on_holdout", "validation_fraction", "min_training_rows", "tuning_trials", "tuning_seconds", "num_boost_round",
    "early_stopping_rounds", "seed", "promotion_margin", "promotion_requires_significance", "quality_floor", "promotion_requires_shadow_win", "shadow_min_events", "shadow_max_wait_seconds",
    "serve_shadow_challenger", "serve_shadow_queue", "serve_reload_seconds", "serve_max_batch_rows", "serve_unknown_fields", "serve_log_on_loop",
    "serve_log_interval_ms", "serve_log_max_rows", "serve_history_catch_up_seconds", "serve_live_quality_seconds", "serve_online_correction",
    "serve_correction_learning_rate", "serve_correction_warm_events", "max_quarantine_share", "max_null_share",
    "drift_sample_rows", "drift_share_threshold", "drift_min_current_rows", "drift_current_hours", "drift_every_n_events", "drift_reports_keep", "feature_snapshots_keep",
    "live_quality_window", "live_quality_min_events", "live_min_precision", "live_min_recall", "live_max_rmse",
    "estimation_chunk_events", "estimation_chunks", "estimation_min_events", "retrain_on_estimated_drop", "estimated_drop_margin", "estimated_drop_events",
    "retrain_on_quality_drop", "quality_drop_margin", "quality_drop_events",
    "freshness_model_hours", "freshness_drift_hours", "freshness_live_quality_hours",
)

log = logging.getLogger(__name__)


def _optional(name: str) -> tuple[Any, Any]:
    """A Settings field as an optional override: same type and description; its bounds are checked on the merged Settings.
    A quality_floor mapping takes any metric's name here: `_own_floor` then names the model's own metric, where pydantic
    said only that `accuracy` was none of three (the yeast probe)."""
    f = Settings.model_fields[name]
    annotation = float | dict[str, float] if name == "quality_floor" else f.annotation
    return annotation | None, Field(default=None, description=f.description)


LoopSettings = create_model(  # type: ignore[call-overload]
    "LoopSettings",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Per-model overrides of the retraining loop's MLPLATFORM_* defaults.",
    **{name: _optional(name) for name in LOOP_FIELDS},
)


class ModelDeclaration(BaseModel):
    """What a model's defs.yaml declares: its dataset spec and how its loop differs from the defaults."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(description="Dataset spec YAML, relative to the folder of this defs.yaml (or absolute).")
    landing_dir: str | None = Field(default=None, description="Folder watched for this model's event files (default: <MLPLATFORM_LANDING_DIR or state/landing>/<model>).")
    loop: LoopSettings = Field(default_factory=LoopSettings, description="Loop settings for this model only (N, cool-down, windows, tuning budget, margin, floors).")  # type: ignore[valid-type]


class PlatformError(ValueError):
    """A model declaration that cannot be used (bad YAML, wrong field, missing spec, duplicate name): names the file."""


@dataclass
class ModelContext:
    """One model: its settings (global defaults + its own loop settings), spec and stores, each built once."""

    name: str
    settings: Settings
    spec: DatasetSpec
    declared_in: Path
    loop_keys: tuple[str, ...] = ()  # the settings its defs.yaml `loop:` sets (`mlplatform settings` says where a value came from)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _event_log: EventStore | None = field(default=None, repr=False)
    _event_log_identity: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """Prefix of the model's asset keys and of its jobs, sensors and groups."""
        return dagster_name(self.name)

    @property
    def event_log(self) -> EventStore:
        """Opened once (opening creates the schema, which takes a write lock). The embedded SQLite file is reopened when
        it was replaced or removed (restored from a backup, a volume remounted), so a long-lived code server never reads
        a stale file; PostgreSQL (`event_log_url`) reconnects by itself."""
        from mlplatform.stores.eventlog_factory import open_event_log

        path = self.settings.events_dir / f"{self.spec.name}.sqlite"
        with self._lock:
            identity = None if self.settings.event_log_url is not None else _file_identity(path)
            if self._event_log is None or self._event_log_identity != identity:
                self._event_log = open_event_log(self.settings, self.spec)
                self._event_log_identity = None if self.settings.event_log_url is not None else _file_identity(path)
            return self._event_log

    @cached_property
    def registry(self) -> Registry:
        """Built with MLflow's own retries bounded by the settings' budget, so an unreachable MLflow fails a run in time."""
        from mlplatform.stores.registry import Registry, limit_mlflow_retries

        with self._lock:
            limit_mlflow_retries(self.settings.retry_budget)
            self.settings.mlflow_dir.mkdir(parents=True, exist_ok=True)  # the embedded store's folder (and the proxied artifacts')
            return Registry(self.settings.tracking_uri, self.settings.artifact_root, self.spec)

    @property
    def alerter(self) -> Alerter:
        from mlplatform.stores.alerting import Alerter

        return Alerter.from_settings(self.settings)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def read_declaration(defs_file: Path) -> ModelDeclaration | None:
    """The declaration in one defs.yaml, or None when the file declares another component type."""
    try:
        documents = list(yaml.safe_load_all(defs_file.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlatformError(f"{defs_file}: cannot be read as YAML: {exc}") from None
    ours = [d for d in documents if isinstance(d, dict) and d.get("type") in COMPONENT_TYPES]
    if len(documents) > 1 and ours:  # dg takes several components per file, `---` apart; a model is named by its defs.yaml
        raise PlatformError(f"{defs_file}: {len(documents)} YAML documents, {len(ours)} of them {COMPONENT_TYPE}: declare each model in a "
                            "defs.yaml of its own folder (`dg scaffold defs mlplatform.RetrainingLoop <name>`)")
    document = documents[0] if len(documents) == 1 else None
    declared = document.get("type") if isinstance(document, dict) else None
    if isinstance(declared, str) and declared not in COMPONENT_TYPES and declared.startswith(f"{COMPONENT_TYPE.split('.')[0]}."):
        # Another package's component is none of ours; a misspelt one of ours was skipped here without a word while
        # `dg check defs` refused the whole code location.
        raise PlatformError(f"{defs_file}: type: {declared!r} is no component of mlplatform (its one component type: {COMPONENT_TYPE})")
    if declared not in COMPONENT_TYPES:
        return None
    unknown = [str(k) for k in document if k not in COMPONENT_FILE_KEYS]
    if unknown:
        raise PlatformError(f"{defs_file}: {', '.join(unknown)}: not a key of a defs.yaml (its keys: {', '.join(COMPONENT_FILE_KEYS)})")
    try:
        return ModelDeclaration.model_validate(document.get("attributes") or {})
    except ValidationError as exc:
        problems = [f"attributes.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise PlatformError(f"{defs_file}: {'; '.join(problems + _loop_value_problems(document.get('attributes'), problems))}") from None


def _loop_value_problems(attributes: object, said: list[str]) -> list[str]:
    """The values of a refused declaration's `loop:` the settings would refuse too, beside what its own check said: a
    misspelt key stopped the read before `retrain_every_n: 0` beside it was looked at, so a fix brought the next error
    (the stream probe). Each once: a setting already named in `said` is left out."""
    loop = attributes.get("loop") if isinstance(attributes, dict) else None
    known = {k: v for k, v in loop.items() if k in LOOP_FIELDS and not any(line.startswith(f"attributes.loop.{k}") for line in said)} \
        if isinstance(loop, dict) else {}
    try:
        Settings.model_validate(known)
    except ValidationError as exc:
        return [f"{'.'.join(['attributes.loop', *map(str, e['loc'])])}: {e['msg']}" for e in exc.errors()]
    return []


def code_files(defs_dir: Path = DEFS_DIR) -> list[Path]:
    """What loading the code location reads that a user edits: the package's Python and YAML files (every defs.yaml
    among them) and the spec each defs.yaml names, wherever it is. A defs.yaml that cannot be read now (being written)
    names no spec: its own change is seen, and the next look finds its spec."""
    package = Path(__file__).resolve().parent
    files = sorted(f for pattern in ("*.py", "*.yaml") for f in package.rglob(pattern))
    return files + [declared_spec(declaration, defs_file) for defs_file, declaration in readable_declarations(defs_dir)]


def readable_declarations(defs_dir: Path) -> Iterator[tuple[Path, ModelDeclaration]]:
    """Each defs.yaml under `defs_dir` declaring a model, with its declaration, passing over one that cannot be read or
    used now: for what looks at the declarations without loading them (the code location's files, taken names)."""
    for defs_file in sorted(defs_dir.rglob(DEFS_FILE)):
        declaration = None
        with contextlib.suppress(PlatformError):
            declaration = read_declaration(defs_file)
        if declaration is not None:
            yield defs_file, declaration


def declared_spec(declaration: ModelDeclaration, defs_file: Path) -> Path:
    """The spec file a declaration names: relative to its defs.yaml's folder, or absolute."""
    return (defs_file.parent / declaration.spec).resolve()


def build_model(settings: Settings, declaration: ModelDeclaration, defs_file: Path) -> ModelContext:
    """The model a declaration describes, with its spec loaded and its settings merged and checked."""
    spec_path = declared_spec(declaration, defs_file)
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise PlatformError(f"{defs_file}: attributes.spec: {exc}") from None
    landing_root = settings.landing_dir or settings.state_dir / "landing"
    landing = (defs_file.parent / declaration.landing_dir).resolve() if declaration.landing_dir else landing_root / spec.name
    # What the file sets, an explicit null too: `live_min_precision: null` unsets that floor for this model, where it was
    # dropped as unset and the 0.5 default held (the new-user probe's rare positive class).
    overrides = declaration.loop.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    _own_floor(overrides.get("quality_floor"), spec, defs_file)
    try:
        # What was set (here, by a variable or a file) stays marked set: a default live floor is waived where a set one is not.
        merged = Settings.model_validate({**settings.model_dump(exclude_unset=True), **overrides, "dataset_spec": spec_path, "landing_dir": landing})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(['attributes.loop', *map(str, e['loc'])])}: {e['msg']}" for e in exc.errors())
        raise PlatformError(f"{defs_file}: {problems}") from None
    if overrides.get("serve_online_correction") and spec.online_correction_problem is not None:  # its own declaration: refused at load, not at serve
        raise PlatformError(f"{defs_file}: attributes.loop.serve_online_correction: {spec.online_correction_problem}")
    return ModelContext(spec.name, merged, spec, defs_file, tuple(overrides))


def _own_floor(floor: object, spec: DatasetSpec, defs_file: Path) -> None:
    """A model's own quality_floor mapping names its primary metric, and no other: `{roc_auc: 0.99}` on a multiclass
    model was taken and ignored, its promotions held to the default log-loss floor (the many-models probe). A mapping
    shared by models of several tasks belongs in MLPLATFORM_QUALITY_FLOOR."""
    if not isinstance(floor, dict) or not floor:  # {}: no floor of its own, the default's
        return
    metric, higher = primary_metric(spec)
    if set(floor) != {metric}:
        raise PlatformError(f"{defs_file}: attributes.loop.quality_floor: {spec.name} is a {spec.task.value} model, whose floor is on {metric} "
                            f"({'at least' if higher else 'at most'}): give {{{metric}: <value>}} or a number, not {', '.join(sorted(map(str, floor)))}")


def declared_model_names(defs_dir: Path = DEFS_DIR) -> dict[str, Path]:
    """The Dagster name of each model declared under `defs_dir` whose declaration and spec can be read, with its
    defs.yaml: what a new model's name must not repeat (a second 'bike-sharing' hid every model)."""
    names = {}
    for defs_file, declaration in readable_declarations(defs_dir):
        with contextlib.suppress(SpecError):
            names[dagster_name(load_spec(declared_spec(declaration, defs_file)).name)] = defs_file
    return names


def _one_floor_metric(settings: Settings, models: list[ModelContext]) -> None:
    """A single quality_floor for every model (MLPLATFORM_QUALITY_FLOOR) is in each one's primary metric: 0.7, meant as
    an AUC, was an RMSE ceiling no regression model met, and none was ever promoted. Refused where it means two metrics."""
    if not isinstance(settings.quality_floor, float):
        return
    metrics = {m.name: primary_metric(m.spec) for m in models}
    if len({metric for metric, _ in metrics.values()}) > 1:
        each = ", ".join(f"{name}: {metric} {'≥' if higher else '≤'} {settings.quality_floor}" for name, (metric, higher) in metrics.items())
        raise PlatformError(f"{env_name('quality_floor')}={settings.quality_floor} would be the floor of models whose primary metrics differ ({each}): "
                            "give each metric its own (e.g. {\"roc_auc\": 0.7, \"rmse\": 80}), or set quality_floor in a model's defs.yaml loop:")


def _overlap(a: Path | None, b: Path | None) -> bool:
    """The same folder, or one inside the other."""
    if a is None or b is None:
        return False
    a, b = a.expanduser().resolve(), b.expanduser().resolve()
    return a == b or a in b.parents or b in a.parents


class Platform:
    """Every declared model of one code location, by name."""

    def __init__(self, settings: Settings, models: list[ModelContext]) -> None:
        self.settings = settings
        self.models: dict[str, ModelContext] = {}
        for model in models:
            other = self.models.get(model.name) or next((m for m in self.models.values() if m.key == model.key), None)
            if other is not None and other.name == model.name:
                raise PlatformError(f"two models named {model.name!r}: {other.declared_in} and {model.declared_in} (a model's name is its spec's `name`)")
            if other is not None:
                raise PlatformError(f"models {other.name!r} ({other.declared_in}) and {model.name!r} ({model.declared_in}) have one Dagster name, "
                                    f"{model.key!r}: names that differ only in '-' and '_' are one model to Dagster; rename one")
            sharing = next((m for m in self.models.values() if _overlap(m.settings.landing_dir, model.settings.landing_dir)), None)
            if sharing is not None:
                raise PlatformError(f"models {sharing.name!r} ({sharing.declared_in}) and {model.name!r} ({model.declared_in}) share a landing folder: "
                                    f"{sharing.settings.landing_dir} and {model.settings.landing_dir} (one folder: each file is taken by the model "
                                    "that ingests it first and never reaches the other; one inside the other: the inner one is a folder the outer "
                                    "model reports and leaves, or its processed/ or rejected/; give each model its own attributes.landing_dir)")
            self.models[model.name] = model

    @classmethod
    def discover(cls, settings: Settings, defs_dir: Path = DEFS_DIR) -> "Platform":
        """Every `mlplatform.RetrainingLoop` declared under the defs folder, in folder order."""
        models, floor_from_settings = [], []
        for defs_file in sorted(defs_dir.rglob(DEFS_FILE)):
            declaration = read_declaration(defs_file)
            if declaration is not None:
                models.append(build_model(settings, declaration, defs_file))
                if "quality_floor" not in declaration.loop.model_fields_set:  # type: ignore[attr-defined]  # an explicit null is its own: the task's default floor
                    floor_from_settings.append(models[-1])
        _one_floor_metric(settings, floor_from_settings)
        return cls(settings, models)

    def model(self, name: str) -> ModelContext:
        """The model called `name` (its spec name or its Dagster name)."""
        found = self.models.get(name) or next((m for m in self.models.values() if m.key == name), None)
        if found is None:
            raise SettingsError(f"no model named {name!r}; this code location has: {', '.join(self.models) or 'none'}")
        return found

    def model_declared_in(self, defs_file: Path) -> ModelContext:
        """The model a given defs.yaml declares (how the Dagster component finds its own)."""
        for model in self.models.values():
            if model.declared_in == defs_file.resolve():
                return model
        raise PlatformError(f"{defs_file}: not a {COMPONENT_TYPE} declaration under {DEFS_DIR}")

    def select(self, name: str | None) -> list[ModelContext]:
        """`name`'s model, or every model when no name is given."""
        return [self.model(name)] if name is not None else list(self.models.values())  # --model "" names no model

    def only(self, name: str | None) -> ModelContext:
        """`name`'s model; without a name, the one model there is (a command about one model needs to know which)."""
        if name is not None:
            return self.model(name)
        if len(self.models) != 1:
            raise SettingsError(f"this code location has {len(self.models)} models ({', '.join(self.models)}): say which with --model")
        return next(iter(self.models.values()))


Stamp = tuple[tuple[str, int, int], ...]
_platforms: dict[tuple[str, Path], tuple[Stamp, Platform]] = {}
_platforms_lock = threading.Lock()
_specs_named: dict[Stamp, list[Path]] = {}  # the specs the latest defs.yaml files (as stamped) name


def _stamp(paths: Iterable[Path]) -> Stamp:
    """Each file's path, modification time and size (-1, -1: not there now)."""
    def one(path: Path) -> tuple[str, int, int]:
        try:
            found = path.stat()
        except OSError:
            return str(path), -1, -1
        return str(path), found.st_mtime_ns, found.st_size
    return tuple(one(path) for path in paths)


def declarations_stamp(defs_dir: Path = DEFS_DIR) -> Stamp:
    """What a Platform is built from that a person edits while processes run: each defs.yaml under `defs_dir` and the
    spec each names. A process that lives across runs (the Celery worker's pool, a warm run worker) kept the Platform it
    built first: a model scaffolded meanwhile failed every step of every model ("not a mlplatform.RetrainingLoop
    declaration"), and an edited `loop:` was ignored by steps there (the production probe). A few stats a call."""
    declared = _stamp(sorted(defs_dir.rglob(DEFS_FILE)))
    specs = _specs_named.get(declared)
    if specs is None:
        specs = [declared_spec(declaration, defs_file) for defs_file, declaration in readable_declarations(defs_dir)]
        _specs_named.clear()
        _specs_named[declared] = specs
    return declared + _stamp(specs)


def platform(settings: Settings | None = None, defs_dir: Path = DEFS_DIR) -> Platform:
    """The process's Platform for these settings (default: from the environment), built on first use and reused while
    the declarations under `defs_dir` and their specs stay as they were (`declarations_stamp`); built again after an edit."""
    settings = settings or Settings()
    # Secrets in clear: model_dump_json masks them, so settings that differ only in a store's URL shared one Platform.
    key = (repr(sorted((name, env_value(value)) for name, value in settings.model_dump().items())), defs_dir)
    stamp = declarations_stamp(defs_dir)
    with _platforms_lock:
        found = _platforms.get(key)
        if found is None or found[0] != stamp:  # creates no folder: loading the code location must not leave state behind (the stores make theirs)
            try:
                found = _platforms[key] = (stamp, Platform.discover(settings, defs_dir))
            except PlatformError as exc:
                if found is None:
                    raise
                # A declaration being written, or broken by an edit: the steps of runs in flight go on with the models
                # they started with (the code location refuses to load it anyway); the next call reads it again.
                log.warning("declarations unusable now, the ones read before serve on: %s", exc)
        return found[1]


def forget_platforms() -> None:
    """Drop every built Platform (the demo calls this after wiping a state folder whose stores they hold open)."""
    with _platforms_lock:
        _platforms.clear()


def serving_app() -> FastAPI:
    """The prediction service of one `mlplatform serve --workers N` process: the models the parent named, built here
    as the parent built them (each worker has its own event log connections and champion watcher)."""
    from mlplatform.serving import create_app
    from mlplatform.serving.server import freeze_startup_heap

    settings = Settings()
    found = platform(settings)
    app = create_app(settings, [found.model(name) for name in os.environ[SERVE_MODELS_ENV].split(",")])
    freeze_startup_heap()
    return app
