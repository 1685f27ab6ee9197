"""The Dask cluster training runs on, when `dask_scheduler` is set: connected per training, checked at once."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mlplatform.settings import SettingsError

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT_S = 5


@contextmanager
def dask_client(address: str | None, setting: str) -> Iterator["Client | None"]:
    """A client of the scheduler at `address` with at least one worker (None when unset); a scheduler that does not
    answer, or has no worker to train on, fails here naming the setting rather than hanging in the fit."""
    if address is None:
        yield None
        return
    from distributed import Client  # imported only when used: it costs every other process half a second

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, ValueError, TypeError) as exc:
        raise SettingsError(f"{setting} ({address}): no Dask scheduler answers: {str(exc).strip()}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise SettingsError(f"{setting} ({address}): the Dask scheduler has no worker after {CONNECT_TIMEOUT_S} s") from None
        yield client
