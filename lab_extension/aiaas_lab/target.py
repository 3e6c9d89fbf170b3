"""Which backend a browser request may reach, and with which key.

The Jupyter server holds one API key: the one the aiaas settings give it
(``AIAAS_API_KEY`` or the aiaas config file), for the URL they give it
(``AIAAS_URL`` or the config file). The panel's settings may name a backend
URL (sent as the ``X-Aiaas-Backend`` header); that is a *choice among the
backends the server holds keys for*, never a destination of its own. A URL
that is not the configured one gets a "not connected" answer and the server
sends nothing to it, so a page cannot make the server leak its key to, or
probe, another host.

The server protects that key like the SDK does (it uses the SDK's settings): it
verifies the backend's certificate (against ``AIAAS_CA_BUNDLE`` or the config
file's ``ca_bundle`` when set), and it sends nothing over plain ``http://`` to
anything but a loopback address unless ``AIAAS_ALLOW_INSECURE=1``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiaas_sdk import _tls, config

HEADER = "X-Aiaas-Backend"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Target:
    """A backend the server may call, with the key it holds for it."""

    url: str
    api_key: str
    # httpx's ``verify``: a context trusting the configured CA bundle, or True.
    verify: ssl.SSLContext | bool = True


@dataclass(frozen=True)
class NotConnected(Exception):
    """Why the server will not (or could not) talk to a backend, worded for the panel."""

    url: str
    reason: str
    error: str

    def body(self) -> dict[str, object]:
        return {"connected": False, "url": self.url, "reason": self.reason, "error": self.error}


def canonical(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of a plain http(s) URL; None for anything else.

    URLs with credentials, a query or a fragment are refused rather than
    normalised: they are never what a person means by "the backend URL", and
    ``http://good@evil`` style tricks must not compare equal to ``http://good``.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None \
            or parts.password is not None or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme], parts.path.rstrip("/")


def resolve(requested: str | None) -> Target:
    """The backend for a request whose panel asked for ``requested`` (None or "" = the configured one).

    Raises :class:`NotConnected` with a message that says how to fix it.
    """
    try:
        settings = config.resolve()
    except ValueError as exc:
        if getattr(exc, "code", None) == "insecure_transport":
            raise NotConnected("", "insecure_url", f"the Jupyter server will not send its aiaas key in clear text: "
                               f"{exc}") from None
        raise NotConnected("", "bad_settings", f"the aiaas settings of the Jupyter server are invalid: {exc}") from None
    requested = (requested or "").strip()
    if requested:
        wanted = canonical(requested)
        if wanted is None:
            raise NotConnected(requested, "bad_url",
                               f"the backend URL {requested!r} in Settings > aiaas is not a plain http(s) URL "
                               "(no user, query or fragment); fix it or leave it empty")
        if wanted != canonical(settings.url):
            raise NotConnected(requested, "no_key_for_url",
                               f"no key for {requested} on the Jupyter server: it holds a key for {settings.url} "
                               "only. Clear the backend URL in Settings > aiaas to use that one, or start Jupyter "
                               f"with AIAAS_URL={requested} and AIAAS_API_KEY set (or put both in the aiaas "
                               "config file of the user running Jupyter)")
    if not settings.api_key:
        raise NotConnected(settings.url, "no_key",
                           f"no aiaas API key on the Jupyter server for {settings.url}: start Jupyter with "
                           "AIAAS_API_KEY set, or put api_key in the aiaas config file of the user running it "
                           "(a local `aiaas server` writes it; `aiaas keys create --user NAME` makes one)")
    try:
        verify = _tls.ssl_context(settings.ca_bundle)
    except ValueError as exc:
        raise NotConnected(settings.url, "bad_settings", f"the aiaas settings of the Jupyter server are invalid: "
                           f"{exc}") from None
    return Target(settings.url, settings.api_key, verify)
