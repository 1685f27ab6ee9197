"""The production profile of `mlplatform dev`: the same code on real engines, PostgreSQL for the event log, the
Dagster instance and the MLflow store, Redis and Celery workers for the steps of runs.

A production setting that is set (a managed PostgreSQL, a Redis elsewhere) is used as given, after checking
it answers; one that is not is filled here with a local engine under the state folder: one throwaway
PostgreSQL cluster (a database per store, removed at stop) and one Redis.
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from mlplatform.cli.dev import DevServerError, Server, redis_server, require_binary
from mlplatform.cli.postgres import PostgresCluster, missing_reason
from mlplatform.ports import free_port
from mlplatform.settings import Settings, env_name, env_value
from mlplatform.stores.dask_cluster import dask_client
from mlplatform.stores.postgres import check_reachable

# Each PostgreSQL-backed setting and the name of its database on the local cluster.
POSTGRES_SETTINGS = {"event_log_url": "eventlog", "dagster_postgres_url": "dagster", "mlflow_backend_store_url": "mlflow"}


@contextmanager
def local_engines(settings: Settings, enabled: bool = True) -> Iterator[tuple[Settings, dict[str, str], list[Server]]]:
    """The settings with every unset production setting filled, the environment that carries them to the children,
    and the servers to start first (Redis, when local). A given URL or Dask scheduler that does not answer, or a missing
    binary, fails here, naming the setting or the binary, before anything starts. Disabled: the settings unchanged."""
    if not enabled:
        yield settings, {}, []
        return
    given = {name: getattr(settings, name) for name in POSTGRES_SETTINGS if getattr(settings, name) is not None}
    for name, url in given.items():
        check_reachable(url.get_secret_value(), env_name(name))
    with dask_client(settings.dask_scheduler, env_name("dask_scheduler")):
        pass  # a given scheduler must answer with a worker now, not at the first training
    missing = [name for name in POSTGRES_SETTINGS if name not in given]
    local_redis = settings.celery_broker_url is None
    if local_redis:
        require_binary("redis-server", f"the local Celery broker, used while {env_name('celery_broker_url')} is unset")
    if missing and (reason := missing_reason()):
        raise DevServerError(f"{reason} (needed for {', '.join(env_name(n) for n in missing)}, unset)")
    cluster = PostgresCluster(durable=True, root=settings.state_dir / "postgres") if missing else None
    if cluster is not None:
        try:
            cluster.start()
        except RuntimeError as exc:  # no server to stop: remove what initdb left
            shutil.rmtree(cluster.root, ignore_errors=True)
            raise DevServerError(f"the local PostgreSQL cluster in {cluster.root} did not start: {exc}") from None
    try:
        updates: dict[str, object] = {name: SecretStr(cluster.create_database(POSTGRES_SETTINGS[name])) for name in missing} if cluster else {}
        if local_redis:
            updates["celery_broker_url"] = f"redis://127.0.0.1:{free_port()}/0"
        filled = settings.model_copy(update=updates)
        env = {env_name(k): env_value(v) for k, v in updates.items()}
        yield filled, env, [redis_server(filled)] if local_redis else []
    finally:
        if cluster is not None:
            cluster.stop()
