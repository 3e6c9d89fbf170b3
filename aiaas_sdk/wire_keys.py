"""Wire schemas of API keys and the audit log, shared by the SDK and the backend.

Also the one parser of key lifetimes ("30d", "12h"), so ``aiaas keys create
--expires`` and ``client.create_key(expires=...)`` read them the same way.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

KeyKind = Literal["api", "deployment"]


def parse_duration(value: str | float | timedelta) -> float:
    """Seconds in ``value``: a number of seconds, a ``timedelta``, or ``"90s"``, ``"15m"``,
    ``"12h"``, ``"30d"``, ``"2w"``. Raises ``ValueError`` naming the accepted forms."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"a key lifetime is a number and a unit (s, m, h, d, w), like '30d' or '12h'; "
                             f"got {value!r}")
        seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise ValueError(f"a key lifetime must be positive, got {value!r}")
    return seconds


class KeyCreate(BaseModel):
    name: str | None = Field(default=None, max_length=200, description="what the key is for, e.g. 'laptop'")
    expires_in_s: float | None = Field(default=None, gt=0, le=100 * 365 * 86400,
                                       description="seconds until the key stops working; none: never")
    user: str | None = Field(default=None, max_length=200,
                             description="another user to create the key for (admin keys only)")


class KeyPublic(BaseModel):
    """An API key or a deployment key, never its secret."""

    id: str = Field(description="'ak_N' for an API key, 'dk_N' for a deployment key")
    kind: KeyKind
    prefix: str = Field(description="the key's first characters, to recognise it")
    name: str | None = None
    user: str
    deployment: str | None = Field(default=None, description="for a deployment key: the deployment it calls")
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = Field(default=None, description="to within a minute or so")
    active: bool


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    count: int


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret: shown once, in this answer only")


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    action: Literal["create", "revoke", "use"]
    key_kind: KeyKind
    key_id: str
    key_prefix: str
    user: str | None = Field(default=None, description="the key's owner")
    actor: str = Field(description="'cli', 'user:NAME' (through the API), or 'key' for a use")
    ip: str | None = None


class AuditPublic(BaseModel):
    data: list[AuditEntryPublic]
    count: int


__all__ = ["AuditEntryPublic", "AuditPublic", "KeyCreate", "KeyCreated", "KeyPublic", "KeysPublic",
           "parse_duration"]
