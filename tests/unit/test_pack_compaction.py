"""Pack compaction on a real directory store and a real SQLite file: which packs are rewritten,
in what order the steps happen, and what a reader or another deletion running meanwhile sees."""

from __future__ import annotations

import hashlib
import os

import pytest
from sqlalchemy import select

from aiaas_backend import chunk_intake, chunk_packs, pack_compaction
from aiaas_backend.db import make_engine, migrate, session_factory
from aiaas_backend.models import DatasetChunk, PackedChunk, User
from aiaas_backend.store import FileStore


@pytest.fixture
def db(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def _pack(session, store, user, count: int, size: int = 1000) -> tuple[str, list[str], dict[str, bytes]]:
    """``count`` new small chunks, stored as one pack; its key, their digests, their bytes."""
    data = {}
    for _ in range(count):
        chunk = os.urandom(size)
        data[hashlib.sha256(chunk).hexdigest()] = chunk
    chunk_intake.take(session, user, store, None, [(d, [c]) for d, c in data.items()], verified=True)
    digests = list(data)
    packs = {loc[0] for loc in chunk_packs.locations(session, digests).values()}
    assert len(packs) == 1
    return packs.pop(), digests, data


def _delete(sessions, digests: list[str]) -> None:
    """What deleting the last version naming these chunks does to their rows."""
    with sessions() as session:
        for d in digests:
            session.query(DatasetChunk).filter(DatasetChunk.digest == d).delete()
        chunk_packs.forget(session, digests)
        session.commit()


def _read(session, store, digest: str) -> bytes:
    return b"".join(chunk_packs.read(store, digest, chunk_packs.locations(session, [digest]).get(digest)))


def _user(sessions) -> User:
    with sessions() as session:
        user = User(name="alice")
        session.add(user)
        session.commit()
        return user


def _sparse_pack(db, store) -> tuple[User, str, str, bytes]:
    """A pack of four chunks, one kept; the user, the pack, the kept chunk's digest and bytes."""
    user = _user(db)
    with db() as session:
        pack, digests, data = _pack(session, store, user, 4)
    _delete(db, digests[1:])
    return user, pack, digests[0], data[digests[0]]


def test_only_mostly_deleted_packs_are_rewritten_and_their_kept_chunks_share_one_new_pack(tmp_path, db):
    store = FileStore(tmp_path / "store")
    user = _user(db)
    with db() as session:
        p1, d1, data1 = _pack(session, store, user, 10)  # 3 of 10 kept: rewritten
        p2, d2, data2 = _pack(session, store, user, 10)  # 6 of 10 kept: stays
        p3, d3, data3 = _pack(session, store, user, 5)  # 1 of 5 kept: rewritten
    _delete(db, d1[3:] + d2[6:] + d3[1:])
    with db() as session:
        done = pack_compaction.compact(session, store, {p1, p2, p3})
        assert (done.packs, done.before, done.after, done.freed) == (2, 15_000, 4_000, 11_000)
        packs = set(store.list("packs/"))
        assert p2 in packs and p1 not in packs and p3 not in packs and len(packs) == 2
        (new,) = packs - {p2}
        assert store.size(new) == 4_000
        where = chunk_packs.locations(session, d1[:3] + d2[:6] + d3[:1])
        assert {where[d][0] for d in d1[:3] + d3[:1]} == {new} and {where[d][0] for d in d2[:6]} == {p2}
        for d in d1[:3]:
            assert _read(session, store, d) == data1[d]
        assert _read(session, store, d3[0]) == data3[d3[0]]
        # Every pack now: nothing more to do.
        assert pack_compaction.compact(session, store).packs == 0


class OrderedStore(FileStore):
    """Notes, at each keyed sync, whether a row names the synced pack yet (from another
    transaction); ``during_sync`` runs then (another deletion, between the copy and the move)."""

    def __init__(self, root, sessions, during_sync=None) -> None:
        super().__init__(root)
        self.sessions, self.during_sync, self.syncs = sessions, during_sync, []

    def sync(self, keys=None) -> None:
        super().sync(keys)
        with self.sessions() as other:
            named = other.scalars(select(PackedChunk.digest).where(PackedChunk.pack.in_(list(keys or [])))).all()
        self.syncs.append((sorted(keys or []), len(named)))
        if self.during_sync is not None:
            self.during_sync()


def test_the_new_pack_is_flushed_before_a_row_names_it(tmp_path, db):
    store = OrderedStore(tmp_path / "store", db)
    user = _user(db)
    with db() as session:
        pack, digests, _ = _pack(session, store, user, 4)
    _delete(db, digests[1:])
    with db() as session:
        assert pack_compaction.compact(session, store, {pack}).packs == 1
        new = chunk_packs.locations(session, digests[:1])[digests[0]][0]
    assert store.syncs == [([new], 0)]  # flushed while nothing named it


def test_a_chunk_whose_bytes_do_not_match_stays_with_its_pack(tmp_path, db):
    store = FileStore(tmp_path / "store")
    user = _user(db)
    with db() as session:
        pack, digests, data = _pack(session, store, user, 5)
        bad = chunk_packs.locations(session, digests[:1])[digests[0]]
    _delete(db, digests[2:])
    path = store.local_path(pack)
    raw = bytearray(path.read_bytes())
    raw[bad[1]] ^= 0xFF  # one flipped bit of a kept chunk: disk rot
    path.write_bytes(bytes(raw))
    with db() as session:
        done = pack_compaction.compact(session, store, {pack})
        assert done.packs == 0  # the old pack still holds a row, so it stays
        assert chunk_packs.locations(session, digests[:1])[digests[0]][0] == pack
        moved = chunk_packs.locations(session, digests[1:2])[digests[1]][0]
        assert moved != pack and _read(session, store, digests[1]) == data[digests[1]]


def test_a_chunk_deleted_meanwhile_is_not_moved_and_its_copy_is_reclaimed_later(tmp_path, db):
    """Another deletion drops a kept chunk's row between the copy and the move: its row stays
    dropped (no error), and the copy left unnamed in the new pack goes at that pack's compaction."""
    user = _user(db)
    store = OrderedStore(tmp_path / "store", db)
    with db() as session:
        pack, digests, data = _pack(session, store, user, 10)
    _delete(db, digests[3:])
    store.during_sync = lambda: (_delete(db, digests[1:3]), setattr(store, "during_sync", None))
    with db() as session:
        assert pack_compaction.compact(session, store, {pack}).packs == 1
        where = chunk_packs.locations(session, digests[:3])
        assert list(where) == [digests[0]]  # the two dropped meanwhile were not brought back
        new = where[digests[0]][0]
        assert store.size(new) == 3_000  # their copies are in it, unnamed
        done = pack_compaction.compact(session, store, {new})
        assert (done.packs, done.freed) == (1, 2_000)
        assert _read(session, store, digests[0]) == data[digests[0]]


def test_a_reader_that_looked_a_chunk_up_before_a_compaction_finds_it_after(tmp_path, db):
    store = FileStore(tmp_path / "store")
    _user_, pack, digest, data = _sparse_pack(db, store)
    with db() as session:
        stale = chunk_packs.locations(session, [digest])[digest]
        assert pack_compaction.compact(session, store, {pack}).packs == 1
        with pytest.raises(KeyError):  # the pack it was in is gone
            b"".join(chunk_packs.read(store, digest, stale))
        relocated = chunk_packs.read(store, digest, stale, lambda: chunk_packs.locations(session, [digest]).get(digest))
        assert b"".join(relocated) == data


def test_two_compactions_of_one_pack_at_once_leave_one_pack(tmp_path, db):
    """Another process compacts the same pack between this one's copy and its move: the rows stay
    where that one put them, and this one's new pack, named by nothing, goes."""
    user = _user(db)
    store = OrderedStore(tmp_path / "store", db)
    with db() as session:
        pack, digests, data = _pack(session, store, user, 6)
    _delete(db, digests[2:])

    def other_process() -> None:
        store.during_sync = None
        with db() as other:
            assert pack_compaction.compact(other, store, {pack}).packs == 1

    store.during_sync = other_process
    with db() as session:
        pack_compaction.compact(session, store, {pack})
        (left,) = store.list("packs/")  # no pack named by nothing
        assert {loc[0] for loc in chunk_packs.locations(session, digests[:2]).values()} == {left}
        assert [_read(session, store, d) for d in digests[:2]] == [data[d] for d in digests[:2]]


class CompactingStore(FileStore):
    """Compacts ``pack`` (from another session) right before the first read from it: what a
    deletion's compaction does to a reader that looked its chunks up a moment earlier."""

    def __init__(self, root, sessions) -> None:
        super().__init__(root)
        self.sessions, self.pack, self.compacted = sessions, None, 0

    def read_range(self, key, offset, size):
        if key == self.pack:
            self.pack = None
            with self.sessions() as other:
                self.compacted = pack_compaction.compact(other, self, {key}).packs
        return super().read_range(key, offset, size)


def test_a_chunk_read_through_the_api_is_found_in_its_new_pack(tmp_path, db):
    from aiaas_backend.routes.chunk_reads import chunk_response

    store = CompactingStore(tmp_path / "store", db)
    _user_, pack, digest, data = _sparse_pack(db, store)
    store.pack = pack
    with db() as session:
        assert chunk_response(session, store, digest).body == data
    assert store.compacted == 1


def test_a_local_run_placing_its_dataset_finds_chunks_in_their_new_pack(tmp_path, db):
    from aiaas_backend import manifests
    from aiaas_backend.config import Settings
    from aiaas_backend.executors.run_data import RunData
    from aiaas_backend.models import Dataset, DatasetVersion, Run

    store = CompactingStore(tmp_path / "store", db)
    user, pack, digest, data = _sparse_pack(db, store)
    built = manifests.whole([{"path": "a.bin", "size": len(data), "chunks": [digest]}])
    with db() as session:
        dataset = Dataset(user_id=user.id, name="d", next_version=2)
        session.add(dataset)
        session.flush()
        version = DatasetVersion(dataset_id=dataset.id, version=1, manifest=built.row(), digest=built.digest,
                                 files=1, bytes=len(data))
        session.add(version)
        session.flush()
        run = Run(id="r" * 32, user_id=user.id, name="reader", status="queued",
                  datasets=[{"name": "d", "version": 1, "version_id": version.id}])
        session.add(run)
        session.commit()
        store.pack = pack
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        placed = RunData(Settings(data_dir=tmp_path / "data"), store, copy=True).place(session, run, run_dir)
    assert (placed["d"] / "a.bin").read_bytes() == data
    assert store.compacted == 1
