"""API keys and worker tokens: random secrets, stored only as SHA-256 hashes.

The secrets are 256-bit random strings, so a plain SHA-256 (not a slow password
hash) is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .audit import record
from .models import ApiKey, ScrapeKey, User


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_hash(secret: str, stored: str | None) -> bool:
    return stored is not None and hmac.compare_digest(hash_secret(secret), stored)


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def new_worker_token() -> tuple[str, str]:
    token = new_secret("aiaasw_")
    return token, hash_secret(token)


def create_api_key(session: Session, user_name: str, *, name: str | None = None,
                   expires_at: datetime | None = None, admin: bool = False, actor: str = "cli",
                   ip: str | None = None) -> str:
    """Create ``user_name`` if needed and a new key for it; returns the key (shown once).

    ``admin`` marks the user an admin (it is never unset here); the creation is audited."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
        session.flush()
    if admin:
        user.is_admin = True
    key = new_secret("aiaas_")
    row = ApiKey(user_id=user.id, key_hash=hash_secret(key), prefix=key[:12], name=name, expires_at=expires_at)
    session.add(row)
    session.flush()
    record(session, "create", row, actor, ip)
    session.commit()
    return key


def api_key_for(session: Session, key: str) -> ApiKey | None:
    """The API key row of ``key`` while it works (not revoked, not expired)."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_secret(key)))
    return row if row is not None and row.ended() is None else None


def user_for_key(session: Session, key: str) -> User | None:
    row = api_key_for(session, key)
    return session.get(User, row.user_id) if row else None


def create_scrape_key(session: Session, name: str) -> str:
    """A key that can read ``GET /metrics`` and nothing else; ``name`` says who scrapes (shown once)."""
    if session.scalar(select(ScrapeKey).where(ScrapeKey.name == name)) is not None:
        raise ValueError(f"a scrape key named {name!r} exists; pick another name")
    key = new_secret("aiaasm_")
    session.add(ScrapeKey(name=name, key_hash=hash_secret(key), prefix=key[:12]))
    session.commit()
    return key


def scrape_key_name(session: Session, key: str) -> str | None:
    """The name of the scrape key ``key``, or None when it is not one."""
    return session.scalar(select(ScrapeKey.name).where(ScrapeKey.key_hash == hash_secret(key)))
