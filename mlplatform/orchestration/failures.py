"""Failures that running again cannot mend: a version that does not exist, a window with too few labels, an input never
materialized. The step is not retried, and its run is tagged so that the daemon's run retry leaves it failed (each was
run twice, and a second failure alert sent); transient failures (MLflow, the event log) keep both retries."""

import dagster as dg

from mlplatform.domain.keys import RETRY_ON_FAILURE_TAG


def leave_failed(instance: dg.DagsterInstance, run_id: str) -> None:
    """Tag the run so that the daemon's run retry leaves it failed."""
    instance.add_run_tags(run_id, {RETRY_ON_FAILURE_TAG: "false"})


def final_failure(instance: dg.DagsterInstance, run_id: str, description: str) -> dg.Failure:
    """The Failure to raise, once its run is tagged not to be retried."""
    leave_failed(instance, run_id)
    return dg.Failure(description=description, allow_retries=False)
