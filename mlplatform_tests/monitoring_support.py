"""A trained champion in a real state folder, shared by a test module: training once keeps the drift and sensor tests fast."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.definitions.sensor_definition import SensorExecutionData
import pandas as pd
import pytest

from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, LABEL, validate_frame
from mlplatform.orchestration.instance import prepare_dagster_home
from mlplatform.orchestration.names import ModelNames
from mlplatform.orchestration.resources import PlatformResource
from mlplatform.pipeline.landing import ingest_pending
from mlplatform.pipeline.replay import GENERATED_INTERVAL_S, STREAM_START, canonical_labels, write_batches
from mlplatform.root import ModelContext, platform
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import SERVING_SOURCE
from mlplatform_tests.conftest import FAST_TRAINING
from mlplatform_tests.support import loop

CHAMPION_ROWS = 3000
QUICK_TRAINING = {"MLPLATFORM_TUNING_TRIALS": "1", "MLPLATFORM_NUM_BOOST_ROUND": "100"}


def shuffled_stream(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A stationary stream: Adult rows in random order, re-stamped with fresh ids and increasing event times."""
    out = rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    out[EVENT_ID] = [f"shuffled-{seed}-{i}" for i in range(len(out))]
    times = pd.Timestamp(STREAM_START) + pd.to_timedelta(out.index.to_numpy() * GENERATED_INTERVAL_S, unit="s")
    out[EVENT_TIME] = [t.isoformat() for t in times]
    return out


@dataclass
class Platform:
    model: ModelContext
    instance: dg.DagsterInstance
    rows: pd.DataFrame  # the stream: rows[:CHAMPION_ROWS] trained the champion, later rows are replayed by tests
    replayed: int = CHAMPION_ROWS

    @property
    def settings(self) -> Settings:
        return self.model.settings

    @property
    def spec(self) -> DatasetSpec:
        return self.model.spec

    @property
    def names(self) -> ModelNames:
        return ModelNames(self.model.name)

    def replay(self, rows: pd.DataFrame, with_labels: bool = True) -> None:
        """Land rows and ingest them with a real raw_events materialization."""
        write_batches(rows, self.spec, self.settings.landing_dir, 5000, with_labels=with_labels, prefix="labelled" if with_labels else "unlabelled")
        self.materialize("raw_events")

    def ingest(self, rows: pd.DataFrame) -> None:
        """Land rows and ingest them with the core call raw_events makes, without a Dagster run (for loops)."""
        write_batches(rows, self.spec, self.settings.landing_dir, 5000, prefix="ingested")
        ingest_pending(self.settings.landing_dir, self.spec, self.model.event_log)

    def serve(self, n: int, version: int = 1, flip_labels: bool = False) -> None:
        """What the prediction service logs for `n` requests (the stream's next rows, predicted by `version`), then the labels
        coming back by event id; `flip_labels`: the other class comes back for every event (a concept change)."""
        spec, model = self.spec, self.model
        rows = self.next_rows(n)
        events = validate_frame(rows.drop(columns=[spec.label]), spec, generated_id_prefix="served", generated_time_start_us=0).events
        events[LABEL] = None
        predicted = model.registry.load_predictor(version).predict(events)
        model.event_log.append(events.assign(model_version=str(version), prediction=predicted["prediction"], probability=predicted["probability"]),
                               SERVING_SOURCE)
        labels = canonical_labels(rows, spec)
        if flip_labels:
            classes = spec.classes or []
            labels = labels.map(dict(zip(classes, reversed(classes))))
        assert not model.event_log.add_labels(events[EVENT_ID].tolist(), labels.tolist()).conflicts

    def next_rows(self, n: int) -> pd.DataFrame:
        """The next `n` rows of the stream, marked as replayed."""
        self.replayed += n
        return self.rows.iloc[self.replayed - n : self.replayed]

    def materialize(self, *assets: str) -> dg.ExecuteInProcessResult:
        return loop.materialize(self.instance, assets, self.model.name, raise_on_error=True)

    def tick(self, sensor_name: str, cursor: str | None, resource: PlatformResource | None = None) -> SensorExecutionData:
        """One real evaluation of a sensor of the code location against this instance."""
        return loop.tick(self.instance, sensor_name, cursor, resource)


@contextmanager
def trained_platform(folder: Path, spec: DatasetSpec, rows: pd.DataFrame, **env: str) -> Iterator[Platform]:
    """State folder + Dagster instance + a champion trained on the first CHAMPION_ROWS rows."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLPLATFORM_STATE_DIR", str(folder))
        patch.setenv("DAGSTER_HOME", str(folder / "dagster"))
        for key, value in {**FAST_TRAINING, **QUICK_TRAINING, **env}.items():
            patch.setenv(key, value)
        settings = Settings()
        prepare_dagster_home(settings)
        with dg.DagsterInstance.get() as instance:
            trained = Platform(platform(settings).model(spec.name), instance, rows.reset_index(drop=True))
            trained.replay(trained.rows.iloc[:CHAMPION_ROWS])
            trained.materialize("features", "trained_model", "evaluation_report")
            yield trained
