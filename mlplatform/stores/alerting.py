"""Alerts to Prometheus Alertmanager (HTTP API v2): fire, resolve, and a durable outbox.

The pipeline must never wait on Alertmanager nor fail because of it. So every alert is first written
to a small SQLite table in the state folder as its desired state (firing, or resolved at a time); a
delivery then POSTs whatever is pending with a short timeout and a few retries (exponential backoff
with jitter), and anything not delivered stays pending for the next delivery: the alert sensor
delivers on every tick, so a down Alertmanager gets its alerts once it is back. Errors are logged,
never raised.

Alertmanager identifies an alert by its labels and resolves it when `endsAt` passes. Firing alerts are
sent with `endsAt` one TTL ahead and re-sent before then while the condition holds; resolving sends
the same labels with `endsAt` = now.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path

from mlplatform.settings import Settings
from mlplatform.domain.spec import DatasetSpec

log = logging.getLogger(__name__)

ALERTS_FILE = "alerts.sqlite"
RETRY_LATER = (408, 429)  # HTTP statuses of a request to send again, as a 5xx is
ATTEMPTS = 3
BACKOFF_SECONDS = 0.25
NO_VERSION = "none"
PROCESS_LABEL = "process"  # which serving process a reload alert is about: host:pid
FAILURE_LABEL = "failure"  # what a reload alert says failed: RELOAD_LOAD (a version would not load) or RELOAD_ALIAS
RELOAD_LOAD, RELOAD_ALIAS = "load", "champion_alias"  # the champion alias could not be read: it serves what it had


class AlertName(StrEnum):
    """The `alertname` label of every alert the platform sends."""

    DRIFT = "MLPlatformDriftDetected"
    LIVE_QUALITY = "MLPlatformLiveQualityBelowFloor"
    PROMOTION_REFUSED = "MLPlatformPromotionRefused"
    RUN_FAILED = "MLPlatformRunFailed"
    SERVING_RELOAD_FAILED = "MLPlatformServingReloadFailed"


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Alert:
    """One alert: its identity (labels) and what a person needs to act on it (annotations)."""

    name: AlertName
    severity: Severity
    dataset: str
    model_version: int | str | None
    summary: str
    description: str
    links: Mapping[str, str] = field(default_factory=dict)  # annotation name -> URL or path
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    generator_url: str = ""

    def labels(self) -> dict[str, str]:
        version = NO_VERSION if self.model_version in (None, "", 0, "0") else str(self.model_version)
        return {"alertname": str(self.name), "severity": str(self.severity), "dataset": self.dataset, "model_version": version, **self.extra_labels}

    def annotations(self) -> dict[str, str]:
        return {"summary": self.summary, "description": self.description, **{k: v for k, v in self.links.items() if v}}


@dataclass(frozen=True)
class Delivery:
    """What one delivery did: alerts sent, alerts still pending, and the last error if any."""

    sent: int
    pending: int
    error: str | None = None
    recorded: bool = True  # False: the outbox could not be written, so the alert (or its end) is not kept for delivery either


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _posted(labels: Mapping[str, str], annotations: Mapping[str, str], generator_url: str, starts_at: float, ends_at: float) -> dict[str, object]:
    """One alert as Alertmanager's v2 API takes it."""
    return {"labels": labels, "annotations": annotations, "startsAt": _iso(starts_at), "endsAt": _iso(ends_at),
            **({"generatorURL": generator_url} if generator_url else {})}


def _fingerprint(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


class Alerter:
    """Sends alerts to one Alertmanager; a no-op when no URL is configured."""

    def __init__(self, url: str | None, store: Path, ttl_seconds: float = 3600.0, timeout_seconds: float = 2.0,
                 attempts: int = ATTEMPTS, backoff_seconds: float = BACKOFF_SECONDS, keep_firing_seconds: float = 0.0) -> None:
        self.url = url.rstrip("/") if url else None
        self.store = Path(store)
        self.ttl = ttl_seconds
        self.timeout = timeout_seconds
        self.attempts = attempts
        self.backoff = backoff_seconds
        self.keep_firing = keep_firing_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> "Alerter":
        return cls(settings.alertmanager_url, settings.state_dir / ALERTS_FILE, settings.alert_ttl_seconds, settings.alert_timeout_seconds,
                   keep_firing_seconds=settings.alert_keep_firing_seconds)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A short transaction on the outbox; the serving process and Dagster runs may both write."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.store, timeout=10, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS alerts (
                    fingerprint TEXT PRIMARY KEY, labels TEXT NOT NULL, annotations TEXT NOT NULL,
                    generator_url TEXT NOT NULL, starts_at REAL NOT NULL, ends_at REAL,
                    sent_ends_at REAL, revision INTEGER NOT NULL, pending INTEGER NOT NULL)"""
            )
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def fire(self, alert: Alert, deliver: bool = True) -> Delivery:
        """Record the alert as firing (keeping its start if it already fires), then deliver (unless `deliver` is False:
        the caller delivers once for many, as the alerts sensor does). An alert the outbox cannot record is sent once as it
        is, unless `deliver` is False: a caller that will not fire it again (Dagster hands a failed run to the run-failure
        sensor once) lost it before (the review). Unrecorded, nothing refreshes or resolves it: it ends after the TTL."""
        if not self.enabled:
            return Delivery(0, 0, "alerting is off (no alertmanager_url)")
        labels = alert.labels()
        now = time.time()
        try:
            with self._db() as db:
                db.execute(
                    """INSERT INTO alerts VALUES (?, ?, ?, ?, ?, NULL, NULL, 1, 1)
                       ON CONFLICT(fingerprint) DO UPDATE SET
                         annotations = excluded.annotations, generator_url = excluded.generator_url,
                         starts_at = CASE WHEN alerts.ends_at IS NULL THEN alerts.starts_at ELSE excluded.starts_at END,
                         ends_at = NULL, revision = alerts.revision + 1, pending = 1""",
                    (_fingerprint(labels), json.dumps(labels), json.dumps(alert.annotations()), alert.generator_url, now),
                )
        except (sqlite3.Error, OSError) as exc:  # OSError: the state folder itself cannot be made
            log.error("alert %s not recorded: %s", labels, exc)
            if not deliver:
                return Delivery(0, 0, str(exc), recorded=False)
            error = self._post([_posted(labels, alert.annotations(), alert.generator_url, now, now + self.ttl)])
            return Delivery(int(error is None), 0, str(exc) if error is None else f"{exc}; sending it unrecorded failed too: {error}", recorded=False)
        return self.deliver() if deliver else Delivery(0, 1)

    def resolve(self, name: AlertName, dataset: str, deliver: bool = True, where: Callable[[dict[str, str]], bool] | None = None,
                **labels: str) -> Delivery:
        """Resolve every firing alert with this name, dataset and these extra labels (and that `where` accepts), whatever
        its model version; then deliver, unless `deliver` is False."""
        if not self.enabled:
            return Delivery(0, 0, "alerting is off (no alertmanager_url)")
        match = {"alertname": str(name), "dataset": dataset, **labels}
        try:
            ended = self._end(lambda firing: match.items() <= firing.items() and (where is None or where(firing)))
        except (sqlite3.Error, OSError) as exc:
            log.error("alerts %s not resolved: %s", match, exc)
            return Delivery(0, 0, str(exc), recorded=False)
        return self.deliver() if deliver else Delivery(0, ended)

    def resolve_other_versions(self, names: Sequence[AlertName], dataset: str, version: str, **labels: str) -> int:
        """Resolve the firing alerts with one of `names` (and these extra labels) about a model version of `dataset` other
        than `version` (the champion now): they are about a model that no longer serves, and nothing else would resolve
        them (a drift report or live quality reading about that version never comes again). Returns how many; delivered
        with the next delivery."""
        if not self.enabled or not self.store.exists():
            return 0
        wanted = {str(name) for name in names}
        try:
            return self._end(lambda firing: firing["alertname"] in wanted and firing["dataset"] == dataset and firing["model_version"] != version
                             and labels.items() <= firing.items())
        except (sqlite3.Error, OSError) as exc:
            log.error("alerts about versions other than v%s of %s not resolved: %s", version, dataset, exc)
            return 0

    def _end(self, chosen: Callable[[dict[str, str]], bool]) -> int:
        """Mark the firing alerts whose labels `chosen` accepts resolved (pending delivery); returns how many."""
        with self._db() as db:
            ended = [fingerprint for fingerprint, stored in db.execute("SELECT fingerprint, labels FROM alerts WHERE ends_at IS NULL").fetchall()
                     if chosen(json.loads(stored))]
            for fingerprint in ended:
                db.execute("UPDATE alerts SET ends_at = ?, revision = revision + 1, pending = 1 WHERE fingerprint = ?", (time.time(), fingerprint))
        return len(ended)

    def firing(self, name: AlertName | None = None) -> list[dict[str, str]]:
        """Label sets of the alerts recorded as firing."""
        if not self.store.exists():
            return []
        with self._db() as db:
            found = [json.loads(row[0]) for row in db.execute("SELECT labels FROM alerts WHERE ends_at IS NULL")]
        return [labels for labels in found if name is None or labels["alertname"] == str(name)]

    def deliver(self) -> Delivery:
        """POST pending alerts and firing ones due for a refresh; whatever fails stays pending."""
        if not self.enabled or not self.store.exists():
            return Delivery(0, 0, None if self.enabled else "alerting is off (no alertmanager_url)")
        now = time.time()
        try:
            with self._db() as db:
                rows = db.execute(
                    "SELECT fingerprint, labels, annotations, generator_url, starts_at, ends_at, revision FROM alerts "
                    "WHERE pending = 1 OR (ends_at IS NULL AND sent_ends_at < ?)",
                    (now + self.ttl / 2,),
                ).fetchall()
        except sqlite3.Error as exc:
            log.error("alert outbox unreadable: %s", exc)
            return Delivery(0, 0, str(exc))
        if not rows:
            return Delivery(0, 0)
        # A resolved alert ends no sooner than keep_firing after its start: Alertmanager then notifies it, firing, first.
        ends = {fp: (now + self.ttl if ends_at is None else max(ends_at, starts_at + self.keep_firing)) for fp, _, _, _, starts_at, ends_at, _ in rows}
        payload = [_posted(json.loads(labels), json.loads(annotations), generator, starts_at, ends[fp])
                   for fp, labels, annotations, generator, starts_at, _, _ in rows]
        error = self._post(payload)
        if error is not None:
            return Delivery(0, len(rows), error)
        with self._db() as db:
            for fp, _, _, _, _, ends_at, revision in rows:
                if ends_at is None:
                    db.execute("UPDATE alerts SET pending = 0, sent_ends_at = ? WHERE fingerprint = ? AND revision = ?", (ends[fp], fp, revision))
                else:
                    db.execute("DELETE FROM alerts WHERE fingerprint = ? AND revision = ?", (fp, revision))
        return Delivery(len(rows), 0)

    def _post(self, payload: list[dict[str, object]]) -> str | None:
        """One POST with bounded retries; returns the error that made it give up, or None (httpx loads on a first delivery,
        not with the code location)."""
        import httpx

        error = ""
        for attempt in range(self.attempts):
            try:
                response = httpx.post(f"{self.url}/api/v2/alerts", json=payload, timeout=self.timeout)
                # 408 and 429 (a proxy's timeout or rate limit) say "later", as a 5xx does: before, they dropped the batch (the review).
                if response.status_code < 500 and response.status_code not in RETRY_LATER:
                    response.raise_for_status()
                    return None
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPStatusError as exc:
                log.error("Alertmanager refused %d alert(s), dropped: %s %s", len(payload), exc, exc.response.text[:200])
                return None
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff * 2**attempt * random.uniform(0.5, 1.5))
        log.warning("Alertmanager at %s unreachable after %d attempts (%s); %d alert(s) kept in %s for the next delivery",
                    self.url, self.attempts, error, len(payload), self.store)
        return error


def run_url(settings: Settings, run_id: str) -> str:
    return f"{settings.dagster_ui_url.rstrip('/')}/runs/{run_id}"


def drift_alert(settings: Settings, dataset: str, model_version: int, drift_share: float, drifted_columns: str, report: str, run_id: str) -> Alert:
    return Alert(
        AlertName.DRIFT, Severity.WARNING, dataset, model_version,
        summary=f"{dataset}: data drift against the champion's training window ({drift_share:.0%} of columns)",
        description=f"Drifted columns: {drifted_columns}. The retraining sensor retrains once enough new labels arrived.",
        links={"report": report, "dagster_run": run_url(settings, run_id)}, generator_url=run_url(settings, run_id),
    )


def promotion_refused_alert(settings: Settings, dataset: str, challenger_version: int, champion_version: int | None, reason: str,
                            report: str, run_id: str) -> Alert:
    kept = f"v{champion_version} stays champion" if champion_version else "there is still no champion"
    return Alert(
        AlertName.PROMOTION_REFUSED, Severity.WARNING, dataset, challenger_version,
        summary=f"{dataset}: challenger v{challenger_version} was not promoted; {kept}",
        description=reason,
        links={"report": report, "dagster_run": run_url(settings, run_id)}, generator_url=run_url(settings, run_id),
    )


def live_quality_alert(settings: Settings, dataset: str, model_version: int | str, breaches: list[str], events: int, run_id: str) -> Alert:
    return Alert(
        AlertName.LIVE_QUALITY, Severity.WARNING, dataset, model_version,
        summary=f"{dataset}: champion v{model_version} below its live quality floor on the last {events} labelled predictions",
        description="; ".join(breaches),
        links={"dagster_run": run_url(settings, run_id)}, generator_url=run_url(settings, run_id),
    )


def run_failed_alert(settings: Settings, dataset: str, champion_version: int | str | None, job: str, run_id: str, error: str,
                     will_retry: bool, stack_stopped: bool = False, promoted: int | None = None) -> Alert:
    """A failed run: critical; a run the stack stopped in flight (`mlplatform dev` stopped with Ctrl-C, or killed) is an
    interruption, a warning, so a planned stop pages nobody (its retry's failure would be critical). `promoted`: the
    version the run's evaluation_report made champion before a later step failed."""
    then = "Dagster will retry the run." if will_retry else "No retry is left."
    what = "was interrupted: the stack stopped while it ran" if stack_stopped else "failed"
    champion = "; the champion is unchanged" if promoted is None else f" after it made v{promoted} champion"
    return Alert(
        AlertName.RUN_FAILED, Severity.WARNING if stack_stopped else Severity.CRITICAL, dataset, champion_version,
        summary=f"{dataset}: Dagster run of {job} {what}{champion}",
        description=f"{error} {then}",
        links={"dagster_run": run_url(settings, run_id)}, extra_labels={"job": job}, generator_url=run_url(settings, run_id),
    )


def serving_reload_failed(settings: Settings, spec: DatasetSpec, version: int | str, error: str, failure: str = RELOAD_LOAD) -> Delivery:
    """For the prediction service: it could not load a newly promoted version (`version`), or read the champion alias
    (RELOAD_ALIAS: `version` is the one it serves), and keeps serving the old one."""
    alert = Alert(
        AlertName.SERVING_RELOAD_FAILED, Severity.CRITICAL, spec.name, version,
        summary=(f"{spec.name}: the prediction service could not load v{version}; it keeps serving the previous model" if failure == RELOAD_LOAD else
                 f"{spec.name}: the prediction service cannot read the champion alias; it keeps serving v{version}"),
        description=error,
        links={"mlflow_model_version": f"{settings.mlflow_ui_url.rstrip('/')}/#/models/{spec.model_name}/versions/{version}"},
        extra_labels={PROCESS_LABEL: serving_process(), FAILURE_LABEL: failure},
    )
    alerter = Alerter.from_settings(settings)
    # A process failing again after each restart would otherwise pile up one alert per pid (the diff review).
    alerter.resolve(AlertName.SERVING_RELOAD_FAILED, spec.name, deliver=False, where=lambda labels: _gone(labels.get(PROCESS_LABEL, "")))
    return alerter.fire(alert)


def serving_reload_succeeded(settings: Settings, spec: DatasetSpec) -> Delivery:
    """For the prediction service: a reload worked, so this process's reload failure is over, and so are those of
    serving processes of this host that are gone (the process a restart replaced). Another live worker's stays firing
    until it loads (the review: any worker's start or good reload resolved every worker's alert)."""
    return Alerter.from_settings(settings).resolve(AlertName.SERVING_RELOAD_FAILED, spec.name, where=_this_or_gone)


def serving_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _this_or_gone(labels: Mapping[str, str]) -> bool:
    """A reload alert of this process, of a process of this host that no longer runs, or from before alerts named their
    process."""
    process = labels.get(PROCESS_LABEL, "")
    return not process.rpartition(":")[2].isdigit() or process == serving_process() or _gone(process)


def _gone(process: str) -> bool:
    """Whether `process` (host:pid) is a process of this host that no longer runs; another host's is never known gone."""
    host, _, pid = process.rpartition(":")
    if not pid.isdigit() or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only whether it runs
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:  # it runs, as another user
        return False
    return False
