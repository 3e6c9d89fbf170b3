"""The append-only audit log of keys: creation, revocation, and use by address.

A use is logged once per key per client address per ``audit_every_s`` (not per
request), and a key's ``last_used_at`` is written at most once per
``touch_every_s``: a busy key costs a dictionary look-up per request, not a
database write. Both are remembered in memory, so a restart logs the next use again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from aiaas_sdk.wire_keys import AuditEntryPublic

from .models import ApiKey, AuditEntry, Deployment, DeploymentKey, User, as_utc, utcnow

log = logging.getLogger("aiaas.audit")

Action = Literal["create", "revoke", "use"]
# Markers kept in memory before starting over (a restart-like reset: the next uses are logged again).
_MAX_MARKERS = 100_000


def owner_id(session: Session, key: ApiKey | DeploymentKey) -> int | None:
    if isinstance(key, ApiKey):
        return key.user_id
    dep = session.get(Deployment, key.deployment_id)
    return dep.user_id if dep else None


def record(session: Session, action: Action, key: ApiKey | DeploymentKey, actor: str, ip: str | None = None) -> None:
    """Add one entry to the log in ``session`` (committed with the change it describes)."""
    session.add(AuditEntry(at=utcnow(), action=action, key_kind="api" if isinstance(key, ApiKey) else "deployment",
                           key_id=key.id, key_prefix=key.prefix, user_id=owner_id(session, key), actor=actor, ip=ip))


class KeyUsage:
    """Notes that a key was used, cheaply; see the module docstring."""

    def __init__(self, sessions: sessionmaker[Session], touch_every_s: float, audit_every_s: float) -> None:
        self._sessions = sessions
        self.touch_every_s = touch_every_s
        self.audit_every_s = audit_every_s
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}
        self._audited: dict[tuple[str, str | None], float] = {}

    def seen(self, key_hash: str, ip: str | None) -> None:
        """Called for every authenticated request; writes only when an interval has passed."""
        now = time.monotonic()
        with self._lock:
            touch = now - self._touched.get(key_hash, -float("inf")) >= self.touch_every_s
            audit = now - self._audited.get((key_hash, ip), -float("inf")) >= self.audit_every_s
            if not (touch or audit):
                return
            if len(self._touched) > _MAX_MARKERS or len(self._audited) > _MAX_MARKERS:
                self._touched.clear()
                self._audited.clear()
            if touch:
                self._touched[key_hash] = now
            if audit:
                self._audited[(key_hash, ip)] = now
        try:
            self._write(key_hash, ip, touch, audit)
        except SQLAlchemyError:
            # The request itself is fine; forget the markers so that the next one writes again.
            log.warning("could not note the use of a key; retrying on its next request", exc_info=True)
            with self._lock:
                self._touched.pop(key_hash, None)
                self._audited.pop((key_hash, ip), None)

    def _write(self, key_hash: str, ip: str | None, touch: bool, audit: bool) -> None:
        with self._sessions() as session:
            key: ApiKey | DeploymentKey | None = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
            if key is None:
                key = session.scalar(select(DeploymentKey).where(DeploymentKey.key_hash == key_hash))
            if key is None:
                return
            if touch:
                key.last_used_at = utcnow()
            if audit:
                record(session, "use", key, "key", ip)
            session.commit()


def entries(session: Session, limit: int = 100, user_id: int | None = None) -> list[AuditEntryPublic]:
    """The newest ``limit`` entries (of ``user_id``'s keys only, when given), newest first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(AuditEntry.user_id == user_id)
    rows = list(session.scalars(query))
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_({r.user_id for r in rows}))).all())
    return [AuditEntryPublic(id=r.id, at=as_utc(r.at), action=r.action, key_kind=r.key_kind,  # type: ignore[arg-type]
                             key_id=f"{'ak' if r.key_kind == 'api' else 'dk'}_{r.key_id}", key_prefix=r.key_prefix,
                             user=names.get(r.user_id), actor=r.actor, ip=r.ip) for r in rows]


__all__ = ["KeyUsage", "entries", "owner_id", "record"]
