"""The one place that picks the event log's backend from the settings (the composition root calls it)."""

from __future__ import annotations

from mlplatform.domain.spec import DatasetSpec
from mlplatform.settings import Settings
from mlplatform.stores.eventlog import EventLog, EventStore


def open_event_log(settings: Settings, spec: DatasetSpec) -> EventStore:
    """PostgreSQL when `event_log_url` is set (production profile), else the embedded SQLite file in `events_dir`.

    Raises EventLogError at open, naming the setting, when the database cannot be reached or used.
    """
    if settings.event_log_url is not None:
        from mlplatform.stores.eventlog_postgres import PostgresEventLog  # the driver loads only in the production profile

        return PostgresEventLog(settings.event_log_url.get_secret_value(), spec)
    return EventLog.for_dataset(settings.events_dir, spec)
