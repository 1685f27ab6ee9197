"""Run-scoped hand-over between assets: a step reads what its own run's upstream step produced.

Each output is stored under the run that produced it. An input whose upstream step ran in the same run
(or in the parent of a re-execution) is read from that run, so two overlapping runs (a UI materialization
and a sensor-launched retraining) never cross inputs. Only when the upstream asset is not part of the run
(materializing `trained_model` alone) does the input come from the run of the upstream's current
materialization, which Dagster's instance names.
"""

import json
from pathlib import Path

import dagster as dg
from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

from mlplatform.orchestration.failures import final_failure
from mlplatform.orchestration.interrupts import raise_deferred
from mlplatform.orchestration.resources import PlatformResource


class RunScopedIOManager(dg.ConfigurableIOManager):
    """Small JSON values (a snapshot folder, a model version) kept per asset and per run in the state folder."""

    platform: dg.ResourceDependency[PlatformResource]

    def _path(self, key: dg.AssetKey, run_id: str) -> Path:
        return self.platform.platform().settings.work_dir.joinpath("handover", *key.path, f"{run_id}.json")

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        path = self._path(context.asset_key, context.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj), encoding="utf-8")

    def load_input(self, context: dg.InputContext) -> object:
        raise_deferred(context.step_context.run_id)  # a signal the step before held as it logged a version or recorded a decision
        self.platform.step_platform()  # a step retried after its stack began to stop does not start
        key = context.upstream_output.asset_key if context.upstream_output else context.asset_key
        run_id = self._producing_run(context, key)
        path = self._path(key, run_id)
        if not path.is_file():
            raise final_failure(context.instance, context.step_context.run_id, f"{key.to_user_string()}: run {run_id} left no output for this step; "
                                "materialize it again")
        return json.loads(path.read_text(encoding="utf-8"))

    @staticmethod
    def _producing_run(context: dg.InputContext, key: dg.AssetKey) -> str:
        upstream = context.upstream_output
        if upstream is not None:
            try:
                run_id = upstream.run_id
            except dg.DagsterInvariantViolationError:
                run_id = RUN_ID_PLACEHOLDER
            if run_id != RUN_ID_PLACEHOLDER:  # the placeholder: the upstream step is not part of this run
                return run_id
        event = context.instance.get_latest_materialization_event(key)
        if event is None:
            raise final_failure(context.instance, context.step_context.run_id, f"{key.to_user_string()} was never materialized: materialize it first")
        return event.run_id
