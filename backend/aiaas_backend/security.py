"""API keys and worker tokens: random secrets, stored only as SHA-256 hashes.

The secrets are 256-bit random strings, so a plain SHA-256 (not a slow password
hash) is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def create_api_key(session: Session, user_name: str) -> str:
    """Create ``user_name`` if needed and a new key for it; returns the key (shown once)."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
        session.flush()
    key = new_secret("aiaas_")
    session.add(ApiKey(user_id=user.id, key_hash=hash_secret(key), prefix=key[:12]))
    session.commit()
    return key


def user_for_key(session: Session, key: str) -> User | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_secret(key)))
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
