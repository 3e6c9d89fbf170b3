from __future__ import annotations

from ._client import AsyncClient, Client
from ._local import ensure_local_backend


_last: list[Client] = []  # the latest connect() of this process: what %aiaas commands use


def last_connected() -> Client | None:
    """The client the latest :func:`connect` returned in this process, if any."""
    return _last[0] if _last else None


def _target(url: str | None, api_key: str | None) -> tuple[str | None, str | None]:
    if url != "local":
        return url, api_key
    # The embedded backend's own key: AIAAS_API_KEY and the config file are for other backends.
    local = ensure_local_backend()
    return local.url, api_key or local.api_key


def connect(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None) -> Client:
    """Connect to an aiaas backend.

    ``url`` and ``api_key`` default to ``AIAAS_URL``/``AIAAS_API_KEY``, then the
    config file (see :mod:`aiaas_sdk.config`). ``connect("local")`` starts an
    embedded backend on this machine (or reuses the running one) and uses its own
    key; ``aiaas local status`` and ``aiaas local stop`` show and stop it.
    """
    client = Client(*_target(url, api_key), timeout=timeout)
    _last[:] = [client]
    return client


def connect_async(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None) -> AsyncClient:
    """Like :func:`connect`, returning an :class:`AsyncClient`."""
    return AsyncClient(*_target(url, api_key), timeout=timeout)
