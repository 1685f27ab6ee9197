"""`<model>_set_champion`: a rollback or pin from the Dagster UI (the same change as `mlplatform champion set`)."""

import dagster as dg
from pydantic import Field

from mlplatform.domain.keys import MODEL_TAG
from mlplatform.orchestration.assets import champion_timeline
from mlplatform.orchestration.failures import final_failure
from mlplatform.orchestration.names import ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.pipeline.champion import ChampionError, ChampionRequest, NothingToChange, change_champion, own_verdict


class ChampionConfig(dg.Config):
    """Launchpad config: which version serves from now on, and why."""

    reason: str = Field(description="Why: recorded in the champion timeline with who and when.")
    version: int | None = Field(default=None, description="The version to serve; leave empty to only unpin.")
    pin: bool = Field(default=True, description="Keep this version until unpinned: the retraining sensor then launches nothing.")


def build_champion_job(names: ModelNames) -> dg.JobDefinition:
    model_name = names.model

    @dg.op(name=f"{names.prefix}_change_champion", description=f"Moves {model_name}'s @champion alias (or unpins it) and records the move.")
    def change(context: dg.OpExecutionContext, config: ChampionConfig, platform: PlatformResource) -> None:
        model = platform.for_step(model_name)
        try:
            entry = change_champion(model.registry, model.spec, ChampionRequest(config.reason, config.version, config.pin and config.version is not None),
                                    by=f"dagster run {context.run.run_id}")
        except NothingToChange as exc:
            context.log.info(str(exc))
            return
        except ChampionError as exc:
            raise final_failure(context.instance, context.run.run_id, str(exc)) from exc
        context.log.info(f"champion v{entry.version}{' (pinned)' if entry.pinned else ''}: {entry.reason}")
        if (verdict := own_verdict(model.registry, entry.version)) is not None:
            context.log.warning(verdict)
        context.log.info(f"champion timeline:\n{champion_timeline(model.registry)}")

    @dg.job(name=names.champion_job, tags={MODEL_TAG: model_name},
            description=f"Rollback or pin {model_name}'s champion: launch with a version, a reason and pin on or off.")
    def set_champion() -> None:
        change()

    return set_champion
