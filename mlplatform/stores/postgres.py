"""Checks shared by every setting that names a PostgreSQL database (event log, Dagster instance, MLflow store)."""

import psycopg

from mlplatform.settings import SettingsError
from mlplatform.stores.eventlog_postgres import redact

CONNECT_TIMEOUT_S = 10


def check_reachable(url: str, setting: str) -> None:
    """Fail at start, naming the setting (password hidden), rather than later in a driver's traceback."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S):
            pass
    except (psycopg.Error, ValueError) as exc:
        raise SettingsError(f"{setting} ({redact(url)}): cannot connect: {str(exc).strip()}") from None
