"""A sweep for the quota keeps the unnamed chunks of an upload on its way (real SQLite, real
directory store); other sweeps drop every chunk nothing names."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

from sqlalchemy import update

from aiaas_backend import chunk_intake, dataset_sweep
from aiaas_backend.datasets import used_bytes
from aiaas_backend.db import make_engine, migrate, session_factory
from aiaas_backend.models import DatasetChunk, User, utcnow
from aiaas_backend.store import FileStore


def test_a_sweep_for_the_quota_keeps_chunks_recorded_since_it_was_told(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    store = FileStore(tmp_path / "store")
    try:
        with sessions() as session:
            user = User(name="carol")
            session.add(user)
            session.commit()
            old, new = os.urandom(1000), os.urandom(2000)
            chunk_intake.take(session, user, store, None, [(hashlib.sha256(c).hexdigest(), [c]) for c in (old, new)])
            # The first was recorded an hour ago (an upload given up on), the second just now (one on its way).
            session.execute(update(DatasetChunk).where(DatasetChunk.digest == hashlib.sha256(old).hexdigest())
                            .values(created_at=utcnow() - timedelta(hours=1)))
            session.commit()
            dataset_sweep.sweep(session, store, user, 3600, keep_since=utcnow() - dataset_sweep.IN_FLIGHT)
            assert used_bytes(session, user) == 2000
            dataset_sweep.sweep(session, store, user, 3600)
            assert used_bytes(session, user) == 0
            assert list(store.list("packs/")) == []
    finally:
        engine.dispose()
