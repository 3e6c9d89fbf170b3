"""Where the SDK finds its backend URL and API key.

Order, first match wins: argument > environment variable > config file > default.

==============  ===================  ================================  ========================
setting         argument             environment                       default
==============  ===================  ================================  ========================
url             ``connect(url)``     ``AIAAS_URL``                     ``http://127.0.0.1:8765``
api_key         ``api_key=``         ``AIAAS_API_KEY``                 none
timeout         ``timeout=``         ``AIAAS_TIMEOUT`` (seconds)       30
ca_bundle       ``ca_bundle=``       ``AIAAS_CA_BUNDLE`` (PEM file)    none: the public CAs
allow_insecure  ``allow_insecure=``  ``AIAAS_ALLOW_INSECURE`` (1/0)    false
==============  ===================  ================================  ========================

The config file is TOML at ``AIAAS_CONFIG`` or the platform's user config dir
(``~/.config/aiaas/config.toml`` on Linux), with top-level ``url``, ``api_key``
and ``ca_bundle``. ``allow_insecure`` is never read from the file: sending a key
in clear text to another machine is a choice made in the code or the
environment that does it (see :mod:`aiaas_sdk._tls`). A local ``aiaas server`` points it at itself on first start, unless
it already belongs to another backend. The embedded backend (``connect("local")``)
keeps its data under ``AIAAS_DATA_DIR`` or the user data dir and its key in
``local.key`` there; it never reads or writes the config file.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ._errors import ConfigError
from ._tls import refuse_clear_text

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_TIMEOUT = 30.0
_KEYS = ("url", "api_key", "ca_bundle")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def config_path() -> Path:
    return Path(os.environ.get("AIAAS_CONFIG") or platformdirs.user_config_path("aiaas") / "config.toml")


def default_data_dir() -> Path:
    return Path(os.environ.get("AIAAS_DATA_DIR") or platformdirs.user_data_path("aiaas"))


def read_config(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the aiaas config file {path} is not valid TOML ({exc}); fix or delete it") from None
    return {k: str(v) for k, v in data.items() if k in _KEYS}


def write_config(updates: dict[str, str], path: Path | None = None) -> Path:
    """Merge ``updates`` into the config file, readable by its owner only."""
    path = path or config_path()
    data = read_config(path)
    data.update(updates)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # A JSON string is a valid TOML basic string for the characters keys and URLs use.
    tmp.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in sorted(data.items())))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class Settings:
    url: str
    api_key: str | None
    timeout: float
    ca_bundle: str | None = None
    allow_insecure: bool = False


def _allow_insecure(argument: bool | None) -> bool:
    if argument is not None:
        return argument
    raw = os.environ.get("AIAAS_ALLOW_INSECURE", "").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise ConfigError(f"AIAAS_ALLOW_INSECURE must be 1 or 0, got {raw!r}")
    return raw in _TRUE


def resolve(url: str | None = None, api_key: str | None = None, timeout: float | None = None, *,
            ca_bundle: str | os.PathLike[str] | None = None, allow_insecure: bool | None = None) -> Settings:
    """Apply the documented order to the connection settings.

    Raises :class:`ConfigError` for a bad value, and when the key would go to another
    machine over plain ``http://`` without ``allow_insecure``."""
    file = read_config()
    raw_timeout = timeout if timeout is not None else os.environ.get("AIAAS_TIMEOUT")
    try:
        resolved_timeout = float(raw_timeout) if raw_timeout is not None else DEFAULT_TIMEOUT
    except ValueError:
        raise ConfigError(f"AIAAS_TIMEOUT must be a number of seconds, got {raw_timeout!r}") from None
    if resolved_timeout <= 0:
        raise ConfigError(f"timeout must be positive, got {resolved_timeout}")
    resolved_url = url or os.environ.get("AIAAS_URL") or file.get("url") or DEFAULT_URL
    if not resolved_url.startswith(("http://", "https://")):
        raise ConfigError(f"the backend URL must start with http:// or https://, got {resolved_url!r}")
    settings = Settings(
        url=resolved_url.rstrip("/"),
        api_key=api_key or os.environ.get("AIAAS_API_KEY") or file.get("api_key"),
        timeout=resolved_timeout,
        ca_bundle=str(ca_bundle) if ca_bundle else os.environ.get("AIAAS_CA_BUNDLE") or file.get("ca_bundle"),
        allow_insecure=_allow_insecure(allow_insecure),
    )
    refuse_clear_text(settings.url, settings.api_key is not None, settings.allow_insecure)
    return settings
