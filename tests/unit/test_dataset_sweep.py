"""A sweep for the quota keeps the unnamed chunks of an upload on its way (real SQLite, real
directory store); other sweeps drop every chunk nothing names."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import pytest
from sqlalchemy import update

from aiaas_backend import chunk_intake, chunk_packs, dataset_sweep
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


class SweepingStore(FileStore):
    """Runs ``during_write`` once, at the next write: another request, between an upload's lookup
    of what is stored and its commit."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.during_write = None

    def put_parts(self, key, parts):
        hook, self.during_write = self.during_write, None
        if hook is not None:
            hook()
        return super().put_parts(key, parts)


@pytest.mark.parametrize("size", [3000, chunk_packs.PACK_BELOW], ids=["packed", "blob"])
def test_a_chunk_whose_last_holder_lets_go_while_another_user_sends_it_is_stored_again(tmp_path, size):
    """Dave kept a chunk; Erin sends the same bytes (and a new chunk). Between Erin's lookup, which
    finds Dave's copy, and her commit, Dave's sweep drops the chunk and deletes its bytes. Erin's
    upload must not end up naming bytes the store no longer has."""
    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    store = SweepingStore(tmp_path / "store")
    shared, other = os.urandom(size), os.urandom(size)
    digest = hashlib.sha256(shared).hexdigest()
    try:
        with sessions() as session:
            dave, erin = User(name="dave"), User(name="erin")
            session.add_all([dave, erin])
            session.commit()
            chunk_intake.take(session, dave, store, None, [(digest, [shared])])

            def dave_lets_go() -> None:
                with sessions() as other_session:
                    dataset_sweep.sweep(other_session, store, dave, 3600)  # nothing of his names it

            store.during_write = dave_lets_go
            chunk_intake.take(session, erin, store, None, [(digest, [shared]),
                                                            (hashlib.sha256(other).hexdigest(), [other])])
            assert store.during_write is None  # the sweep ran in between
            assert used_bytes(session, dave) == 0 and used_bytes(session, erin) == 2 * size
            where = chunk_packs.locations(session, [digest]).get(digest)
            assert b"".join(chunk_packs.read(store, digest, where)) == shared
    finally:
        engine.dispose()
