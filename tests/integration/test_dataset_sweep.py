"""Uploads that are never committed stop holding chunks (a real server, real SQLite, the real
directory store): an interrupted upload started again is closed by the new one's commit, one
left open past AIAAS_DATASET_UPLOAD_TTL_S is closed before an upload is refused over the quota,
and the SDK opens its upload again if another one of the same dataset was committed first."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

import aiaas
from aiaas_sdk import _datasets

from ..conftest import wait_until

TRAINS = False  # no run here: no warm worker needed


def _used(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/datasets", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()["used_bytes"]


def _interrupted(url: str, key: str, name: str, chunks: list[bytes]) -> str:
    """An upload opened and sent whole over HTTP but never committed (the notebook stopped); its id."""
    auth = {"Authorization": f"Bearer {key}"}
    digests = [hashlib.sha256(c).hexdigest() for c in chunks]
    manifest = {"files": [{"path": f"{i}.bin", "size": len(c), "chunks": [d]}
                          for i, (c, d) in enumerate(zip(chunks, digests, strict=True))],
                "chunk_sizes": {d: len(c) for c, d in zip(chunks, digests, strict=True)}}
    resp = httpx.post(f"{url}/v1/datasets/{name}/uploads", headers=auth, json={"manifest": manifest}, timeout=30)
    assert resp.status_code == 201, resp.text
    body = b"".join(d.encode() + len(c).to_bytes(8, "big") + c for c, d in zip(chunks, digests, strict=True))
    assert httpx.post(f"{url}/v1/datasets/chunks", headers=auth, content=body, timeout=30).status_code == 200
    return resp.json()["id"]


def check_an_interrupted_upload_started_again(backend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An upload interrupted and started again after an edit: the new commit closes the old
    session (its commit gets 404 naming why) and its chunks stop counting; deleting the version
    then gives back every byte. Also run on PostgreSQL (test_other_stores.py)."""
    client = backend.client()
    before = _used(backend.url, backend.key)
    a, b, old_c, new_c = (os.urandom(5000) for _ in range(4))
    stale = _interrupted(backend.url, backend.key, "interrupted", [a, b, old_c])
    assert _used(backend.url, backend.key) == before + 15_000
    folder = tmp_path / "interrupted"
    folder.mkdir()
    for i, data in enumerate((a, b, new_c)):  # 2.bin was edited before the upload was started again
        (folder / f"{i}.bin").write_bytes(data)
    version = client.upload("interrupted", folder, progress=False)
    # The commit closed the interrupted upload: 2.bin's old bytes are no longer the user's.
    auth = {"Authorization": f"Bearer {backend.key}"}
    for data, kept in ((a, True), (b, True), (new_c, True), (old_c, False)):
        resp = httpx.get(f"{backend.url}/v1/datasets/interrupted/chunks/{hashlib.sha256(data).hexdigest()}",
                         headers=auth, timeout=30)
        assert resp.status_code == (200 if kept else 404)
    used = _used(backend.url, backend.key)  # (chunks nothing named, sent before this test, went too)
    assert used <= before + 15_000
    resp = httpx.post(f"{backend.url}/v1/datasets/interrupted/uploads/{stale}/commit", headers=auth, timeout=30)
    assert resp.status_code == 404 and resp.json()["code"] == "upload_not_found"
    assert "replaced by a newer upload" in resp.json()["detail"]
    version.delete()
    assert _used(backend.url, backend.key) == used - 15_000


def test_an_interrupted_upload_started_again_keeps_nothing_once_deleted(make_backend, tmp_path):
    backend = make_backend(name="sweep")
    check_an_interrupted_upload_started_again(backend, tmp_path)
    store = backend.data_dir / "store"
    assert [p for p in store.rglob("*") if p.is_file() and p.name != ".synced"] == []


def test_an_upload_left_open_too_long_gives_way_to_one_over_the_quota(make_backend, tmp_path):
    """A young open upload keeps its chunks (the new upload is refused with 413); once it is older
    than the TTL, the same upload goes through (same-host path: the socket's batch sweeps too)."""
    backend = make_backend(name="ttl", AIAAS_DATASET_UPLOAD_TTL_S="2", AIAAS_USER_QUOTA_BYTES="25000")
    client = backend.client()
    started = time.monotonic()
    _interrupted(backend.url, backend.key, "old", [os.urandom(6000) for _ in range(4)])
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.bin").write_bytes(os.urandom(6000))
    with pytest.raises(aiaas.PayloadTooLarge) as refused:
        client.upload("new", folder, progress=False)
    assert refused.value.status_code == 413 and "quota is 25000 bytes" in str(refused.value)
    assert _used(backend.url, backend.key) == 24_000

    def upload_once_past_the_ttl() -> int | None:
        try:
            return client.upload("new", folder, progress=False).version
        except aiaas.PayloadTooLarge:  # the abandoned upload is not two seconds old yet
            assert time.monotonic() - started < 2.5, "still refused after the TTL"
            return None

    assert wait_until(upload_once_past_the_ttl, timeout=30, interval=0.2, what="the TTL to pass") == 1
    assert _used(backend.url, backend.key) == 12_000


def test_the_sdk_opens_its_upload_again_when_another_was_committed_first(make_backend, tmp_path, monkeypatch):
    """Another notebook opens an upload of the same dataset after ours and commits it first: ours
    is closed, and client.upload opens it again and commits it as the next version."""
    backend = make_backend(name="race")
    client = backend.client()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "t.bin").write_bytes(os.urandom(3000))
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "o.bin").write_bytes(os.urandom(3000))
    real = _datasets.commit_upload
    raced: list[int] = []

    def commit_after_theirs(name, upload_id):  # type: ignore[no-untyped-def]
        if not raced:  # our first commit (theirs, made from here, commits the plain way)
            raced.append(0)
            other = aiaas.Client(backend.url, backend.key, timeout=30)
            raced[0] = other.upload(name, theirs, progress=False, same_host=False).version
            other.close()
        return (yield from real(name, upload_id))

    monkeypatch.setattr(_datasets, "commit_upload", commit_after_theirs)
    version = client.upload("shared", ours, progress=False, same_host=False)
    assert raced == [1] and version.version == 2
    assert client.dataset("shared").files == 1 and client.dataset("shared", version=1).files == 1
    manifest = httpx.get(f"{backend.url}/v1/datasets/shared/manifest",
                         headers={"Authorization": f"Bearer {backend.key}"}, timeout=30).json()
    assert [f["path"] for f in manifest["files"]] == ["o.bin"]
