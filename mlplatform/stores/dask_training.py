"""One boosting run of a tuning trial on a Dask cluster (`lightgbm.dask`): the same parameters, early stopping
and booster as in-process training, the rows spread over the cluster's workers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dask.dataframe as dd
import lightgbm as lgb
import numpy as np
import pandas as pd
from distributed import Client
from lightgbm.dask import DaskLGBMRegressor

from mlplatform.domain.training import Fit, TrainingConfig

WAIT_POLL_SECONDS = 0.2


def dask_fit(cluster: Client, base: dict[str, Any], config: TrainingConfig, x_train: pd.DataFrame, y_train: np.ndarray,
             w_train: np.ndarray | None, x_valid: pd.DataFrame, y_valid: np.ndarray) -> Fit:
    """The training rows in one partition per worker; every partition carries a whole copy of the validation rows,
    so each worker scores the same (synchronised) model on the same rows and all stop at the same round: early
    stopping on partial validation sets would let workers disagree and leave one waiting for the others.

    The regressor wrapper is used for every task: it passes LightGBM's parameters through as `lgb.train` gets them,
    where the classifier wrapper would derive the objective and the class count from the labels present."""
    parts = max(1, len(cluster.scheduler_info()["workers"]))
    index = pd.RangeIndex(len(x_train))
    x = dd.from_pandas(x_train.set_axis(index), npartitions=parts)
    y = dd.from_pandas(pd.Series(y_train, index=index), npartitions=parts)
    w = None if w_train is None else dd.from_pandas(pd.Series(w_train, index=index), npartitions=parts)
    x_eval = dd.concat([dd.from_pandas(x_valid, npartitions=1)] * x.npartitions)
    y_eval = dd.concat([dd.from_pandas(pd.Series(y_valid), npartitions=1)] * x.npartitions)
    # Sent to the workers once, for every trial: otherwise each fit ships the whole window again inside its graph.
    x, y, x_eval, y_eval = (cluster.persist(part) for part in (x, y, x_eval, y_eval))
    w = None if w is None else cluster.persist(w)
    # The cluster sets each worker's threads; LightGBM warns about (and drops) a num_threads given here.
    params = {k: v for k, v in base.items() if k != "num_threads"}

    def fit(trial_params: dict[str, Any]) -> tuple[lgb.Booster, float]:
        model = DaskLGBMRegressor(client=cluster, n_estimators=config.num_boost_round, **{**params, **trial_params})

        def boost() -> None:
            with cluster.as_current():  # lightgbm.dask waits for its parts through the current client, not the one given
                model.fit(x, y, sample_weight=w, eval_X=(x_eval,), eval_y=(y_eval,), eval_names=["valid"],
                          callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])

        _waiting(boost, config.checkpoint)
        booster = model.booster_
        return booster, float(model.evals_result_["valid"][params["metric"]][booster.best_iteration - 1])

    return fit


def _waiting(call: Callable[[], None], checkpoint: Callable[[], None] | None) -> None:
    """`call`, with `checkpoint` called every WAIT_POLL_SECONDS while it runs: a Dask fit's rounds run on the workers, so
    its wait here is where a stop lands. The call goes on, on its own thread, after a stop; its cluster's client, closed
    as the step unwinds, ends it."""
    if checkpoint is None:
        call()
        return
    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            failed.append(exc)

    worker = threading.Thread(target=run, name="dask-fit", daemon=True)
    worker.start()
    while worker.is_alive():
        checkpoint()
        worker.join(WAIT_POLL_SECONDS)
    if failed:
        raise failed[0]
