"""The test session's PostgreSQL server (the cluster code is mlplatform.cli.postgres, shared with `mlplatform dev --profile production`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlplatform.cli.postgres import PostgresCluster, missing_reason

__all__ = ["PostgresCluster", "missing_reason", "postgres_cluster", "postgres_url"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server per test session (per xdist worker), stopped at the end; skips when it cannot run here."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = PostgresCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database on the session's server for one test, dropped afterwards."""
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url)
