"""The store contract, kept alike by the directory store and S3-compatible storage (SeaweedFS)."""

from __future__ import annotations

import io
import os
import uuid

import pytest

from aiaas_backend.store import FileStore, Store, blob_key


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "file":
        return FileStore(tmp_path / "store")
    from aiaas_backend.store.s3 import S3Store

    from ..s3_server import ACCESS_KEY, SECRET_KEY

    server = request.getfixturevalue("s3_server")
    s3 = S3Store(f"s3://aiaas-contract/{uuid.uuid4().hex[:8]}", endpoint_url=server.endpoint,
                 access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    s3.ensure_bucket()
    return s3


def test_put_get_exists_list_delete(store):
    assert not store.exists("a/b.txt")
    assert store.put_bytes("a/b.txt", b"hello") == 5
    store.put_bytes("a/c/d.bin", b"")
    store.put_bytes("other", b"x")
    assert store.get_bytes("a/b.txt") == b"hello" and store.exists("a/b.txt")
    assert store.get_bytes("a/c/d.bin") == b""
    assert sorted(store.list("a/")) == ["a/b.txt", "a/c/d.bin"]
    store.put_bytes("a/b.txt", b"replaced")
    assert store.get_bytes("a/b.txt") == b"replaced"
    store.delete("a/b.txt")
    store.delete("a/b.txt")  # twice: no error
    assert not store.exists("a/b.txt")
    with pytest.raises(KeyError):
        store.open("a/b.txt")


def test_streams_large_objects_and_blobs_by_digest(store):
    data = os.urandom(9 * 1024 * 1024 + 3)
    assert store.put("big", io.BytesIO(data)) == len(data)
    blocks = list(store.iter_bytes("big", block=1024 * 1024))
    assert max(len(b) for b in blocks) <= 1024 * 1024 and b"".join(blocks) == data
    digest = store.put_blob(b"content")
    assert store.put_blob(b"content") == digest
    assert store.get_bytes(blob_key(digest)) == b"content"


def test_read_range_reads_part_of_an_object(store):
    """How a packed chunk is read: a range of its pack."""
    data = os.urandom(3 * 1024 * 1024 + 11)
    store.put_bytes("packs/p1", data)
    assert store.read_range("packs/p1", 0, 10) == data[:10]
    assert store.read_range("packs/p1", 2 * 1024 * 1024 + 5, 70_000) == data[2 * 1024 * 1024 + 5:][:70_000]
    assert store.read_range("packs/p1", len(data) - 4, 100) == data[-4:]  # past the end: what there is
    assert store.read_range("packs/p1", 5, 0) == b""
    with pytest.raises(KeyError):
        store.read_range("packs/missing", 0, 10)


def test_refuses_keys_that_escape(store):
    for key in ("../x", "/abs", "a/../../b", "a//b", ""):
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")


def test_put_file_and_get_file_move_whole_files(store, tmp_path):
    """How a run's checkpoints and weights go in and come back (run_files.py)."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    src = tmp_path / "weights.pt"
    src.write_bytes(data)
    assert store.put_file("runs/r1/weights.pt", src) == len(data)
    # The caller replaces its file by a rename, as uploads do: the stored object stays as it was.
    newer = tmp_path / "newer.pt"
    newer.write_bytes(b"newer")
    os.replace(newer, src)
    out = tmp_path / "out"
    out.mkdir()
    assert store.get_file("runs/r1/weights.pt", out / "w.pt") == len(data)
    assert (out / "w.pt").read_bytes() == data
    with pytest.raises(KeyError):
        store.get_file("runs/r1/missing.pt", out / "missing.pt")
    assert sorted(p.name for p in out.iterdir()) == ["w.pt"]  # nothing half-written left behind
