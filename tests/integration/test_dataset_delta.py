"""Re-uploads as changes of a base version: only changed files' entries travel, and every
check of a whole manifest still holds (bad paths, missing chunks, a stale or foreign base)."""

from __future__ import annotations

import hashlib
import json
import os

import httpx
import pytest

import aiaas

TRAINS = False  # no test here starts a run: its backends need no warm worker (tests/conftest.py)


class Recording(httpx.HTTPTransport):
    """The real transport, noting the JSON bodies of upload sessions on their way."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[dict] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/uploads"):
            self.sessions.append(json.loads(request.read()))
        return super().handle_request(request)


def _manifest(backend, name: str, version: int | None = None) -> dict:
    params = {"version": version} if version else {}
    return httpx.get(f"{backend.url}/v1/datasets/{name}/manifest", params=params,
                     headers={"Authorization": f"Bearer {backend.key}"}).json()


def _files(manifest: dict) -> dict[str, list[str]]:
    return {f["path"]: f["chunks"] for f in manifest["files"]}


def test_a_reupload_sends_only_the_change_and_the_version_is_whole(backend, tmp_path):
    folder = tmp_path / "many"
    for i in range(50):
        (folder / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (folder / f"d{i % 5}" / f"f{i:02d}.bin").write_bytes(os.urandom(100 + i))
    recording = Recording()
    client = aiaas.Client(backend.url, backend.key, transport=recording)
    v1 = client.upload("delta", folder, progress=False)
    assert len(recording.sessions[-1]["manifest"]["files"]) == 50 and "base" not in recording.sessions[-1]

    (folder / "d1" / "f01.bin").write_bytes(b"changed")
    (folder / "d2" / "f02.bin").unlink()
    (folder / "d9").mkdir()
    (folder / "d9" / "new.bin").write_bytes(b"new")
    v2 = client.upload("delta", folder, progress=False)
    sent = recording.sessions[-1]
    assert sent["base"] == {"version": v1.version, "digest": v1.data.digest}
    assert sorted(f["path"] for f in sent["manifest"]["files"]) == ["d1/f01.bin", "d9/new.bin"]
    assert sent["removed"] == ["d2/f02.bin"]
    assert (v2.version, v2.files, v2.sent_chunks) == (2, 50, 2)

    # The stored version is whole: every file of the folder, each with its own chunks.
    whole = _files(_manifest(backend, "delta"))
    expected = {p.relative_to(folder).as_posix(): [hashlib.sha256(p.read_bytes()).hexdigest()]
                for p in folder.rglob("*.bin")}
    assert whole == expected
    assert "d2/f02.bin" in _files(_manifest(backend, "delta", 1))  # version 1 unchanged

    # Unchanged: an empty change, the same version back; nothing new recorded.
    again = client.upload("delta", folder, progress=False)
    assert (again.version, again.sent_chunks) == (2, 0)
    assert recording.sessions[-1]["manifest"]["files"] == [] and recording.sessions[-1]["removed"] == []


def test_a_stale_base_is_refused_and_the_sdk_sends_the_whole_manifest(backend, tmp_path):
    folder = tmp_path / "stale"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a")
    recording = Recording()
    client = aiaas.Client(backend.url, backend.key, transport=recording)
    client.upload("stale", folder, progress=False)
    (folder / "b.bin").write_bytes(b"b")
    assert client.upload("stale", folder, progress=False).version == 2
    client.dataset("stale", version=2).delete()  # the version this machine noted as its base
    (folder / "c.bin").write_bytes(b"c")
    v3 = client.upload("stale", folder, progress=False)
    assert v3.version == 3 and v3.files == 3
    assert "base" in recording.sessions[-2] and "base" not in recording.sessions[-1]  # 409, then whole
    assert sorted(_files(_manifest(backend, "stale"))) == ["a.bin", "b.bin", "c.bin"]


def test_bad_changes_are_refused_naming_the_problem(backend, tmp_path):
    client = backend.client()
    auth = {"Authorization": f"Bearer {backend.key}"}
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "kept.txt").write_text("kept")
    v1 = client.upload("changes", folder, progress=False)
    base = {"version": v1.version, "digest": v1.data.digest}
    url = f"{backend.url}/v1/datasets/changes/uploads"

    def start(body: dict) -> httpx.Response:
        return httpx.post(url, json=body, headers=auth)

    empty = {"files": []}
    # A base that is not this dataset's version (wrong digest, unknown version, another user's).
    resp = start({"manifest": empty, "base": {"version": 1, "digest": "0" * 64}})
    assert resp.status_code == 409 and resp.json()["code"] == "base_mismatch" and "0" * 64 in resp.json()["detail"]
    resp = start({"manifest": empty, "base": {"version": 7, "digest": v1.data.digest}})
    assert resp.status_code == 409 and "version 7" in resp.json()["detail"]
    other = {"Authorization": f"Bearer {backend.new_key('delta-other')}"}
    resp = httpx.post(url, json={"manifest": empty, "base": base}, headers=other)
    assert resp.status_code == 409 and resp.json()["code"] == "base_mismatch"
    # Removals without a base, twice, of a path also sent, or of a path that leaves the folder.
    for body in ({"manifest": empty, "removed": ["kept.txt"]},
                 {"manifest": empty, "base": base, "removed": ["kept.txt", "kept.txt"]},
                 {"manifest": {"files": [{"path": "kept.txt", "size": 0, "chunks": []}]}, "base": base,
                  "removed": ["kept.txt"]},
                 {"manifest": empty, "base": base, "removed": ["../etc/passwd"]},
                 {"manifest": {"files": [{"path": "a/../../b", "size": 0, "chunks": []}]}, "base": base}):
        resp = start(body)
        assert resp.status_code == 422, body
    # A removal of a path the base does not have: refused at the commit, nothing committed.
    upload = start({"manifest": empty, "base": base, "removed": ["nope.txt"]}).json()
    resp = httpx.post(f"{url}/{upload['id']}/commit", headers=auth)
    assert resp.status_code == 400 and "'nope.txt'" in resp.json()["detail"]
    # A change naming a chunk never sent: the commit names it, as for a whole manifest.
    digest = hashlib.sha256(b"never sent").hexdigest()
    change = {"files": [{"path": "x.bin", "size": 10, "chunks": [digest]}], "chunk_sizes": {digest: 10}}
    upload = start({"manifest": change, "base": base}).json()
    assert upload["missing"] == [digest]
    resp = httpx.post(f"{url}/{upload['id']}/commit", headers=auth)
    assert resp.status_code == 400 and resp.json()["code"] == "missing_chunks" and digest in resp.json()["detail"]
    # The base deleted while a change of it was open: the commit refuses (its chunks may be gone).
    (folder / "two.txt").write_text("two")
    v2 = client.upload("changes", folder, progress=False)
    upload = start({"manifest": empty, "base": {"version": v2.version, "digest": v2.data.digest},
                    "removed": ["two.txt"]}).json()
    client.dataset("changes", version=v2.version).delete()
    resp = httpx.post(f"{url}/{upload['id']}/commit", headers=auth)
    assert resp.status_code == 409 and resp.json()["code"] == "base_mismatch"
    assert [d.version for d in client.datasets() if d.name == "changes"] == [1]



def _folder_digests(folder) -> dict[str, list[str]]:
    return {p.relative_to(folder).as_posix(): [hashlib.sha256(p.read_bytes()).hexdigest()] if p.stat().st_size else []
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("way", ["same-host", "http"])
def test_a_version_built_from_a_change_equals_the_whole_upload_of_the_folder(make_backend, tmp_path, way):
    """The commit builds a change's version from the base's files (kept in memory by the commit
    that made the base, or read from its row after a restart): its files, bytes and digest are
    those of the same folder uploaded whole. Over HTTP the changed chunks are missing when the
    upload opens, so it is committed by its own request once they are sent."""
    backend = make_backend(**({"AIAAS_UPLOAD_SOCKET": "false"} if way == "http" else {}))
    folder = tmp_path / "folder"
    names = ["plain.bin", "sp ace.bin", 'quo"te.bin', "ünï/cödé.bin", "d/e/f.bin", "empty.bin"]
    for i, rel in enumerate(names):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(os.urandom(50 + i) if rel != "empty.bin" else b"")
    client = backend.client()
    client.upload("built", folder, progress=False)
    for restart in (False, True):  # the base in the server's memory, then only in its row
        if restart:
            backend.stop()
            backend.start(port=backend.port)
            client = backend.client()
        (folder / "sp ace.bin").write_bytes(os.urandom(77))
        (folder / "d/e/f.bin").unlink()
        (folder / f"new-{restart}.bin").write_bytes(b"new")
        changed = client.upload("built", folder, progress=False)
        whole = client.upload(f"whole-{restart:d}", folder, progress=False)  # no record of a base: sent whole
        assert (changed.files, changed.bytes, changed.data.digest) == (whole.files, whole.bytes, whole.data.digest)
        assert _manifest(backend, "built") == _manifest(backend, f"whole-{restart:d}")
        assert _files(_manifest(backend, "built")) == _folder_digests(folder)
        (folder / "d/e").mkdir(parents=True, exist_ok=True)
        (folder / "d/e/f.bin").write_bytes(b"back")


def test_an_upload_opened_with_commit_is_committed_when_nothing_is_missing(backend, tmp_path):
    client = backend.client()
    auth = {"Authorization": f"Bearer {backend.key}"}
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    v1 = client.upload("at-once", folder, progress=False)
    url = f"{backend.url}/v1/datasets/at-once/uploads"
    base = {"version": v1.version, "digest": v1.data.digest}
    # Every chunk here: the version is made in that request, and there is no upload left to commit.
    resp = httpx.post(url, params={"commit": "true"}, json={"manifest": {"files": []}, "base": base,
                                                              "removed": ["a.txt"]}, headers=auth)
    assert resp.status_code == 201
    made = resp.json()
    assert made["committed"]["version"] == 2 and made["committed"]["files"] == 0
    assert httpx.post(f"{url}/{made['id']}/commit", headers=auth).status_code == 404
    # A chunk missing: an ordinary upload (nothing committed), committed once the chunk is sent.
    digest = hashlib.sha256(b"late").hexdigest()
    body = {"manifest": {"files": [{"path": "late.txt", "size": 4, "chunks": [digest]}],
                         "chunk_sizes": {digest: 4}}}
    opened = httpx.post(url, params={"commit": "true"}, json=body, headers=auth).json()
    assert opened["committed"] is None and opened["missing"] == [digest]
    assert [d.version for d in client.datasets() if d.name == "at-once"] == [2, 1]
    httpx.put(f"{backend.url}/v1/datasets/chunks/{digest}", content=b"late", headers=auth).raise_for_status()
    assert httpx.post(f"{url}/{opened['id']}/commit", headers=auth).json()["version"] == 3
    # A bad change is refused in that request, and nothing is made.
    resp = httpx.post(url, params={"commit": "true"}, json={"manifest": {"files": []}, "base": base,
                                                              "removed": ["nope.txt"]}, headers=auth)
    assert resp.status_code == 400 and "'nope.txt'" in resp.json()["detail"]
    assert [d.version for d in client.datasets() if d.name == "at-once"] == [3, 2, 1]


def test_the_record_of_the_last_upload_is_trusted_only_for_the_same_local_file(backend, tmp_path):
    """A file is taken as unchanged from the record only if it is the same local file with the
    same stamp: the same paths uploaded from another folder are read, not assumed (their inodes
    differ here; the record also names the local file, for inode numbers that repeat across
    file systems), and a touched file is read again but is no change."""
    recording = Recording()
    client = aiaas.Client(backend.url, backend.key, transport=recording)
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "x.bin").write_bytes(os.urandom(64))
        (folder / "same.bin").write_bytes(b"same")
    client.upload("where", one, progress=False)
    v2 = client.upload("where", two, progress=False)  # other files, same paths: x.bin differs
    assert [f["path"] for f in recording.sessions[-1]["manifest"]["files"]] == ["x.bin"]
    assert _files(_manifest(backend, "where")) == _folder_digests(two) and v2.version == 2
    os.utime(two / "same.bin", ns=(1, 1))  # touched, not changed: read again, not sent as a change
    assert client.upload("where", two, progress=False).version == 2
    assert recording.sessions[-1]["manifest"]["files"] == []


def test_many_small_reuploads_keep_the_record_right(backend, tmp_path):
    """Stamps changed since the record's text was written are noted apart, then folded back into
    it once they grow: across both, each version is the folder, and only changes travel."""
    import random

    rng = random.Random(4)
    folder = tmp_path / "small-steps"
    folder.mkdir()
    for i in range(40):
        (folder / f"f{i:02d}.bin").write_bytes(os.urandom(20))
    recording = Recording()
    client = aiaas.Client(backend.url, backend.key, transport=recording)
    client.upload("steps", folder, progress=False)
    for step in range(14):  # 30 stamps a step: past the 256 noted apart by the tenth
        present = sorted(p.name for p in folder.iterdir())
        edited = rng.sample(present, 28)
        for name in edited:
            (folder / name).write_bytes(os.urandom(20))
        gone = rng.choice([n for n in present if n not in edited])
        (folder / gone).unlink()
        (folder / f"new{step:02d}.bin").write_bytes(os.urandom(20))
        v = client.upload("steps", folder, progress=False)
        sent = recording.sessions[-1]
        assert sorted(f["path"] for f in sent["manifest"]["files"]) == sorted(edited + [f"new{step:02d}.bin"])
        assert sent["removed"] == [gone] and v.version == step + 2
        assert _files(_manifest(backend, "steps")) == _folder_digests(folder)
    again = client.upload("steps", folder, progress=False)
    assert again.version == 15 and recording.sessions[-1]["manifest"]["files"] == []
