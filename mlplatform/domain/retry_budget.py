"""One time budget for an unreachable external store (MLflow), split between Dagster's step retries and the time
each attempt may wait on MLflow, so a run with MLflow down fails, and alerts, within the budget."""

import math
from dataclasses import dataclass

STEP_RETRIES = 3


@dataclass(frozen=True)
class RetryBudget:
    """`total_seconds` bounds the time from a step's first call to an unreachable MLflow until the run fails.

    Dagster does all the backing off: `step_retries` re-runs with exponential delays d, 3d, 7d (each ± d of jitter).
    MLflow's own retries are off, since they nest inside every Dagster attempt (~100 s of SQLAlchemy engine retries,
    ~4 min of HTTP retries by default); each attempt waits on MLflow for at most its share of what the delays leave.
    """

    total_seconds: float
    step_retries: int = STEP_RETRIES

    @property
    def step_delay_seconds(self) -> float:
        """Base delay d of Dagster's exponential backoff (1.5 s for a 60 s budget)."""
        return self.total_seconds / 40

    @property
    def worst_delays_seconds(self) -> float:
        """All of Dagster's waits between attempts with the jitter at its longest."""
        d = self.step_delay_seconds
        return sum((2**n - 1) * d + d for n in range(1, self.step_retries + 1))

    @property
    def attempt_seconds(self) -> float:
        """How long one attempt may wait on MLflow: what the delays leave, shared by every attempt."""
        return (self.total_seconds - self.worst_delays_seconds) / (self.step_retries + 1)

    @property
    def mlflow_request_timeout_seconds(self) -> int:
        """MLflow's per-request HTTP timeout: one attempt's share, in the whole seconds MLflow reads, at least 1."""
        return max(1, math.floor(self.attempt_seconds))
