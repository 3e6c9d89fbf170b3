"""aiaas.data_path in the notebook (no run): the uploaded folder only while it holds exactly the
version asked for, else a copy fetched from the backend into this machine's cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

import aiaas
from aiaas_sdk import _connect, _dataset_local

from .test_datasets import _digests

TRAINS = False  # no test here starts a run: its backends need no warm worker (tests/conftest.py)


@pytest.fixture
def no_connection(monkeypatch):
    """This process as a notebook that has not called aiaas.connect (and forgets it after)."""
    monkeypatch.setattr(_connect, "_last", [])
    monkeypatch.setattr(_dataset_local, "_UPLOADERS", {})


def _folder(root: Path) -> Path:
    (root / "imgs").mkdir(parents=True)
    for i in range(4):
        (root / "imgs" / f"{i}.bin").write_bytes(os.urandom(3000 + i))
    (root / "empty.txt").write_bytes(b"")
    (root / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 7))  # several chunks
    return root


def test_a_pinned_version_is_never_the_folder_after_it_changed(backend, tmp_path, no_connection):
    folder = _folder(tmp_path / "pets")
    client = backend.client()
    v1 = client.upload("local-pets", folder, progress=False)
    one = _digests(folder)
    assert aiaas.data_path("local-pets:1") == folder.resolve()

    (folder / "imgs" / "0.bin").write_bytes(b"edited")
    (folder / "imgs" / "new.bin").write_bytes(b"added")
    v2 = client.upload("local-pets", folder, progress=False)
    assert (v1.version, v2.version) == (1, 2)
    two = _digests(folder)

    # Version 1 is no longer what the folder holds: it comes from the backend, byte for byte.
    old = aiaas.data_path("local-pets:1")
    assert old != folder.resolve() and _digests(old) == one
    assert not os.stat(old / "imgs" / "0.bin").st_mode & 0o222  # read-only
    assert aiaas.data_path("local-pets:2") == folder.resolve()
    assert aiaas.data_path("local-pets") == folder.resolve()

    # Edited again, not uploaded: the newest version is fetched, the edit is not it.
    (folder / "imgs" / "1.bin").write_bytes(b"not uploaded")
    newest = aiaas.data_path("local-pets")
    assert newest != folder.resolve() and _digests(newest) == two
    assert aiaas.data_path("local-pets:2") == newest  # the same cached copy
    # An added file changes the dataset too: a folder with one more file is not version 2.
    (folder / "imgs" / "1.bin").unlink()
    (folder / "imgs" / "1.bin").write_bytes(_digests(newest)["imgs/1.bin"].encode())  # any bytes, new stamp
    assert aiaas.data_path("local-pets:2") != folder.resolve()


def test_another_machine_fetches_once_connected_and_then_works_offline(backend, tmp_path, monkeypatch,
                                                                       no_connection):
    folder = _folder(tmp_path / "digits")
    uploader = backend.client()
    uploader.upload("local-digits", folder, progress=False)
    want = _digests(folder)

    monkeypatch.setenv("AIAAS_DATA_DIR", str(tmp_path / "other-machine"))
    monkeypatch.setattr(_dataset_local, "_UPLOADERS", {})
    with pytest.raises(aiaas.NotFound, match=r"no copy of dataset 'local-digits:1' on this machine: connect"):
        aiaas.data_path("local-digits:1")
    aiaas.connect(backend.url, api_key=backend.key)
    fetched = aiaas.data_path("local-digits:1")
    assert fetched.is_relative_to(tmp_path / "other-machine" / "cache") and _digests(fetched) == want
    assert aiaas.data_path("local-digits") == fetched
    with pytest.raises(aiaas.NotFound, match="local-digits"):
        aiaas.data_path("local-digits:7")

    monkeypatch.setattr(_connect, "_last", [])  # offline: the cached copy still answers
    assert aiaas.data_path("local-digits:1") == fetched


def test_chunks_are_read_only_by_the_user_who_sent_them(backend, tmp_path):
    folder = _folder(tmp_path / "own")
    backend.client().upload("local-own", folder, progress=False)
    manifest = httpx.get(f"{backend.url}/v1/datasets/local-own/manifest",
                         headers={"Authorization": f"Bearer {backend.key}"}).json()
    small = next(f for f in manifest["files"] if f["path"] == "imgs/2.bin")["chunks"][0]  # in a pack
    large = next(f for f in manifest["files"] if f["path"] == "big.bin")["chunks"][0]  # a blob of its own

    def get(digest: str, key: str, name: str = "local-own") -> httpx.Response:
        return httpx.get(f"{backend.url}/v1/datasets/{name}/chunks/{digest}", headers={"Authorization": f"Bearer {key}"})

    for digest in (small, large):
        resp = get(digest, backend.key)
        assert resp.status_code == 200 and hashlib.sha256(resp.content).hexdigest() == digest
    bob = backend.new_key("bob-local")
    bob_client = backend.client(bob)
    bob_client.upload("local-own", tmp_path / "own" / "empty.txt", progress=False)  # his own dataset of that name
    resp = get(large, bob)
    assert resp.status_code == 404 and resp.json()["code"] == "chunk_not_found"
    resp = get(large, backend.key, name="no-such-dataset")
    assert resp.status_code == 404 and "no-such-dataset" in resp.json()["detail"]
    resp = get("not-a-digest", backend.key)
    assert resp.status_code == 400 and "SHA-256" in resp.json()["detail"]


def test_an_async_upload_is_fetched_with_its_clients_settings(backend, tmp_path, no_connection):
    import asyncio

    folder = _folder(tmp_path / "async")
    aclient = aiaas.AsyncClient(backend.url, backend.key)
    ds = asyncio.run(aclient.upload("local-async", folder, progress=False))
    want = _digests(folder)
    assert aiaas.data_path(ds.ref) == folder.resolve()
    (folder / "empty.txt").write_bytes(b"not empty any more")
    copy = aiaas.data_path(ds.ref)
    assert copy != folder.resolve() and _digests(copy) == want


def test_two_users_of_one_backend_each_fetch_their_own(backend, tmp_path, no_connection):
    alice, bob = backend.client(), backend.client(backend.new_key("bob-local-two"))
    mine = _folder(tmp_path / "alice")
    alice.upload("local-two", mine, progress=False)
    want = _digests(mine)
    bob.upload("local-two-bob", _folder(tmp_path / "bob"), progress=False)  # the latest uploader is Bob now
    (mine / "big.bin").write_bytes(b"changed")
    copy = aiaas.data_path("local-two:1")  # fetched as Alice, who uploaded it
    assert copy != mine.resolve() and _digests(copy) == want
