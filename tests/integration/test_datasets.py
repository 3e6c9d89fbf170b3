"""Datasets: uploaded once, versioned, deduplicated, read by runs through aiaas.data_path."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest

import aiaas

from ..conftest import wait_until
from .models import Regressor

CHUNK = 4 * 1024 * 1024


class DataReader(Regressor):
    """Hashes every file under data_path(name) on the worker and prints the digests."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.dataset_name = name

    def setup(self, stage: str) -> None:
        import hashlib as _h
        import json as _j

        root = aiaas.data_path(self.dataset_name)
        digests = {p.relative_to(root).as_posix(): _h.sha256(p.read_bytes()).hexdigest()
                   for p in sorted(root.rglob("*")) if p.is_file()}
        # What a hostile run would try: change the data other runs read (the cache behind it).
        tampered = []
        for attempt in (lambda: (root / "labels.csv").write_text("poisoned"),
                        lambda: (root / "labels.csv").chmod(0o666),
                        lambda: (root / "new.txt").write_text("x")):
            try:
                attempt()
                tampered.append(True)
            except OSError:
                tampered.append(False)
        print("DIGESTS " + _j.dumps({"root": str(root), "files": digests, "tampered": tampered}))


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _make_folder(root: Path, big_chunks: float = 3.5) -> Path:
    rng = np.random.default_rng(0)
    (root / "images" / "cats" / "deep").mkdir(parents=True)
    (root / "images" / "dogs").mkdir(parents=True)
    (root / "labels.csv").write_text("file,label\ncats/a.png,0\ndogs/b.png,1\n")
    (root / "images" / "cats" / "a.png").write_bytes(rng.bytes(1000))
    (root / "images" / "cats" / "deep" / "empty.txt").write_bytes(b"")
    (root / "images" / "dogs" / "b.png").write_bytes(rng.bytes(70_000))
    (root / "big.bin").write_bytes(rng.bytes(int(big_chunks * CHUNK)))
    return root


def _run_digests(run: aiaas.Run) -> dict:
    line = next(line for line in run.logs().splitlines() if line.startswith("DIGESTS "))
    return json.loads(line[len("DIGESTS "):])


@pytest.fixture(scope="module")
def pets(backend, tmp_path_factory):
    folder = _make_folder(tmp_path_factory.mktemp("pets"))
    ds = backend.client().upload("pets", folder, progress=False)
    return folder, ds


def test_round_trip_of_a_folder_through_a_run(backend, pets):
    folder, ds = pets
    client = backend.client()
    assert (ds.name, ds.version, ds.files) == ("pets", 1, 5)
    assert ds.bytes == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert "Dataset pets:1 · 5 files" in ds._repr_mimebundle_()["text/plain"]
    run = client.train(DataReader("pets"), datasets=["pets"], max_epochs=1, name="reads-pets").wait()
    assert run.datasets == ["pets:1"] and client.run(run.id).datasets == ["pets:1"]
    seen = _run_digests(run)
    assert seen["files"] == _digests(folder)
    # The sandboxed worker read its run's read-only view of the node cache, and could change
    # none of it; the cache it views holds the source's bytes.
    assert seen["root"] == "/aiaas/run/datasets/pets" and seen["tampered"] == [False, False, False]
    cached = next((backend.data_dir / "cache" / "versions").iterdir())
    assert not filecmp.dircmp(folder, cached).diff_files
    assert (cached / "images" / "cats" / "deep" / "empty.txt").stat().st_size == 0
    assert (cached / "labels.csv").read_text() == (folder / "labels.csv").read_text()
    # Placed for the run only while its worker lives.
    wait_until(lambda: not (backend.data_dir / "artifacts" / "runs" / run.id / "datasets").exists(), timeout=30,
               what="the run's datasets to be taken out of its folder")


def test_unchanged_reupload_sends_nothing_and_changes_send_only_their_chunks(backend, pets, tmp_path):
    folder, first = pets
    client = backend.client()
    again = client.upload("pets", folder, progress=False)
    assert (again.version, again.sent_chunks) == (first.version, 0)
    changed = tmp_path / "pets2"
    subprocess.run(["cp", "-r", str(folder), str(changed)], check=True)
    (changed / "labels.csv").write_text("file,label\ncats/a.png,1\n")
    big = bytearray((changed / "big.bin").read_bytes())
    big[CHUNK + 5] ^= 0xFF  # one byte in the second chunk of four
    (changed / "big.bin").write_bytes(bytes(big))
    v2 = client.upload("pets", changed, progress=False)
    assert v2.version == 2 and v2.sent_chunks == 2
    assert v2.sent_bytes == len("file,label\ncats/a.png,1\n") + CHUNK
    assert [d.ref for d in client.datasets() if d.name == "pets"] == ["pets:2", "pets:1"]
    assert client.dataset("pets").version == 2 and client.dataset("pets", version=1).bytes == first.bytes
    pinned = client.train(DataReader("pets:1"), datasets=["pets:1"], max_epochs=1).wait()
    assert _run_digests(pinned)["files"] == _digests(folder)


def test_interrupted_upload_resumes_with_only_missing_chunks(backend, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        (folder / f"part-{i:02d}.bin").write_bytes(rng.bytes(CHUNK))
    # An uploader killed mid-way, over HTTP (the same-host path: test_dataset_same_host.py): a
    # child process that sends one chunk per request and is killed (SIGKILL, nothing tidied)
    # as it starts its fourth request. Killing it from outside
    # once the backend held "some" raced the upload on a busy machine: all 12 could land first.
    script = textwrap.dedent(f"""
        import os, signal
        import aiaas
        from aiaas_sdk import _datasets
        _datasets.REQUEST_BYTES = {CHUNK}
        send = _datasets.put_chunks
        sent = []
        def put_chunks(body, size):
            if len(sent) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            sent.append(size)
            return send(body, size)
        _datasets.put_chunks = put_chunks
        client = aiaas.Client({backend.url!r}, {backend.key!r})
        client.upload("resume", {str(folder)!r}, parallel=1, progress=False, same_host=False)
    """)
    client = backend.client()
    before = httpx.get(backend.url + "/v1/datasets", headers={"Authorization": f"Bearer {backend.key}"}).json()
    proc = subprocess.Popen([sys.executable, "-c", script])
    assert proc.wait(timeout=120) == -9  # killed, not finished

    def used() -> int:
        return httpx.get(backend.url + "/v1/datasets",
                         headers={"Authorization": f"Bearer {backend.key}"}).json()["used_bytes"]

    assert "resume" not in [d.name for d in client.datasets()]  # no half-visible version
    arrived = (used() - before["used_bytes"]) // CHUNK
    assert arrived == 3
    ds = client.upload("resume", folder, progress=False)
    assert ds.version == 1 and ds.sent_chunks == 12 - arrived
    assert ds.files == 12 and ds.bytes == 12 * CHUNK


def test_two_users_are_isolated(backend, pets, tmp_path):
    bob = backend.client(backend.new_key("bob-datasets"))
    assert bob.datasets() == []
    for action in (lambda: bob.dataset("pets"), lambda: bob.dataset("pets", version=1)):
        with pytest.raises(aiaas.NotFound, match="no dataset 'pets"):
            action()
    with pytest.raises(aiaas.NotFound, match="pets"):
        bob.train(Regressor(), datasets=["pets"], max_epochs=1)
    # Bob sending the same bytes stores his own reference: he must send them (no leak of what Alice has),
    # while the store keeps each blob once.
    stored = _stored(backend)
    mine = bob.upload("pets", pets[0], progress=False)
    assert mine.version == 1 and mine.sent_chunks == 7
    assert _stored(backend) == stored
    mine.delete()
    assert backend.client().dataset("pets", version=1).files == 5
    assert _stored(backend) == stored  # Alice's bytes stay


def _stored(backend) -> list[Path]:
    """The store's blobs and packs (the objects that hold chunks)."""
    store = backend.data_dir / "store"
    return sorted(p for sub in ("blobs", "packs") for p in (store / sub).rglob("*") if p.is_file())


def test_quota_refuses_an_upload_naming_quota_and_size(make_backend, tmp_path):
    small = make_backend(name="quota", trains=False, AIAAS_USER_QUOTA_BYTES=str(3 * CHUNK))
    client = small.client()
    folder = tmp_path / "q"
    folder.mkdir()
    (folder / "a.bin").write_bytes(os.urandom(CHUNK + 10))
    client.upload("fits", folder, progress=False)
    (folder / "b.bin").write_bytes(os.urandom(2 * CHUNK))
    with pytest.raises(aiaas.PayloadTooLarge,
                       match=rf"needs {2 * CHUNK} more bytes but your dataset quota is {3 * CHUNK} bytes"):
        client.upload("fits", folder, progress=False)
    # A chunk PUT alone is held to the quota too.
    data = os.urandom(2 * CHUNK)
    resp = httpx.put(f"{small.url}/v1/datasets/chunks/{hashlib.sha256(data).hexdigest()}", content=data,
                     headers={"Authorization": f"Bearer {small.key}"})
    assert resp.status_code == 413 and resp.json()["code"] == "quota_exceeded"
    # Deleting frees the room.
    client.dataset("fits").delete()
    (folder / "a.bin").unlink()
    assert client.upload("fits", folder, progress=False).version == 2


def test_bad_input(backend, pets, tmp_path):
    client = backend.client()
    auth = {"Authorization": f"Bearer {backend.key}"}
    # A chunk whose bytes do not match its name.
    resp = httpx.put(f"{backend.url}/v1/datasets/chunks/{'0' * 64}", content=b"abc", headers=auth)
    assert resp.status_code == 400 and resp.json()["code"] == "chunk_hash_mismatch"
    resp = httpx.put(f"{backend.url}/v1/datasets/chunks/nothex", content=b"abc", headers=auth)
    assert resp.status_code == 400
    # A manifest naming chunks the server lacks: the commit says which.
    digest = hashlib.sha256(b"never sent").hexdigest()
    manifest = {"files": [{"path": "x.bin", "size": 10, "chunks": [digest]}], "chunk_sizes": {digest: 10}}
    upload = httpx.post(f"{backend.url}/v1/datasets/ghost/uploads", json={"manifest": manifest}, headers=auth).json()
    assert upload["missing"] == [digest]
    resp = httpx.post(f"{backend.url}/v1/datasets/ghost/uploads/{upload['id']}/commit", headers=auth)
    assert resp.status_code == 400 and digest in resp.json()["detail"]
    assert "ghost" not in [d.name for d in client.datasets()]
    # Paths that leave the folder, sent by hand: refused by the server.
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", "a//b"):
        bad_manifest = {"files": [{"path": bad, "size": 0, "chunks": []}]}
        resp = httpx.post(f"{backend.url}/v1/datasets/evil/uploads", json={"manifest": bad_manifest}, headers=auth)
        assert resp.status_code == 422, bad
    # ... and by the SDK before anything is sent.
    (tmp_path / "f.txt").write_text("x")
    for bad in ("../f.txt", "/abs/f.txt"):
        with pytest.raises(aiaas.BadRequest, match="refused before sending"):
            client.upload("evil", {bad: tmp_path / "f.txt"}, progress=False)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "ok.txt").write_text("ok")
    (linked / "leak.txt").symlink_to(outside)
    with pytest.raises(aiaas.BadRequest, match="outside"):
        client.upload("evil", linked, progress=False)
    (linked / "leak.txt").unlink()
    (linked / "leakdir").symlink_to(tmp_path)
    with pytest.raises(aiaas.BadRequest, match="outside"):
        client.upload("evil", linked, progress=False)
    assert "evil" not in [d.name for d in client.datasets()]
    # Unknown datasets and versions fail at submit, not on the worker.
    with pytest.raises(aiaas.NotFound, match="no dataset 'nope'"):
        client.train(Regressor(), datasets=["nope"], max_epochs=1)
    with pytest.raises(aiaas.NotFound, match="pets:99"):
        client.train(Regressor(), datasets=["pets:99"], max_epochs=1)
    with pytest.raises(aiaas.BadRequest, match="NAME:VERSION"):
        client.train(Regressor(), datasets=["pets:latest"], max_epochs=1)


def test_delete_is_refused_while_a_run_reads_the_version(backend, tmp_path):
    client = backend.client()
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "x.txt").write_text("busy")
    ds = client.upload("busy", folder, progress=False)
    run = client.train(Regressor(step_sleep=0.05), datasets=[ds], max_epochs=100, name="holds-busy")
    with pytest.raises(aiaas.BadRequest, match=f"in use by run {run.id}") as info:
        ds.delete()
    assert info.value.status_code == 409
    run.cancel()
    with pytest.raises(aiaas.RunCancelled):
        run.wait(timeout=120)
    ds.delete()
    with pytest.raises(aiaas.NotFound):
        client.dataset("busy")


def test_a_relative_path_on_the_worker_fails_with_a_hint(backend):
    run = backend.client().train(MissingFile(), max_epochs=1)
    with pytest.raises(aiaas.RunFailed, match="aiaas.data_path"):
        run.wait()


class MissingFile(Regressor):
    def setup(self, stage: str) -> None:
        open("data/train.csv").read()


def test_tensors_arrays_and_dataframes_upload(backend):
    import pandas as pd
    import torch

    client = backend.client()
    t = client.upload("tensor", torch.arange(10), progress=False)
    a = client.upload("array", np.arange(6).reshape(2, 3), progress=False)
    f = client.upload("frame", pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}), progress=False)
    assert (t.files, a.files, f.files) == (1, 1, 1)
    # In this process (as in a notebook) data_path finds the local copy.
    assert np.load(aiaas.data_path("array") / "array.npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert torch.load(aiaas.data_path("tensor:1") / "tensor.pt").tolist() == list(range(10))


async def _async_upload(backend, folder):
    async with aiaas.AsyncClient(backend.url, backend.key) as aclient:
        ds = await aclient.upload("async-up", folder, progress=False)
        listed = [d.ref for d in await aclient.datasets()]
        got = await aclient.dataset("async-up")
        await got.delete()
        return ds, listed


def test_async_client_uploads(backend, tmp_path):
    import asyncio

    (tmp_path / "a.txt").write_text("hello")
    ds, listed = asyncio.run(_async_upload(backend, tmp_path))
    assert ds.ref == "async-up:1" and "async-up:1" in listed
