"""One served model: its champion watcher (hot reload), prediction log, live-quality gauges, shadow challenger, metrics and request handling.

A serving process holds one `ModelService` per model it was given. What a model is made of (settings, spec,
event log, registry) comes from the composition root as `ModelParts`; serving builds nothing from settings
itself, so the same code serves one model or every model of a code location.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool

from mlplatform.domain.history import HistoryState, label_known_at_one
from mlplatform.domain.predictor import spec_mismatch
from mlplatform.domain.spec import DatasetSpec
from mlplatform.domain.features import ARITHMETIC_LIMIT
from mlplatform.domain.validation import EVENT_ID, EVENT_TIME, not_a_class, not_a_label_number
from mlplatform.serving.champion import ChampionWatcher, ServedModel
from mlplatform.pipeline.live_quality import ServedVersion
from mlplatform.serving.live import LiveQualityGauges
from mlplatform.serving.metrics import ModelMetrics, ServingMetrics
from mlplatform.serving.predictionlog import PredictionLog, PredictionLogError
from mlplatform.serving.records import MADE_UP_FORM, MADE_UP_ID, MADE_UP_PREFIX_CHARS, MAX_FIELD_ERRORS, FieldError, check_category, check_number, event_id_of
from mlplatform.serving.shadow import ShadowScorer
from mlplatform.serving.specfile import SpecFile
from mlplatform.settings import Settings, SettingsError
from mlplatform.stores.eventlog import EventIdsTaken, EventStore, LabelResult, now_us
from mlplatform.stores.registry import Registry

log = logging.getLogger(__name__)


class ModelParts(Protocol):
    """What serving needs of one model, built by the composition root (the event log and registry stay the root's to close)."""

    @property
    def name(self) -> str: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def spec(self) -> DatasetSpec: ...
    @property
    def event_log(self) -> EventStore: ...
    @property
    def registry(self) -> Registry: ...


class ApiError(Exception):
    """A refused request: status, what is wrong (text or field-level list) and the error kind for metrics."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]], kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.kind, self.headers = status, detail, kind, headers


def invalid(loc: tuple[str | int, ...], msg: str, kind: str = "value_error") -> ApiError:
    return ApiError(422, [FieldError(loc, msg, kind).as_dict()], "validation")


def _records(body: Any, spec: DatasetSpec, max_rows: int) -> tuple[list[Any], tuple[str | int, ...], bool]:
    """(records, error-location prefix, is a batch) from one record or {"records": [...]}."""
    if not isinstance(body, dict):
        raise invalid(("body",), 'expected a JSON object: one record, or {"records": [record, ...]}', "type_error")
    if "records" not in body or "records" in spec.features:
        return [body], ("body",), False
    extra = [key for key in body if key != "records"]
    if extra:
        raise invalid(("body", extra[0][:64]), "extra field not permitted next to 'records'", "extra_forbidden")
    records = body["records"]
    if not isinstance(records, list):
        raise invalid(("body", "records"), "expected a list of records", "type_error")
    if not records:
        raise invalid(("body", "records"), "expected at least one record")
    if len(records) > max_rows:
        raise ApiError(413, f"batch of {len(records)} records exceeds the limit of {max_rows} records per request", "batch_too_large")
    return records, ("body", "records"), True


def feedback_label(value: Any, spec: DatasetSpec) -> str | float:
    """A late label by the ingestion rules: classification labels through label_map into the classes, else a finite number."""
    if not spec.is_classification:
        if value is None:
            raise invalid(("body", "label"), "label: missing (null); expected a number", "missing")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(("body", "label"), f"label: expected a number, got {type(value).__name__}", "type_error")
        number, _, _ = check_number(value)
        if number is None or abs(number) > ARITHMETIC_LIMIT:  # the rule of parse_label_numbers, for one value
            raise invalid(("body", "label"), f"label: {not_a_label_number(value)}")
        return number
    text, problem, kind = check_category(value)  # 3, 3.0 and "3" alike, as a label file's are
    if problem:
        raise invalid(("body", "label"), f"label: {problem}", kind)
    if text is None:
        raise invalid(("body", "label"), f"label: missing (null or blank); expected one of {spec.classes}", "missing")
    text = spec.label_map.get(text, text)
    if text not in (spec.classes or []):
        mapped = f" (or a label_map name: {list(spec.label_map)[:20]})" if spec.label_map else ""
        raise invalid(("body", "label"), f"label: {not_a_class(text, spec.classes)}{mapped}")
    return text


def _feedback_fields(body: Any, spec: DatasetSpec) -> tuple[str, str | float]:
    if not isinstance(body, dict):
        raise invalid(("body",), 'expected a JSON object {"event_id": ..., "label": ...}', "type_error")
    errors = [FieldError(("body", name), "field required", "missing") for name in ("event_id", "label") if name not in body]
    errors += [FieldError(("body", str(key)[:64]), "extra field not permitted", "extra_forbidden") for key in body if key not in ("event_id", "label")]
    if errors:
        raise ApiError(422, [e.as_dict() for e in errors], "validation")
    event_id, problem = event_id_of(body["event_id"])
    if event_id is None:
        raise invalid(("body", "event_id"), f"event_id: {problem}", "type_error")
    return event_id, feedback_label(body["label"], spec)


def _caller_ids(records: list[Any], loc: tuple[str | int, ...], key: str) -> tuple[list[Any], list[str | None] | None, list[FieldError]]:
    """The records without `key`, the event id each one's caller gave under it (None: the service makes one up), and the
    values that are not ids. No record carrying `key`: the records as they are and no ids, at the cost of one look-up
    per record."""
    if not any(type(record) is dict and key in record for record in records):
        return records, None, []
    batch = len(loc) > 1
    ids: list[str | None] = []
    errors: list[FieldError] = []
    stripped = []
    for i, record in enumerate(records):
        if type(record) is not dict or record.get(key) is None:
            ids.append(None)
            stripped.append({k: v for k, v in record.items() if k != key} if type(record) is dict else record)
            continue
        where = (*loc, i, key) if batch else (*loc, key)
        event_id, problem = event_id_of(record[key])
        if event_id is None:
            errors.append(FieldError(where, f"{key}: {problem}", "type_error"))
        elif MADE_UP_ID.fullmatch(event_id):
            errors.append(FieldError(where, f"{key}: {MADE_UP_FORM.format(event_id[:64])}", "value_error"))
        ids.append(event_id)
        stripped.append({k: v for k, v in record.items() if k != key})
    return stripped, ids, errors


REBUILD_RETRY_SECONDS = 30.0  # after a failed rebuild of the history state, before the next try
# A history state past twice the keys it held when built (and at least this many) is rebuilt, which keeps those of the
# horizon: requests of ever new keys grew it without bound between rebuilds (about 9 KB a key, the serving probe).
HISTORY_KEYS_FLOOR = 10_000
CORRECTION_FROM = "MLPLATFORM_SERVE_ONLINE_CORRECTION, or its defs.yaml's loop:"
ONLY_SOME = "unset MLPLATFORM_SERVE_ONLINE_CORRECTION and set `loop: {serve_online_correction: true}` in their defs.yaml"


def check_supported(settings: Settings, spec: DatasetSpec) -> None:
    """Refuse settings this model cannot be served with (SettingsError, which the CLI turns into exit 2), before any state is touched."""
    problem = spec.online_correction_problem
    if settings.serve_online_correction and problem is not None:
        raise SettingsError(
            f"serve_online_correction is on for dataset {spec.name!r} ({CORRECTION_FROM}), but {problem}; turn it on only for the "
            f"models that can have it ({ONLY_SOME}), or serve the others with --model"
        )


class ModelService:
    """One model's serving: the champion watcher, the prediction log, the live gauges and its requests."""

    def __init__(self, parts: ModelParts, metrics: ServingMetrics) -> None:
        self.name = parts.name
        self.settings = parts.settings
        self.spec = parts.spec
        self.spec_file = SpecFile(self.settings.dataset_spec, parts.spec)  # what /feedback takes as a label follows the file's edits
        self.events = parts.event_log
        self.registry = parts.registry
        check_supported(self.settings, self.spec)
        self.metrics: ModelMetrics = metrics.model(self.name)
        self.watcher: ChampionWatcher | None = None
        self.log: PredictionLog | None = None
        self.live: LiveQualityGauges | None = None
        self.shadow: ShadowScorer | None = None
        self._by_class: dict[str, Any] = {}
        self._id_prefix = uuid.uuid4().hex[:MADE_UP_PREFIX_CHARS]  # random per process and model: ids stay unique across restarts and replicas
        self._id_counter = itertools.count()
        self._id_key = self.spec.id_column or EVENT_ID  # where a request may give its own event id, as a landing file does
        self._ids_in_flight: set[str] = set()  # callers' ids of requests between their check and their commit
        self.history = HistoryState(self.spec) if self.spec.history is not None else None
        self._history_lock = threading.Lock()  # the event loop (requests) and the label catch-up thread share the state
        self._feedback_lock = threading.Lock()  # concurrent /feedback workers: apply and file one label at a time
        self._label_commit_from: int | None = None  # while a /feedback label commits: no label time can be before this
        self._last_request_us = -(2**63)  # the latest request time with_history stamped: request times never go back
        self._stop = threading.Event()
        self._catch_up = threading.Thread(target=self._follow_log, name="history-labels", daemon=True)
        # While the state is rebuilt: what requests and /feedback filed meanwhile, to file into the rebuilt one too.
        self._journal: list[tuple[Any, ...]] | None = None
        self._unlogged: dict[str, tuple[dict[str, Any], int]] = {}  # events in the state whose log write has not settled
        self._others_seen = 0  # events in the log this process did not file (`_others_filed`) when the state was last built
        self._rebuild_after = 0.0  # monotonic: no rebuild before (at most a tenth of the time goes to rebuilding)
        # A request failed after its event entered the state (its log write, the model): the state holds an event the
        # log does not, which later requests would read and training never does; the next round rebuilds it.
        self._history_stale = False
        self._keys_bound = HISTORY_KEYS_FLOOR  # more keys than this and the state is rebuilt (`_rebuilt`)

    def _rebuilt(self, state: HistoryState) -> HistoryState:
        """A state just built from the log: it keeps the keys of the horizon, and may grow to twice as many."""
        self._keys_bound = max(HISTORY_KEYS_FLOOR, 2 * state.keys_kept)
        self.metrics.history_keys.set(state.keys_kept)
        return state

    def start(self) -> None:
        s = self.settings
        if self.history is not None:  # rebuilt from the log before the first request
            self._others_seen = self.events.counts().total  # this process has filed nothing yet
            self.history = self._rebuilt(self._history_from_log()[0])
            self.metrics.history_watermark.set(self.history.label_watermark)
        self.log = PredictionLog(self.events, self.metrics, s.serve_log_interval_ms / 1000, s.serve_log_max_rows, s.serve_log_on_loop)
        self.log.probe()  # not ready from the start if the event log cannot be written
        self.log.start()
        if self.history is not None:
            self._catch_up.start()  # after the log: a rebuild tells this process's events from others' by what it took
        self.watcher = ChampionWatcher(self.registry, self.spec, s.serve_reload_seconds, self.metrics, s, self.events, self._follow_spec)
        self.watcher.check()
        self.watcher.start()
        watcher = self.watcher
        self.live = LiveQualityGauges(s, self.spec, self.events, self.metrics, lambda: ServedVersion(m.version, m.predictor.positive_class) if (m := watcher.current) else None,
                                      self.registry.holdout_reference)
        self.live.start()
        if s.serve_shadow_challenger:
            self.shadow = ShadowScorer(self.registry, self.spec, s, self.events, self.metrics)
            self.shadow.start()

    def _follow_spec(self) -> None:
        """The spec file's edits of what a label may be (classes, label_map), for /feedback, for the champion's next load
        and for the live gauges: a champion retrained on a class the spec just gained fits the edited spec, not the one
        serving started with, and the gauges score the classes it has."""
        self.spec_file.refresh()
        if self.watcher is not None:
            self.watcher.spec = self.spec_file.spec
        if self.live is not None:
            self.live.spec = self.spec_file.spec

    def stop(self) -> None:
        """Stop the threads and commit what is queued; the event log is the root's to close."""
        self._stop.set()
        if self.shadow:
            self.shadow.stop()
        if self._catch_up.is_alive():
            self._catch_up.join()
        if self.live:
            self.live.stop()
        if self.watcher:
            self.watcher.stop()
        if self.log:
            self.log.close()

    def model(self) -> ServedModel:
        model = self.watcher.current if self.watcher else None
        if model is None:
            raise ApiError(503, f"model {self.name!r}: no champion model is loaded yet", "not_ready")
        return model

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body of /models/{name}/readyz): a champion is loaded and its predictions can be logged. After a failed
        commit the log is probed with a real write, so readiness comes back as soon as the event log can be written again."""
        model = self.watcher.current if self.watcher else None
        if model is None:
            why = self.watcher.last_error if self.watcher else None
            return False, {"ready": False, "detail": self._open("no champion model is loaded yet", why)}
        assert self.log is not None
        failure = self.log.failure and await run_in_threadpool(self.log.probe)
        if failure:
            return False, {"ready": False, "model_version": model.version, "detail": self._open("the prediction log cannot write to the event log", failure)}
        corrector = model.corrector
        correction = {"enabled": corrector is not None, "updates": corrector.updates if corrector else 0}
        misfit = spec_mismatch(model.predictor, self.spec_file.spec)  # a class renamed in the spec while this model predicts it
        note = self.spec_file.note or (misfit and f"the served model v{model.version} does not fit the edited dataset spec ({misfit}): "
                                                  "the next retraining replaces it")
        return True, {"ready": True, "model_version": model.version, "online_correction": correction, **({"spec_note": note} if note else {})}

    def _open(self, what: str, why: str | None) -> str:
        """A readiness detail: `what`, and `why` unless the token is set. Then the probes are the endpoints open to anyone,
        and `why` names the stores' addresses (the production probe: a 503 gave the event log's host, port and schema);
        it stays in the server's log and in the 503 of the endpoints the token guards."""
        if why is None:
            return what
        if self.settings.serve_token is not None:
            return f"{what} (why: in the server's log, and in a 503 of /predict)"
        return why if why.startswith(what) else f"{what}: {why}"

    def count_predictions(self, predictions: list[Any]) -> None:
        """Predictions by class (the labelled child is cached: looking it up costs more than the increment), or their values."""
        if not self.spec.is_classification:
            for value in predictions:
                self.metrics.prediction_values.observe(float(value))
            return
        for cls, n in Counter(predictions).items() if len(predictions) > 1 else ((cls, 1) for cls in predictions):  # one row: no Counter
            child = self._by_class.get(cls)
            if child is None:
                child = self._by_class[cls] = self.metrics.predictions.labels(prediction=str(cls))
            child.inc(n)

    async def predict(self, body: Any) -> Any:
        """Validate, predict with one version, commit the events, then answer."""
        model = self.model()
        records, loc, batch = _records(body, self.spec, self.settings.serve_max_batch_rows)
        records, given, id_errors = _caller_ids(records, loc, self._id_key)
        clean, errors = model.codec.check(records, loc)
        if errors or id_errors:
            raise ApiError(422, [e.as_dict() for e in (id_errors + errors)[:MAX_FIELD_ERRORS]], "validation")
        if given is None:
            return await self._predict(model, clean, batch, None)
        claimed = [event_id for event_id in given if event_id is not None]
        await self._claim(claimed)
        try:
            return await self._predict(model, clean, batch, given)
        finally:
            self._ids_in_flight.difference_update(claimed)

    async def _claim(self, event_ids: list[str]) -> None:
        """Hold the callers' ids for this request: an id names one event, so one given twice in the request, already in
        the log, or held by a request still committing, is a 409 and nothing of the request is logged. Claimed on the
        event loop before the first await, so two requests of this process never both pass; of two serving processes'
        requests racing for an id, the one committing second finds it taken at its commit: a 409 too."""
        if not event_ids:
            return
        twice = [event_id for event_id, n in Counter(event_ids).items() if n > 1]
        if twice:
            raise ApiError(409, f"event_id {twice[0][:64]!r} is given to more than one record of this request; an id names one event",
                           "event_conflict")
        held = [event_id for event_id in event_ids if event_id in self._ids_in_flight]
        if held:
            raise self._conflict(held)
        self._ids_in_flight.update(event_ids)
        held = False
        try:
            try:
                known = self.events.existing_now(event_ids)  # the embedded log answers on the loop, in microseconds
                if known is None:
                    known = await run_in_threadpool(self.events.existing, event_ids)
            except Exception as exc:  # the log cannot be read: as when it cannot be written, nothing is acknowledged
                assert self.log is not None
                self.log.failure = f"the event log cannot be read: {type(exc).__name__}: {exc}"  # readiness probes it again, as after a failed commit
                raise ApiError(503, f"cannot look the given event ids up in the event log: {type(exc).__name__}: {exc}", "prediction_log") from None
            if known:
                raise self._conflict(known)
            held = True
        finally:
            if not held:  # refused or interrupted: the ids are free again
                self._ids_in_flight.difference_update(event_ids)

    def _conflict(self, event_ids: list[str]) -> ApiError:
        more = f" (and {len(event_ids) - 1} more)" if len(event_ids) > 1 else ""
        return ApiError(409, f"event_id {event_ids[0][:64]!r} is already the id of an event of model {self.name!r}{more}; "
                             "an event is never overwritten", "event_conflict")

    async def _predict(self, model: ServedModel, clean: list[dict[str, Any]], batch: bool, given: list[str | None] | None) -> Any:
        """The answer to validated records; `given`: the callers' event ids, already claimed (None: every id made up)."""
        event_ids = [given[i] if given is not None and given[i] is not None else f"{self._id_prefix}-{next(self._id_counter)}" for i in range(len(clean))]
        answered = False
        try:
            inputs, at = (clean, now_us()) if self.history is None else self.with_history(clean, event_ids)
            answers, labels, unseen = await self._logged_answers(model, clean, inputs, at, event_ids)
            answered = True
        finally:  # answered and logged, or failed anywhere on the way: no longer an event whose log write is to come
            if self.history is not None:
                with self._history_lock:
                    for event_id in event_ids:
                        self._unlogged.pop(event_id, None)
                    if not answered:
                        self._forget_events(set(event_ids))
        if self.shadow is not None:  # after the commit: the challenger scores only events that exist, off the response path
            self.shadow.offer([answer["event_id"] for answer in answers], inputs, labels)
        self.metrics.batch_rows.observe(len(clean))
        self.count_predictions(labels)
        for feature, n in unseen.items():
            self.metrics.unseen.labels(feature=feature).inc(n)
        return {"predictions": answers} if batch else answers[0]

    async def _logged_answers(self, model: ServedModel, clean: list[dict[str, Any]], inputs: list[dict[str, Any]], at: int,
                              event_ids: list[str]) -> tuple[list[dict[str, Any]], list[Any], dict[str, int]]:
        """The answers, their predictions and the unseen categories, once the events are committed to the log."""
        (predictions, probabilities, matrix), unseen = model.predict(inputs)
        version = model.version
        served_version = str(version)
        labels = predictions.tolist()
        classes = model.predictor.classes or []
        gained = dict.fromkeys([c for c in self.spec_file.spec.classes or [] if c not in classes], 0.0)  # the spec's (as edited) the version never learnt
        answers, rows = [], []
        for i, (row, event_id) in enumerate(zip(clean, event_ids)):
            answer: dict[str, Any] = {"event_id": event_id, "model_version": version, "prediction": labels[i]}
            probability = None if probabilities is None else float(probabilities[i])
            if probability is not None:
                answer["probability"] = probability
            if matrix is not None:
                answer["probabilities"] = {**dict(zip(classes, matrix[i].tolist())), **gained}
            answers.append(answer)
            rows.append((event_id, at, served_version, labels[i], probability, *row.values()))
        assert self.log is not None
        try:
            await self.log.write(rows)
        except PredictionLogError as exc:
            raise ApiError(503, str(exc), "prediction_log") from None
        except EventIdsTaken as exc:  # another serving process logged one of the callers' ids first
            raise self._conflict(exc.event_ids) from None
        return answers, labels, unseen

    def _forget_events(self, event_ids: set[str]) -> None:
        """Events that entered the state but not the log: the next round rebuilds the state without them, and a rebuild
        under way does not file them from its journal. Called under the history lock."""
        self._history_stale = True
        if self._journal is not None:
            self._journal = [entry for entry in self._journal if entry[0] != "event" or entry[1] not in event_ids]

    def _history_from_log(self) -> tuple[HistoryState, set[str]]:
        """A history state built from the log as it is now, and the ids of the events it replayed.

        Up to now: an event landed with a time ahead (clock skew, within landing's bound) is a later event to every
        request until its time comes, as in training's timeline, and enters the state at a rebuild after it."""
        assert self.spec.history is not None
        watermark = self.events.counts().label_watermark
        history, state = self.spec.history, HistoryState(self.spec)
        replayed = self.events.history_warmup(now_us() + 1, history.warmup_events, history.longest_window_us)
        state.replay(replayed, watermark)
        return state, set(replayed[EVENT_ID].tolist())

    def _others_filed(self) -> int:
        """Events in the log that this process did not file: landed from files, or served by another serving process."""
        assert self.log is not None
        return self.log.others_in(lambda: self.events.counts().total)

    def _rebuild_history(self) -> None:
        """Events filed by others since the state was built (landed from files, served by the other processes of `serve
        --workers N`) are in training's past, so requests see them too: the state is built again from the log, as at start,
        and swapped in with what requests and /feedback filed meanwhile (before, they entered it at the next start only).
        Rebuilding holds the interpreter, so it takes at most a tenth of the time: a landing folder taking files all the
        time, or another process answering all the time, does not take the CPU requests need. A state grown past twice
        the keys it was built with (requests of ever new keys) is rebuilt too: that keeps the keys of the horizon only,
        as a restart does."""
        others = self._others_filed()
        assert self.history is not None
        kept = self.history.keys_kept
        self.metrics.history_keys.set(kept)
        if (others <= self._others_seen and not self._history_stale and kept <= self._keys_bound) or time.monotonic() < self._rebuild_after:
            return
        began, rebuilt = time.monotonic(), False
        with self._history_lock:  # from the events answered whose log write has not settled on: the read may miss them
            self._journal = [("event", event_id, row, at) for event_id, (row, at) in self._unlogged.items()]
        try:
            fresh, replayed = self._history_from_log()
            fresh.catch_up(self.events.labels_since(fresh.label_watermark))
            with self._history_lock:
                for kind, *entry in self._journal:
                    if kind == "label":
                        fresh.observe_label(*entry)  # with its label_seq: filed once, whether the rebuild read it or not
                    elif entry[0] not in replayed:  # an event answered but not logged when the log was read
                        fresh.observe_event(*entry[1:])
                self.history, self._history_stale = self._rebuilt(fresh), False  # what failed meanwhile left the journal (`_forget_events`)
            rebuilt = True
        finally:
            with self._history_lock:
                self._journal = None
            took = time.monotonic() - began  # a failing rebuild waits too: it would read and replay the log every round
            self._rebuild_after = time.monotonic() + max(9 * took, 0.0 if rebuilt else REBUILD_RETRY_SECONDS)
        self._others_seen = others
        self.metrics.history_watermark.set(fresh.label_watermark)
        self.metrics.history_rebuilds.inc()

    def with_history(self, rows: list[dict[str, Any]], event_ids: Sequence[str]) -> tuple[list[dict[str, Any]], int]:
        """Each row with its history columns, then remembered: a later row of the same batch sees the earlier ones, as in
        training; and the requests' time. `event_ids`: the rows' ids, by which a rebuild of the state meanwhile tells the
        rows it read from the log from those it did not.

        Runs on the event loop between two awaits, so no other request changes the state meanwhile. The time is read under
        the lock. A /feedback label being committed meanwhile is not in the state yet, and its label time will be at or
        after the moment its commit began: the request is timed just before that moment, so training, which lets a row
        see the labels known by its time, does not show it that label either. Request times never go back.
        """
        assert self.history is not None
        out = []
        with self._history_lock:
            at = now_us() if self._label_commit_from is None else min(now_us(), self._label_commit_from - 1)
            at = self._last_request_us = max(at, self._last_request_us)
            for row, event_id in zip(rows, event_ids, strict=True):
                out.append({**row, **self.history.features(row, at)})
                self.history.observe_event(row, at)
                self._unlogged[event_id] = (row, at)
                if self._journal is not None:
                    self._journal.append(("event", event_id, row, at))
        return out, at

    def _commit_label(self, event_id: str, label: str | float) -> LabelResult:
        """Apply a /feedback label in the log and file it into the history state; meanwhile requests are timed before it."""
        assert self.history is not None
        with self._history_lock:
            self._label_commit_from = max(now_us(), self._last_request_us + 1)  # after every request timed so far
        found = None
        try:
            result = self.events.add_labels([event_id], [label])
            # Read back with its label_seq and times; gone since (retention): training will not see that label either.
            found = self.events.record(event_id) if result.applied else None
        finally:
            with self._history_lock:
                if found is not None:
                    event, row = found
                    known = label_known_at_one(event["source"], event[EVENT_TIME], event["ingested_at"], event["label_time"])
                    self.history.observe_label(row, label, known, event["label_seq"])
                    if self._journal is not None:
                        self._journal.append(("label", row, label, known, event["label_seq"]))
                self._label_commit_from = None
        return result

    def _follow_log(self) -> None:
        """Labels and events that land outside this process (landing files, /feedback and /predict answered by other
        serving processes) reach the history state within `serve_history_catch_up_seconds` (events: at most a tenth of the
        time rebuilding, see `_rebuild_history`)."""
        assert self.history is not None
        while not self._stop.wait(self.settings.serve_history_catch_up_seconds):
            try:
                self._rebuild_history()
            except Exception:  # the next round retries; serving goes on with the state it has
                self.metrics.errors.labels(kind="history_rebuild").inc()
                log.exception("cannot rebuild the history state from the event log after other writers filed events")
            try:
                if not self.events.labelled_since(self.history.label_watermark):
                    continue  # nothing landed: a look-up of the counters, not a query and a frame holding the GIL every round
                landed = self.events.labels_since(self.history.label_watermark)
                with self._history_lock:
                    self.history.catch_up(landed)
                self.metrics.history_watermark.set(self.history.label_watermark)
            except Exception:  # the next round retries; serving goes on with the state it has
                self.metrics.errors.labels(kind="history_labels").inc()
                log.exception("cannot read the labels landed since label_seq %s", self.history.label_watermark)

    async def feedback(self, body: Any) -> dict[str, Any]:
        event_id, label = _feedback_fields(body, self.spec_file.spec)
        try:
            result = await run_in_threadpool(self._apply_label, event_id, label)
        except Exception as exc:  # the log cannot be read or written: as for /predict, nothing is acknowledged (it was a 500)
            assert self.log is not None
            self.log.failure = f"the event log cannot record a label: {type(exc).__name__}: {exc}"  # readiness probes it again
            raise ApiError(503, f"the label could not be recorded in the event log: {type(exc).__name__}: {exc}", "prediction_log") from None
        if result.unknown:
            self.metrics.feedback.labels(outcome="unknown").inc()
            raise ApiError(404, f"unknown event_id {event_id[:64]!r}: no prediction or event of model {self.name!r} has that id", "unknown_event")
        if result.conflicts:
            self.metrics.feedback.labels(outcome="conflict").inc()
            raise ApiError(409, f"event {event_id[:64]!r} already has a different label; labels are never overwritten", "label_conflict")
        status = "applied" if result.applied else "unchanged"
        self.metrics.feedback.labels(outcome=status).inc()
        return {"event_id": event_id, "label": label, "status": status}

    def _apply_label(self, event_id: str, label: str | float) -> LabelResult:
        """Record the label and, once applied, file it into the history state or teach the online correction, in one
        worker-thread hop: each hop waits for the loop and a worker to be scheduled, most of a /feedback on a busy host."""
        if self.history is None:
            result = self.events.add_labels([event_id], [label])
        else:
            with self._feedback_lock:  # labels filed in the order the log took them (label-based history reads that order)
                result = self._commit_label(event_id, label)
        if result.applied and self.settings.serve_online_correction:
            self.learn(event_id)
        return result

    def learn(self, event_id: str) -> None:
        """The online correction learns from a label just applied; the label is recorded whatever happens here."""
        assert self.watcher is not None
        try:
            self.watcher.learn(event_id)
        except Exception:
            self.metrics.errors.labels(kind="online_correction").inc()
            log.exception("online correction could not learn from the label of event %s", event_id[:64])

    async def reload(self) -> tuple[int, dict[str, Any]]:
        """(status, body) of a forced check of the champion alias."""
        assert self.watcher is not None
        outcome = await run_in_threadpool(self.watcher.check, True)
        return (503 if outcome.error else 200), {"model_version": outcome.version, "changed": outcome.changed, "error": outcome.error}
