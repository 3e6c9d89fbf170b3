"""Re-uploads as changes of a base version: only changed files' entries travel, and every
check of a whole manifest still holds (bad paths, missing chunks, a stale or foreign base)."""

from __future__ import annotations

import hashlib
import json
import os

import httpx

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

