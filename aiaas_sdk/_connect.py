from __future__ import annotations

from ._client import AsyncClient, Client
from ._local import ensure_local_backend


def _url(url: str | None) -> str | None:
    return ensure_local_backend() if url == "local" else url


def connect(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None) -> Client:
    """Connect to an aiaas backend.

    ``url`` and ``api_key`` default to ``AIAAS_URL``/``AIAAS_API_KEY``, then the
    config file (see :mod:`aiaas_sdk.config`). ``connect("local")`` starts an
    embedded backend on this machine (or reuses the running one).
    """
    return Client(_url(url), api_key, timeout=timeout)


def connect_async(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None) -> AsyncClient:
    """Like :func:`connect`, returning an :class:`AsyncClient`."""
    return AsyncClient(_url(url), api_key, timeout=timeout)
