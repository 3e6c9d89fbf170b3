"""The lifecycle of API keys and deployment keys: find, list, revoke, describe.

A key works until it is revoked or its ``expires_at`` passes; every check reads the
database (the predict path's short cache aside: ``KEY_CACHE_S``), so a revoked or
expired key stops working within that long everywhere. Creation and revocation are
written to the audit log in the same transaction as the change itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiaas_sdk.wire_keys import KeyPublic

from .audit import record
from .models import ApiKey, Deployment, DeploymentKey, User, as_utc, utcnow
from .security import hash_secret

# How long the predict path may keep trusting a key it looked up (revocation takes at most this).
KEY_CACHE_S = 1.0

AnyKey = ApiKey | DeploymentKey


def find_by_secret(session: Session, secret: str) -> AnyKey | None:
    """The API key or deployment key ``secret`` is, working or not."""
    digest = hash_secret(secret)
    return (session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
            or session.scalar(select(DeploymentKey).where(DeploymentKey.key_hash == digest)))


def public_id(key: AnyKey) -> str:
    return f"{'ak' if isinstance(key, ApiKey) else 'dk'}_{key.id}"


def find(session: Session, key_id: str) -> AnyKey | None:
    """A key by its public id (``ak_3``, ``dk_7``) or, for people at a terminal, its prefix."""
    kind, _, number = key_id.partition("_")
    # ASCII digits that fit a database integer: anything else names no key (not a 500).
    if kind in ("ak", "dk") and number.isascii() and number.isdigit() and len(number) < 18:
        return session.get(ApiKey if kind == "ak" else DeploymentKey, int(number))
    matches = [*session.scalars(select(ApiKey).where(ApiKey.prefix == key_id)),
               *session.scalars(select(DeploymentKey).where(DeploymentKey.prefix == key_id))]
    return matches[0] if len(matches) == 1 else None


def owner(session: Session, key: AnyKey) -> User | None:
    if isinstance(key, ApiKey):
        return session.get(User, key.user_id)
    dep = session.get(Deployment, key.deployment_id)
    return session.get(User, dep.user_id) if dep else None


def describe(session: Session, key: AnyKey) -> KeyPublic:
    user = owner(session, key)
    dep = session.get(Deployment, key.deployment_id) if isinstance(key, DeploymentKey) else None
    return KeyPublic(
        id=public_id(key), kind="api" if isinstance(key, ApiKey) else "deployment", prefix=key.prefix,
        name=key.name, user=user.name if user else "?", deployment=dep.name if dep else None,
        created_at=as_utc(key.created_at), expires_at=key.expires_at and as_utc(key.expires_at),
        revoked_at=key.revoked_at and as_utc(key.revoked_at),
        last_used_at=key.last_used_at and as_utc(key.last_used_at), active=key.ended() is None,
    )


def list_keys(session: Session, user: User | None = None) -> list[KeyPublic]:
    """Every key of ``user`` (None: of every user): API keys, then deployment keys, oldest first."""
    api = select(ApiKey).order_by(ApiKey.id)
    shared = select(DeploymentKey).join(Deployment, Deployment.id == DeploymentKey.deployment_id) \
        .order_by(DeploymentKey.id)
    if user is not None:
        api = api.where(ApiKey.user_id == user.id)
        shared = shared.where(Deployment.user_id == user.id)
    return [describe(session, k) for k in (*session.scalars(api), *session.scalars(shared))]


def revoke(session: Session, key: AnyKey, actor: str, ip: str | None = None) -> KeyPublic:
    """Revoke ``key`` now (a no-op on one already revoked) and log it; commits."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record(session, "revoke", key, actor, ip)
        session.commit()
    return describe(session, key)


def expiry(expires_in_s: float | None) -> datetime | None:
    """When a key made now with a lifetime of ``expires_in_s`` seconds stops working."""
    return utcnow() + timedelta(seconds=expires_in_s) if expires_in_s else None


__all__ = ["KEY_CACHE_S", "describe", "expiry", "find", "find_by_secret", "list_keys", "owner", "public_id", "revoke"]
