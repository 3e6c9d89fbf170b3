"""A re-upload hands its changed files to a backend on this machine while the folder is still
being stat'ed (aiaas_sdk/_dataset_early.py): the backend reads them before the walk ends, what
it read is what the version holds, and its refusals reach the caller as before."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from aiaas import PayloadTooLarge
from aiaas_sdk._dataset_early import Early
from aiaas_sdk._dataset_same_host import Near
from aiaas_sdk._datasets import _NoBar
from aiaas_sdk._hashing import HashCache, cache_path

from ..conftest import wait_until

TRAINS = False  # no test here starts a run: its backends need no warm worker (tests/conftest.py)

CHUNK = 4 * 1024 * 1024


def _chunks(path: Path) -> list[str]:
    data = path.read_bytes()
    return [hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)]


def _manifest(backend, name: str) -> dict[str, list[str]]:
    resp = httpx.get(f"{backend.url}/v1/datasets/{name}/manifest", headers={"Authorization": f"Bearer {backend.key}"})
    resp.raise_for_status()
    return {f["path"]: f["chunks"] for f in resp.json()["files"]}


def test_a_changed_file_is_read_by_the_backend_before_the_caller_finishes(make_backend, tmp_path):
    backend = make_backend()
    client = backend.client()
    path = tmp_path / "changed.bin"
    path.write_bytes(np.random.default_rng(1).bytes(CHUNK + 123))
    near = Near(client, True)
    early = Early(near, _NoBar)
    try:
        stamp = HashCache.stamp(os.stat(path))
        early.add("changed.bin", str(path), stamp)
        # Read, hashed and stored while this thread goes on (finish() not called yet).
        wait_until(lambda: near.conn is not None and near.conn.stored_bytes == CHUNK + 123, timeout=30,
                   what="the backend storing the file handed to it early")
        found = early.finish()
    finally:
        near.close()
    assert found == {"changed.bin": (CHUNK + 123, _chunks(path))}


def test_a_reupload_holds_the_changed_bytes_and_notes_them_in_the_hash_cache(make_backend, tmp_path):
    backend = make_backend()
    client = backend.client()
    folder = tmp_path / "data"
    rng = np.random.default_rng(2)
    for i in range(40):
        (folder / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (folder / f"d{i % 4}" / f"f{i:02d}.bin").write_bytes(rng.bytes(1000 + i))
    (folder / "big.bin").write_bytes(rng.bytes(2 * CHUNK + 5))
    client.upload("early", folder, progress=False)
    changed = [folder / "d1" / "f05.bin", folder / "d3" / "f39.bin", folder / "big.bin"]
    for path in changed:
        path.write_bytes(rng.bytes(path.stat().st_size))
    v2 = client.upload("early", folder, progress=False)
    assert (v2.version, v2.sent_bytes) == (2, sum(p.stat().st_size for p in changed))
    assert _manifest(backend, "early") == {p.relative_to(folder).as_posix(): _chunks(p)
                                           for p in folder.rglob("*.bin")}
    # Noted in the hash cache as the backend read them (an upload of these files elsewhere
    # over HTTP reads none of them).
    cache = HashCache(cache_path())
    try:
        cache.load(str(p) for p in changed)
        assert all(cache.get(str(p), HashCache.stamp(os.stat(p))) == _chunks(p) for p in changed)
    finally:
        cache.close()


def test_a_reupload_over_the_quota_is_refused_and_the_last_version_stays(make_backend, tmp_path):
    backend = make_backend(AIAAS_USER_QUOTA_BYTES=str(CHUNK))
    client = backend.client()
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "small.bin").write_bytes(b"x" * 1000)
    assert client.upload("capped", folder, progress=False).version == 1
    (folder / "small.bin").write_bytes(np.random.default_rng(3).bytes(CHUNK + 1))
    with pytest.raises(PayloadTooLarge, match="quota"):
        client.upload("capped", folder, progress=False)
    assert client.dataset("capped").version == 1
    (folder / "small.bin").write_bytes(b"y" * 1000)  # back under the quota: the next one goes through
    assert client.upload("capped", folder, progress=False).version == 2


def test_a_reupload_without_the_socket_goes_over_http(make_backend, tmp_path):
    backend = make_backend(AIAAS_UPLOAD_SOCKET="false")
    client = backend.client()
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(5):
        (folder / f"f{i}.bin").write_bytes(os.urandom(2000))
    client.upload("far", folder, progress=False)
    (folder / "f2.bin").write_bytes(os.urandom(3000))
    v2 = client.upload("far", folder, progress=False)
    assert (v2.version, v2.sent_chunks, v2.sent_bytes) == (2, 1, 3000)
    assert _manifest(backend, "far")["f2.bin"] == _chunks(folder / "f2.bin")
