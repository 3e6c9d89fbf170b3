"""Flushing dataset chunks to disk: a commit flushes the objects its new chunks are in (not the
whole file system), and a same-host batch that asks for it flushes what it wrote before
recording it. On a real directory store and a real SQLite file; os.fsync is observed, not
replaced."""

from __future__ import annotations

import hashlib
import os

import pytest
from sqlalchemy import select

from aiaas_backend import chunk_intake, chunk_packs
from aiaas_backend.db import make_engine, migrate, session_factory
from aiaas_backend.models import DatasetChunk, User
from aiaas_backend.store import FileStore, blob_key
from aiaas_backend.store.fs import FEW_SYNCS

BIG = chunk_packs.PACK_BELOW  # a chunk this size is a blob of its own


@pytest.fixture
def fsynced(monkeypatch) -> list[str]:
    """The paths os.fsync is called on from now (each call still flushes)."""
    calls: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_a_keyed_sync_flushes_those_objects_and_their_folders_only(tmp_path, fsynced):
    store = FileStore(tmp_path / "store")
    for key in ("packs/p1", "packs/p2", "blobs/ab/ab01", "other"):
        store.put_bytes(key, key.encode())
    store.sync(["packs/p1", "blobs/ab/ab01"])
    root = store.root
    assert sorted(fsynced) == sorted(str(p) for p in (
        root / "packs/p1", root / "blobs/ab/ab01", root / "packs", root / "blobs/ab"))
    # Not the whole store's sync: the time up to which everything is known flushed stays unset.
    assert not (root / ".synced").exists()


def test_many_keys_or_none_sync_the_whole_store(tmp_path, fsynced):
    store = FileStore(tmp_path / "store")
    keys = [f"packs/p{i}" for i in range(FEW_SYNCS + 1)]
    for key in keys:
        store.put_bytes(key, b"x")
    store.sync(keys)
    assert fsynced == [] and (store.root / ".synced").exists()  # one syncfs instead
    first = store.synced_until()
    store.sync()
    assert store.synced_until() >= first


def test_a_keyed_sync_of_a_missing_object_fails(tmp_path):
    """A version must not be committed naming bytes the store lacks."""
    store = FileStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        store.sync(["packs/gone"])


class RecordingStore(FileStore):
    """A directory store that notes each keyed sync and which of ``watch`` had rows by then."""

    def __init__(self, root, sessions, watch: set[str]) -> None:
        super().__init__(root)
        self.sessions, self.watch, self.syncs = sessions, watch, []

    def sync(self, keys=None) -> None:
        with self.sessions() as other:  # what another transaction sees at this moment
            recorded = set(other.scalars(select(DatasetChunk.digest).where(DatasetChunk.digest.in_(self.watch))))
        self.syncs.append((None if keys is None else sorted(keys), recorded))
        super().sync(keys)


def _chunks(*sizes: int) -> list[tuple[str, list[bytes]]]:
    out = []
    for i, size in enumerate(sizes):
        data = bytes([i + 1]) * size
        out.append((hashlib.sha256(data).hexdigest(), [data]))
    return out


@pytest.mark.parametrize("durable", [True, False])
def test_take_flushes_what_it_wrote_before_recording_it_when_asked(tmp_path, durable):
    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    chunks = _chunks(10, 20, BIG)  # two small ones (one pack) and a blob
    store = RecordingStore(tmp_path / "store", sessions, {d for d, _ in chunks})
    try:
        with sessions() as session:
            user = User(name="alice")
            session.add(user)
            session.commit()
            new = chunk_intake.take(session, user, store, None, chunks, verified=True, durable=durable)
            assert set(new) == {d for d, _ in chunks}
            where = chunk_packs.locations(session, new)
        pack = where[chunks[0][0]][0]
        assert where[chunks[1][0]][0] == pack and chunks[2][0] not in where
        if durable:
            # Flushed once, the pack and the blob, while no row named them yet.
            assert store.syncs == [(sorted([pack, blob_key(chunks[2][0])]), set())]
        else:
            assert store.syncs == []  # left to the commit
    finally:
        engine.dispose()


def test_the_keys_of_chunks_are_their_packs_or_their_blobs(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    store = FileStore(tmp_path / "store")
    chunks = _chunks(10, 20, BIG)
    try:
        with sessions() as session:
            user = User(name="bob")
            session.add(user)
            session.commit()
            chunk_intake.take(session, user, store, None, chunks, verified=True)
            digests = [d for d, _ in chunks]
            pack = chunk_packs.locations(session, digests[:1])[digests[0]][0]
            assert chunk_packs.keys(session, digests, limit=3) == {pack, blob_key(digests[2])}
            assert chunk_packs.keys(session, digests, limit=2) is None  # too many: the whole store
            store.sync(chunk_packs.keys(session, digests, limit=3))  # every one of them is there
    finally:
        engine.dispose()



@pytest.mark.parametrize("flush", [True, False])
def test_a_socket_batch_is_flushed_before_its_reply_only_when_the_sdk_asks(tmp_path, flush):
    """The SDK's SameHost asks (Early does, for a re-upload's files), the backend's UploadSocket
    flushes that batch's pack before recording it; a first upload's batches are left to the commit."""
    import json

    from aiaas_backend.models import ApiKey
    from aiaas_backend.upload_socket import UploadSocket
    from aiaas_sdk._dataset_same_host import SameHost, _connect
    from aiaas_sdk._hashing import CHUNK_BYTES, HashCache

    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(5000))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    store = RecordingStore(tmp_path / "store", sessions, {digest})
    server = UploadSocket(tmp_path / "upload", sessions, store, None, CHUNK_BYTES)
    server.start()
    try:
        with sessions() as session:
            user = User(name="carol")
            session.add(user)
            session.flush()
            key = ApiKey(user_id=user.id, key_hash="h" * 64, prefix="aiaas_x")
            session.add(key)
            session.commit()
            ticket, answer = server.tickets.issue(key.id)
        sock = _connect(str(server.path))
        sock.sendall(json.dumps({"ticket": ticket, "chunk_bytes": CHUNK_BYTES}).encode())
        assert json.loads(sock.recv(65536))["answer"] == answer
        conn = SameHost(sock)
        try:
            got = conn.read([(str(path), HashCache.stamp(os.stat(path)))], lambda _n: None, flush=flush)
        finally:
            conn.close()
        assert got == [(5000, [digest])]
        with sessions() as session:
            pack = chunk_packs.locations(session, [digest])[digest][0]
        assert store.syncs == ([([pack], set())] if flush else [])
    finally:
        server.stop()
        engine.dispose()
