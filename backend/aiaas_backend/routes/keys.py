"""``/v1/keys`` and ``/v1/audit``: a user manages their own keys; an admin's key manages anyone's.

Admins are marked from the command line only (``aiaas keys create --user NAME --admin``),
by whoever runs the backend; no API call makes a user an admin. Another user's key is a
404 to a non-admin (existence is not leaked); naming another user is a 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlalchemy import select

from aiaas_sdk.wire_keys import AuditPublic, KeyCreate, KeyCreated, KeyPublic, KeysPublic

from ..deps import CurrentUser, SessionDep
from ..audit import entries
from ..errors import ApiError
from ..keys import describe, expiry, find, list_keys, owner, revoke
from ..models import ApiKey, User
from ..security import create_api_key, hash_secret

router = APIRouter(tags=["keys"])


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _admin_only(user: User, what: str) -> None:
    if not user.is_admin:
        raise ApiError(403, f"only an admin's key may {what}; an admin is made with "
                       "`aiaas keys create --user NAME --admin` on the backend's machine", "admin_only")


def _user_named(session: SessionDep, name: str) -> User:
    found = session.scalar(select(User).where(User.name == name))
    if found is None:
        raise ApiError(404, f"no user {name!r}; `aiaas keys list` shows every user's keys", "user_not_found")
    return found


@router.get("/v1/keys", operation_id="list_keys")
def list_api_keys(
    session: SessionDep, user: CurrentUser,
    of: Annotated[str | None, Query(alias="user", max_length=200, description="another user's keys (admins)")] = None,
    all_users: Annotated[bool, Query(description="every user's keys (admins)")] = False,
) -> KeysPublic:
    """Your API keys and your deployments' keys (never their secrets), with when each was last used."""
    whose: User | None = user
    if all_users or (of is not None and of != user.name):
        _admin_only(user, "list other users' keys")
        whose = None if all_users else _user_named(session, of)  # type: ignore[arg-type]
    data = list_keys(session, whose)
    return KeysPublic(data=data, count=len(data))


@router.post("/v1/keys", status_code=status.HTTP_201_CREATED, operation_id="create_key")
def create_key(body: KeyCreate, request: Request, session: SessionDep, user: CurrentUser) -> KeyCreated:
    """A new API key for you (or, with an admin's key, for ``user``): the secret is in this answer only."""
    target = body.user or user.name
    if target != user.name:
        _admin_only(user, "create keys for other users")
    secret = create_api_key(session, target, name=body.name, expires_at=expiry(body.expires_in_s),
                            actor=f"user:{user.name}", ip=_ip(request))
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_secret(secret)))
    assert row is not None
    return KeyCreated(**describe(session, row).model_dump(), key=secret)


@router.delete("/v1/keys/{key_id}", operation_id="revoke_key")
def revoke_key(key_id: str, request: Request, session: SessionDep, user: CurrentUser) -> KeyPublic:
    """Revoke a key now: it stops working everywhere within a second or two. Revoking twice is harmless."""
    key = find(session, key_id)
    holder = owner(session, key) if key is not None else None
    if key is None or holder is None or (holder.id != user.id and not user.is_admin):
        raise ApiError(404, f"no key {key_id!r} for this API key; list yours with client.keys()", "key_not_found")
    public = revoke(session, key, f"user:{user.name}", _ip(request))
    # This process's predict cache forgets it at once (other processes: within KEY_CACHE_S).
    request.app.state.predict_targets.clear()
    return public


@router.get("/v1/audit", operation_id="list_audit")
def list_audit(
    session: SessionDep, user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    of: Annotated[str | None, Query(alias="user", max_length=200, description="only this user's keys")] = None,
) -> AuditPublic:
    """The audit log, newest first (admins only): keys created, revoked, and used from a new address."""
    _admin_only(user, "read the audit log")
    data = entries(session, limit, _user_named(session, of).id if of is not None else None)
    return AuditPublic(data=data, count=len(data))


__all__ = ["router"]
