"""trained_model on a Dask cluster (`dask_scheduler`): two worker processes on loopback, the same quality as the
in-process fit on the same window, the booster logged and served like a local one; a scheduler that does not
answer fails at once, naming the setting, with nothing registered."""

import threading
from collections.abc import Iterator

import pandas as pd
import pytest
from distributed import LocalCluster
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from mlplatform.ports import free_port
from mlplatform.domain.predictor import PROBABILITY
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.training import encode_labels, train
from mlplatform.domain.validation import LABEL, validate_frame
from mlplatform.pipeline.retraining import FeatureSnapshot, build_feature_snapshot, train_challenger, training_config
from mlplatform.settings import Settings, SettingsError
from mlplatform.stores.eventlog import EventLog
from mlplatform.stores.registry import Registry

WINDOW_ROWS = 4000


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """Two single-threaded worker processes: the smallest cluster where rows really are split between processes."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def snapshot(state: Settings, adult_rows: pd.DataFrame, adult_spec: DatasetSpec) -> FeatureSnapshot:
    """The features step's snapshot of the first Adult events: training part, hold-out, fitted transformer."""
    log = EventLog.for_dataset(state.events_dir, adult_spec)
    log.append(validate_frame(adult_rows.head(WINDOW_ROWS), adult_spec, generated_id_prefix="d", generated_time_start_us=0).events, "test")
    return build_feature_snapshot(state, adult_spec, log, state.work_dir / "dask")


def holdout_auc(probabilities: pd.Series, holdout: pd.DataFrame, spec: DatasetSpec) -> float:
    return float(roc_auc_score(encode_labels(holdout[LABEL], spec), probabilities))


def test_the_dask_fit_matches_the_local_fit_and_is_logged_like_it(state: Settings, scheduler: str, snapshot: FeatureSnapshot,
                                                                   adult_spec: DatasetSpec) -> None:
    on_dask = state.model_copy(update={"dask_scheduler": scheduler})
    registry = Registry(state.tracking_uri, state.artifact_root, adult_spec)
    challenger = train_challenger(on_dask, adult_spec, registry, snapshot, {})
    local = train(snapshot.train, adult_spec, training_config(state), transformer=snapshot.transformer)
    holdout = snapshot.holdout
    served = registry.load_predictor(challenger.version).predict(holdout)
    pd.testing.assert_frame_equal(served, challenger.result.predictor.predict(holdout))
    validated = challenger.fit.validation.predictor.predict(holdout)  # boosted on Dask; the served refit (in-process) learned the hold-out too
    dask_auc, local_auc = holdout_auc(validated[PROBABILITY], holdout, adult_spec), holdout_auc(local.predictor.predict(holdout)[PROBABILITY], holdout, adult_spec)
    assert abs(dask_auc - local_auc) <= 0.005, (dask_auc, local_auc)
    assert challenger.result.params.keys() == local.params.keys() and challenger.result.trials == local.trials
    assert 1 <= challenger.result.best_iteration < state.num_boost_round
    assert challenger.result.predictor.booster.feature_name() == local.predictor.booster.feature_name()


class Stop(BaseException):
    """What a checkpoint raises: an interrupt is no Exception."""


def test_a_stop_lands_while_a_dask_fit_is_waited_for(state: Settings, scheduler: str, snapshot: FeatureSnapshot, adult_spec: DatasetSpec) -> None:
    """The review: with signals held through training, a trial's fit on the cluster was one wait a Ctrl-C could not cut,
    and a trial longer than the command's 20 s grace ended it with no cleanup. The wait now calls the checkpoint."""
    def checkpoint() -> None:
        if any(thread.name == "dask-fit" and thread.is_alive() for thread in threading.enumerate()):
            raise Stop

    on_dask = state.model_copy(update={"dask_scheduler": scheduler})
    registry = Registry(state.tracking_uri, state.artifact_root, adult_spec)
    with pytest.raises(Stop):
        train_challenger(on_dask, adult_spec, registry, snapshot, {}, checkpoint)
    assert registry.versions() == []


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "not-a-scheduler"])
def test_a_scheduler_that_does_not_answer_fails_naming_the_setting(state: Settings, snapshot: FeatureSnapshot, adult_spec: DatasetSpec,
                                                                    address: str) -> None:
    registry = Registry(state.tracking_uri, state.artifact_root, adult_spec)
    wrong = state.model_copy(update={"dask_scheduler": address.format(port=free_port())})
    with pytest.raises(SettingsError, match="MLPLATFORM_DASK_SCHEDULER .*no Dask scheduler answers"):
        train_challenger(wrong, adult_spec, registry, snapshot, {})
    assert registry.versions() == []


def test_an_empty_scheduler_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLATFORM_DASK_SCHEDULER", "")
    with pytest.raises(ValidationError, match="dask_scheduler"):
        Settings()
