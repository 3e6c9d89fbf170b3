"""``client.keys()``, ``client.create_key()``, ``client.revoke_key()``, ``client.audit()``.

Operations free of I/O (like ``_ops``), driven by :class:`KeysMixin` for ``Client``
and :class:`AsyncKeysMixin` for ``AsyncClient``, so the twins cannot drift.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ._errors import InvalidInput
from ._ops import Call, Op, _response
from .wire_keys import AuditEntryPublic, AuditPublic, KeyCreate, KeyCreated, KeyPublic, KeysPublic, parse_duration

Expires = str | float | timedelta | None


def list_keys(user: str | None = None, all_users: bool = False) -> Op[list[KeyPublic]]:
    params: dict[str, Any] = {"all_users": "true"} if all_users else {}
    if user is not None:
        params["user"] = user
    resp = yield Call("GET", "/v1/keys", params=params)
    return KeysPublic.model_validate_json(_response(resp).content).data


def create_key(name: str | None, expires: Expires, user: str | None) -> Op[KeyCreated]:
    try:
        body = KeyCreate(name=name, expires_in_s=parse_duration(expires) if expires is not None else None, user=user)
    except ValueError as exc:  # pydantic's ValidationError is one too
        raise InvalidInput(f"create_key(): {exc}") from None
    resp = yield Call("POST", "/v1/keys", json=body.model_dump(exclude_none=True), idempotent=False)
    return KeyCreated.model_validate_json(_response(resp).content)


def revoke_key(key: str | KeyPublic) -> Op[KeyPublic]:
    key_id = key.id if isinstance(key, KeyPublic) else key
    resp = yield Call("DELETE", f"/v1/keys/{key_id}")
    return KeyPublic.model_validate_json(_response(resp).content)


def audit(limit: int, user: str | None) -> Op[list[AuditEntryPublic]]:
    params: dict[str, Any] = {"limit": limit, **({"user": user} if user is not None else {})}
    resp = yield Call("GET", "/v1/audit", params=params)
    return AuditPublic.model_validate_json(_response(resp).content).data


class KeysMixin:
    """Key management for :class:`aiaas.Client` (docs/security.md, "Keys")."""

    _drive: Any

    def keys(self, *, user: str | None = None, all_users: bool = False) -> list[KeyPublic]:
        """Your API keys and your deployments' keys, with their state and last use (never the secrets).
        ``user=`` or ``all_users=True`` list other users' keys (an admin's key only)."""
        return self._drive(list_keys(user, all_users))

    def create_key(self, name: str | None = None, *, expires: Expires = None, user: str | None = None) -> KeyCreated:
        """A new API key; its secret is ``.key``, shown this once. ``expires``: ``"30d"``, ``"12h"``,
        seconds or a ``timedelta`` (None: never). ``user=`` another user's (an admin's key only)."""
        return self._drive(create_key(name, expires, user))

    def revoke_key(self, key: str | KeyPublic) -> KeyPublic:
        """Revoke a key by id (``"ak_3"``, ``"dk_7"``) or as listed by :meth:`keys`: it stops working
        everywhere within 2 s. Revoking the key this client uses locks this client out."""
        return self._drive(revoke_key(key))

    def audit(self, limit: int = 100, *, user: str | None = None) -> list[AuditEntryPublic]:
        """The audit log, newest first: keys created, revoked, and used from a new address (admins only)."""
        return self._drive(audit(limit, user))


class AsyncKeysMixin:
    """The async twin of :class:`KeysMixin`, for :class:`aiaas.AsyncClient`."""

    _drive: Any

    async def keys(self, *, user: str | None = None, all_users: bool = False) -> list[KeyPublic]:
        return await self._drive(list_keys(user, all_users))

    async def create_key(self, name: str | None = None, *, expires: Expires = None,
                         user: str | None = None) -> KeyCreated:
        return await self._drive(create_key(name, expires, user))

    async def revoke_key(self, key: str | KeyPublic) -> KeyPublic:
        return await self._drive(revoke_key(key))

    async def audit(self, limit: int = 100, *, user: str | None = None) -> list[AuditEntryPublic]:
        return await self._drive(audit(limit, user))


__all__ = ["AsyncKeysMixin", "KeysMixin"]
