"""How the SDK protects its key on the wire: verified TLS, and no key in clear text off this machine.

A key sent over plain ``http://`` can be read by anyone on the path, so the SDK refuses
to send one to any address but a loopback one (``127.0.0.0/8``, ``::1``, ``localhost``)
unless the caller opts in with ``allow_insecure=True``. ``https://`` certificates are
always verified: against the ``ca_bundle`` setting when one is given (a private CA),
else against the public CAs httpx trusts.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any
from urllib.parse import urlsplit

from ._errors import ConfigError


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_clear_text(url: str, has_key: bool, allow_insecure: bool) -> None:
    """Raise :class:`ConfigError` when a key would travel unencrypted to another machine."""
    parts = urlsplit(url)
    if not has_key or allow_insecure or parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return
    raise ConfigError(
        f"refusing to send the API key to {url} over plain http://: anyone between here and {parts.hostname} "
        "could read it and act as you. Use https:// (start the backend with `aiaas server --ssl-certfile CERT "
        "--ssl-keyfile KEY`, or put it behind a TLS proxy), or, on a network you trust, pass "
        "allow_insecure=True to aiaas.connect() (or set AIAAS_ALLOW_INSECURE=1)", code="insecure_transport"
    )


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` gets: a context trusting ``ca_bundle``, or True (httpx's public CAs)."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the CA bundle {ca_bundle!r} (ca_bundle / AIAAS_CA_BUNDLE / the config file's "
                          f"ca_bundle) cannot be read as PEM certificates: {exc}") from None


def client_options(ca_bundle: str | None, allow_insecure: bool) -> tuple[dict[str, Any], ssl.SSLContext | bool]:
    """(arguments that make another client with the same protection, httpx's ``verify``)."""
    return {"ca_bundle": ca_bundle, "allow_insecure": allow_insecure}, ssl_context(ca_bundle)


__all__ = ["client_options", "is_loopback", "refuse_clear_text", "ssl_context"]
