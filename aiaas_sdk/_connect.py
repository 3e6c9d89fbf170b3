from __future__ import annotations

import os

from ._async_client import AsyncClient
from ._client import Client
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


def connect(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None,
            ca_bundle: str | os.PathLike[str] | None = None, allow_insecure: bool | None = None) -> Client:
    """Connect to an aiaas backend.

    ``url`` and ``api_key`` default to ``AIAAS_URL``/``AIAAS_API_KEY``, then the
    config file (see :mod:`aiaas_sdk.config`). ``connect("local")`` starts an
    embedded backend on this machine (or reuses the running one) and uses its own
    key; ``aiaas local status`` and ``aiaas local stop`` show and stop it.

    ``https://`` certificates are verified, against ``ca_bundle`` (a PEM file; or
    ``AIAAS_CA_BUNDLE``, or the config file's ``ca_bundle``) when the backend's
    certificate comes from a private CA. A key is never sent over plain ``http://``
    to another machine unless ``allow_insecure=True``: :class:`aiaas.ConfigError` says so.
    """
    client = Client(*_target(url, api_key), timeout=timeout, ca_bundle=ca_bundle, allow_insecure=allow_insecure)
    _last[:] = [client]
    return client


def connect_async(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None,
                  ca_bundle: str | os.PathLike[str] | None = None, allow_insecure: bool | None = None) -> AsyncClient:
    """Like :func:`connect`, returning an :class:`AsyncClient`."""
    return AsyncClient(*_target(url, api_key), timeout=timeout, ca_bundle=ca_bundle, allow_insecure=allow_insecure)
