"""Checks shared by every setting that names a PostgreSQL database (event log, Dagster instance, MLflow store)."""

from mlplatform.settings import SettingsError, redact

CONNECT_TIMEOUT_S = 10


def check_reachable(url: str, setting: str) -> None:
    """Fail at start, naming the setting (password hidden), rather than later in a driver's traceback.

    The driver is imported here: the code location imports this module but checks only with PostgreSQL settings."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S):
            pass
    except (psycopg.Error, ValueError) as exc:
        raise SettingsError(f"{setting} ({redact(url)}): cannot connect: {str(exc).strip()}") from None
