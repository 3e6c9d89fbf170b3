"""Dataset chunk intake over real HTTP: batches are all or nothing, PUTs are idempotent under concurrency.

``check_chunk_intake`` also runs against PostgreSQL (test_datasets.py), where the rows go in
through a different dialect's INSERT ... ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import hashlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..conftest import wait_until

TRAINS = False  # no test here starts a run: its backends need no warm worker (tests/conftest.py)


def _frame(chunks: list[bytes], digests: list[str] | None = None) -> bytes:
    digests = digests or [hashlib.sha256(c).hexdigest() for c in chunks]
    return b"".join(d.encode() + len(c).to_bytes(8, "big") + c for d, c in zip(digests, chunks, strict=True))


def check_chunk_intake(url: str, key: str) -> None:
    """Batches are all-or-nothing, and the same chunk sent many times at once is kept once."""
    auth = {"Authorization": f"Bearer {key}"}

    def used() -> int:
        return httpx.get(f"{url}/v1/datasets", headers=auth).json()["used_bytes"]

    before = used()
    good, bad = os.urandom(1000), os.urandom(2000)
    resp = httpx.post(f"{url}/v1/datasets/chunks", headers=auth,
                      content=_frame([good, bad], [hashlib.sha256(good).hexdigest(), "0" * 64]))
    assert resp.status_code == 400 and resp.json()["code"] == "chunk_hash_mismatch"
    assert "0" * 64 in resp.json()["detail"]  # names the chunk
    assert used() == before  # the good chunk of a refused batch is not recorded either
    resp = httpx.post(f"{url}/v1/datasets/chunks", headers=auth, content=_frame([good])[:-10])
    assert resp.status_code == 400 and resp.json()["code"] == "bad_batch"
    digest = hashlib.sha256(good).hexdigest()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.put(f"{url}/v1/datasets/chunks/{digest}", content=good,
                                                  headers=auth, timeout=60).status_code, range(16)))
    assert codes == [200] * 16 and used() == before + len(good)


def test_chunk_batches_are_all_or_nothing_and_concurrent_puts_keep_one_copy(backend):
    check_chunk_intake(backend.url, backend.new_key("intake"))


def test_chunks_a_power_cut_took_are_forgotten_at_start_and_sent_again(make_backend, tmp_path):
    """A commit flushes its chunks; chunks recorded after the store's last whole sync whose bytes
    are gone or short at the next start (what a power cut leaves) are forgotten, so an upload
    sends them again."""
    backend = make_backend(name="power")
    client = backend.client()
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "kept.bin").write_bytes(os.urandom(3000))
    assert client.upload("power", folder, progress=False).version == 1
    store = backend.data_dir / "store"
    # A commit of a few chunks flushes their objects only: no whole sync has been noted yet.
    assert not (store / ".synced").exists()

    # Chunks sent after that sync (an upload interrupted before its commit), then a power cut.
    # Small ones go into a pack per request (one each here): one pack lost, one cut short, one
    # intact; a full 4 MiB chunk is a blob of its own: lost.
    chunks = {name: os.urandom(5000) for name in ("lost", "short", "intact")}
    chunks["big"] = os.urandom(4 * 1024 * 1024)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in chunks.items()}
    auth = {"Authorization": f"Bearer {backend.key}"}
    for data in chunks.values():
        resp = httpx.post(f"{backend.url}/v1/datasets/chunks", headers=auth, content=_frame([data]), timeout=60)
        assert resp.json()["stored"] == 1
    backend.stop(signal.SIGKILL)
    packs = {p.read_bytes(): p for p in (store / "packs").iterdir()}
    packs[chunks["lost"]].unlink()
    with open(packs[chunks["short"]], "r+b") as f:
        f.truncate(100)
    (store / "blobs" / digests["big"][:2] / digests["big"]).unlink()
    backend.start(port=backend.port)

    for name, data in chunks.items():
        (folder / f"{name}.bin").write_bytes(data)
    v2 = client.upload("power", folder, progress=False)
    assert (v2.version, v2.sent_chunks) == (2, 3)  # the lost, the short and the big one travel again
    assert (store / ".synced").exists()  # the start's check ended with a whole sync
    assert (store / "blobs" / digests["big"][:2] / digests["big"]).read_bytes() == chunks["big"]
    stored = b"".join(p.read_bytes() for p in (store / "packs").iterdir())
    for name in ("lost", "short", "intact"):
        assert stored.count(chunks[name]) == 1  # the short pack went: no second copy of its head
    assert client.dataset("power").files == 5


def test_a_version_is_not_committed_over_bytes_the_store_lost(make_backend, tmp_path):
    """A commit flushes the objects its new chunks are in: one that is gone (a disk error, a
    hand-deleted file) refuses the commit with 503 naming the store, and no version appears."""
    backend = make_backend(name="lost")
    auth = {"Authorization": f"Bearer {backend.key}"}
    data = os.urandom(5000)
    digest = hashlib.sha256(data).hexdigest()
    resp = httpx.post(f"{backend.url}/v1/datasets/chunks", headers=auth, content=_frame([data]), timeout=60)
    assert resp.json()["stored"] == 1
    for pack in (backend.data_dir / "store" / "packs").iterdir():
        pack.unlink()
    manifest = {"files": [{"path": "a.bin", "size": len(data), "chunks": [digest]}], "chunk_sizes": {digest: len(data)}}
    resp = httpx.post(f"{backend.url}/v1/datasets/lost/uploads", params={"commit": "true"}, headers=auth,
                      json={"manifest": manifest}, timeout=60)
    assert resp.status_code == 503 and resp.json()["code"] == "store_unavailable"
    assert "could not flush" in resp.json()["detail"] and "upload again" in resp.json()["detail"]
    assert httpx.get(f"{backend.url}/v1/datasets/lost", headers=auth).status_code == 404


def test_packs_go_once_no_kept_chunk_is_in_them(make_backend, tmp_path):
    """Small files share a pack; deleting a version frees its chunks: a pack mostly holding deleted
    ones is rewritten with the kept ones, and a pack goes with its last one."""
    backend = make_backend(name="packs")
    client = backend.client()
    packs = backend.data_dir / "store" / "packs"
    folder = tmp_path / "data"
    folder.mkdir()
    a = os.urandom(3000)
    (folder / "a.bin").write_bytes(a)
    b = os.urandom(4000)
    (folder / "b.bin").write_bytes(b)
    v1 = client.upload("p", folder, progress=False)
    assert v1.sent_chunks == 2 and len(list(packs.iterdir())) == 1  # both in one pack
    (folder / "b.bin").unlink()
    (folder / "c.bin").write_bytes(os.urandom(5000))
    v2 = client.upload("p", folder, progress=False)
    assert v2.sent_chunks == 1 and len(list(packs.iterdir())) == 2  # a.bin's chunk is not sent again
    v1.delete()
    # b.bin's chunk is forgotten. Its pack also holds a.bin's, which version 2 names: it is
    # rewritten with a.bin's chunk alone, soon after the deletion (pack_compaction).
    wait_until(lambda: all(b not in p.read_bytes() for p in packs.iterdir()), timeout=30,
               what="b.bin's bytes gone from the store")
    assert len(list(packs.iterdir())) == 2 and sum(p.read_bytes().count(a) for p in packs.iterdir()) == 1
    assert client.datasets()[0].ref == "p:2"
    v2.delete()
    assert list(packs.iterdir()) == []
