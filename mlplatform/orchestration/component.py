"""`mlplatform.RetrainingLoop`: one model's whole loop as a Dagster component, declared in `defs/<model>/defs.yaml`.

    type: mlplatform.RetrainingLoop
    attributes:
      spec: ../../../data/adult.yaml      # relative to this file's folder
      loop: {retrain_every_n: 5000}       # optional: this model's own loop settings

`dg scaffold defs mlplatform.RetrainingLoop churn` writes such a folder, with a spec pre-filled from a sample
file's columns when given one (`--json-params '{"sample": "path/to/events.csv"}'`).
"""

import re
from pathlib import Path

import dagster as dg
from dagster.components.scaffold.scaffold import ScaffoldRequest, scaffold_with
from pydantic import BaseModel

from mlplatform.domain.spec import MODEL_NAME, MODEL_NAME_RULE, dagster_name, model_name_like
from mlplatform.domain.spec_draft import draft_spec
from mlplatform.orchestration.alerts import build_alerts_sensor, build_live_quality
from mlplatform.orchestration.assets import build_assets, external_retry_policy, freshness_policies
from mlplatform.orchestration.champion import build_champion_job
from mlplatform.orchestration.checks import build_checks
from mlplatform.orchestration.estimation import build_estimated_performance
from mlplatform.orchestration.instance import retrain_run_tags
from mlplatform.orchestration.monitoring import build_monitoring
from mlplatform.orchestration.names import DRIFT_REPORT, ESTIMATED_PERFORMANCE, LIVE_QUALITY, RETRAINING, TRAINED_MODEL, ModelNames
from mlplatform.orchestration.sensors import build_sensors
from mlplatform.orchestration.trigger import build_retraining_trigger
from mlplatform.root import DEFS_FILE, ModelDeclaration, declared_model_names, platform
from mlplatform.settings import Settings

SPEC_FILE = "dataset.yaml"


class ScaffoldParams(BaseModel):
    """`dg scaffold defs mlplatform.RetrainingLoop NAME --json-params '{"sample": "events.csv", "label": "churned"}'`."""

    sample: str | None = None
    label: str | None = None
    task: str | None = None


class RetrainingLoopScaffolder(dg.Scaffolder[ScaffoldParams]):
    """Writes defs.yaml and a dataset spec beside it: drafted from a sample file when given one, a template otherwise."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: ScaffoldRequest[ScaffoldParams]) -> None:
        folder = Path(request.target_path)
        params = request.params or ScaffoldParams()
        name = folder.name.replace("_", "-").lower()
        sample = Path(params.sample).resolve() if params.sample else None
        # Checked and drafted first: a half-made model folder, or one whose name no spec takes, stops every model loading.
        if not re.fullmatch(MODEL_NAME, name):
            _remove_if_empty(folder)
            raise SystemExit(f"dg scaffold: no model {name!r} made: the folder's name gives the model name {name!r}, which {MODEL_NAME_RULE}; "
                             f"name the folder e.g. {model_name_like(name)}")
        taken = declared_model_names().get(dagster_name(name))
        if taken is not None:
            _remove_if_empty(folder)
            raise SystemExit(f"dg scaffold: no model {name!r} made: {taken} declares a model of that name already (names that differ only in "
                             "'-' and '_' are one model to Dagster); name the folder otherwise")
        try:
            every_n: int | None = Settings().retrain_every_n
        except ValueError:  # a wrong MLPLATFORM_* variable is said where the models load (dg check defs), not as the sample's fault
            every_n = None
        try:
            spec = draft_spec(name, sample, params.label, params.task, every_n)
        except (ValueError, OSError) as exc:  # UnicodeDecodeError and pandas' parser errors are ValueErrors
            _remove_if_empty(folder)
            raise SystemExit(f"dg scaffold: no model {name!r} made: cannot draft its spec from {sample}: {exc}") from None
        # `loop` left empty, for this model's own settings: a value written here would hide its MLPLATFORM_* variable
        # (the scaffold wrote retrain_every_n: 5000, and MLPLATFORM_RETRAIN_EVERY_N was ignored: the new-user probe).
        dg.scaffold_component(request, {"spec": SPEC_FILE, "loop": {}})
        (folder / SPEC_FILE).write_text(spec, encoding="utf-8")
        if name != folder.name:
            print(f"model {name!r} (Dagster prefix {dagster_name(name)!r}): its landing folder is <landing root>/{name}")


def _remove_if_empty(folder: Path) -> None:
    """The folder dg made for a model that was not made."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


@scaffold_with(RetrainingLoopScaffolder)
class RetrainingLoop(ModelDeclaration, dg.Component, dg.Resolvable):
    """A LightGBM model kept fresh on a stream of labelled events: raw_events, features, trained_model,
    evaluation_report, drift_report, retraining_trigger, drift_dashboard, live_quality and estimated_performance assets, their checks, the retraining, drift and alert
    sensors, the retrain and set_champion jobs — all prefixed by the model's name."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The composition root read the same defs.yaml (it needs no Dagster import, for serving and the CLI): take its model."""
        model = platform().model_declared_in(Path(context.path) / DEFS_FILE)
        return model_definitions(ModelNames(model.name), model.settings)


def model_definitions(names: ModelNames, settings: Settings) -> dg.Definitions:
    """Every definition of one model, with the retry and freshness policies its own settings give."""
    retry, freshness = external_retry_policy(settings.retry_budget), freshness_policies(settings)
    assets = build_assets(names, retry, freshness[TRAINED_MODEL])
    drift_assets, drift_checks = build_monitoring(names, retry, freshness[DRIFT_REPORT])
    live_quality, live_quality_schedule = build_live_quality(names, retry, freshness[LIVE_QUALITY])
    retrain = dg.define_asset_job(
        names.retrain_job,
        selection=dg.AssetSelection.assets(*names.assets(*RETRAINING)),
        tags={**retrain_run_tags(names.model), "dagster/max_runtime": "3600"},
        description=f"features → trained_model → evaluation_report of {names.model}: the steps its retraining sensor runs (the sensor requests them as an asset selection, so its runs are listed under __ASSET_JOB; a drift report run that calls for retraining runs them too).",
    )
    return dg.Definitions(
        assets=[*assets, *drift_assets, build_retraining_trigger(names, retry), live_quality,
                build_estimated_performance(names, retry, freshness[ESTIMATED_PERFORMANCE])],
        asset_checks=[*build_checks(names), *drift_checks],
        jobs=[retrain, build_champion_job(names)],
        sensors=[*build_sensors(names, settings.landing_sensor), build_alerts_sensor(names)],
        schedules=[live_quality_schedule],
    )
