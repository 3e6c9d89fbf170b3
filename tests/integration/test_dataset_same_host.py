"""Same-host uploads: the SDK hands a backend on its machine open files over the backend's
upload socket; the backend reads, hashes and stores them (docs/datasets.md)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest

from ..conftest import wait_until

TRAINS = False  # no test here starts a run: its backends need no warm worker (tests/conftest.py)

CHUNK = 4 * 1024 * 1024


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(7)
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "empty.txt").write_bytes(b"")
    (root / "a" / "small.bin").write_bytes(rng.bytes(5000))
    (root / "a" / "twin.bin").write_bytes((root / "a" / "small.bin").read_bytes())  # one chunk, stored once
    (root / "big.bin").write_bytes(rng.bytes(int(2.5 * CHUNK)))
    return root


def _chunks(path: Path) -> list[str]:
    data = path.read_bytes()
    return [hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)]


def _upload_without_http_chunks(url: str, key: str, name: str, folder: Path, env: dict[str, str]) -> dict:
    """Upload in a child process whose HTTP chunk requests fail: only the socket can carry the bytes."""
    script = textwrap.dedent(f"""
        import json
        import aiaas
        from aiaas_sdk import _datasets
        def put_chunks(body, size):
            raise AssertionError("a chunk went over HTTP")
        _datasets.put_chunks = put_chunks
        ds = aiaas.Client({url!r}, {key!r}).upload({name!r}, {str(folder)!r}, progress=False)
        print(json.dumps({{"version": ds.version, "sent_chunks": ds.sent_chunks, "sent_bytes": ds.sent_bytes,
                          "files": ds.files, "bytes": ds.bytes}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                         env={**os.environ, **env},
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _manifest(url: str, key: str, name: str) -> dict[str, list[str]]:
    resp = httpx.get(f"{url}/v1/datasets/{name}/manifest", headers={"Authorization": f"Bearer {key}"})
    resp.raise_for_status()
    return {f["path"]: f["chunks"] for f in resp.json()["files"]}


def test_a_folder_uploads_through_the_socket_and_round_trips(make_backend, tmp_path):
    backend = make_backend()
    folder = _folder(tmp_path / "data")
    env = {"AIAAS_DATA_DIR": str(tmp_path / "sdk")}
    ds = _upload_without_http_chunks(backend.url, backend.key, "near", folder, env)
    # 4 files; chunks: big.bin's 3, small.bin's 1 (twin.bin is the same bytes); empty.txt none.
    assert (ds["version"], ds["files"], ds["sent_chunks"]) == (1, 4, 4)
    assert ds["sent_bytes"] == ds["bytes"] - 5000 == int(2.5 * CHUNK) + 5000
    expected = {p.relative_to(folder).as_posix(): _chunks(p) for p in folder.rglob("*") if p.is_file()}
    assert _manifest(backend.url, backend.key, "near") == expected
    # The store holds the files' bytes: each full chunk as a blob named by its digest, the small
    # ones in a pack, back to back.
    store = backend.data_dir / "store"
    for digest in expected["big.bin"][:2]:
        assert hashlib.sha256((store / "blobs" / digest[:2] / digest).read_bytes()).hexdigest() == digest
    packed = b"".join(p.read_bytes() for p in (store / "packs").iterdir())
    assert (folder / "big.bin").read_bytes()[2 * CHUNK:] in packed and (folder / "a" / "small.bin").read_bytes() in packed
    client = backend.client()
    again = client.upload("near", folder, progress=False)
    assert (again.version, again.sent_chunks) == (1, 0)

    # Known to this machine's hash cache but not to a second backend: the missing chunks go
    # through that backend's socket too.
    other = make_backend(name="other")
    second = _upload_without_http_chunks(other.url, other.key, "near", folder, env)
    assert (second["version"], second["sent_chunks"], second["sent_bytes"]) == (1, 4, ds["sent_bytes"])
    assert _manifest(other.url, other.key, "near") == expected


def test_without_the_socket_uploads_go_over_http(make_backend, tmp_path):
    backend = make_backend(AIAAS_UPLOAD_SOCKET="false")
    resp = httpx.post(backend.url + "/v1/datasets/same-host", headers={"Authorization": f"Bearer {backend.key}"})
    assert resp.status_code == 404 and resp.json()["code"] == "no_upload_socket"
    folder = _folder(tmp_path / "data")
    ds = backend.client().upload("far", folder, progress=False)
    assert (ds.version, ds.files, ds.sent_chunks) == (1, 4, 4)


def _ticket(backend) -> dict:
    resp = httpx.post(backend.url + "/v1/datasets/same-host", headers={"Authorization": f"Bearer {backend.key}"})
    resp.raise_for_status()
    return resp.json()


def _connect(grant: dict, hello: dict | None = None) -> tuple[socket.socket, dict]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    path = grant["socket"]
    folder = os.open(os.path.dirname(path), os.O_PATH)
    try:  # AF_UNIX paths stop at 108 bytes; pytest's may be longer
        sock.connect(f"/proc/self/fd/{folder}/{os.path.basename(path)}")
    finally:
        os.close(folder)
    sock.settimeout(60)
    sock.sendall(json.dumps(hello or {"ticket": grant["ticket"], "chunk_bytes": CHUNK}).encode())
    return sock, json.loads(sock.recv(65536))


def _ask(sock: socket.socket, seq: int, fds: list[int], ranges: list[list[int]]) -> dict:
    socket.send_fds(sock, [json.dumps({"seq": seq, "ranges": ranges}).encode()], fds)
    return json.loads(sock.recv(65536))


def test_the_socket_protocol_checks_tickets_and_descriptors(make_backend, tmp_path):
    backend = make_backend()
    grant = _ticket(backend)
    assert Path(grant["socket"]).is_socket()
    sock, hello = _connect(grant)
    assert hello == {"answer": grant["answer"]}  # the proof that this is the backend that issued the ticket
    # A ticket is good for one connection.
    again, refused = _connect(grant)
    assert refused["status"] == 401 and "ticket" in refused["error"]
    again.close()
    bad, refused = _connect({**grant, "ticket": "0" * 64})
    assert refused["status"] == 401
    bad.close()
    garbled = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    folder = os.open(os.path.dirname(grant["socket"]), os.O_PATH)
    try:
        garbled.connect(f"/proc/self/fd/{folder}/{os.path.basename(grant['socket'])}")
    finally:
        os.close(folder)
    garbled.settimeout(60)
    garbled.sendall(b"[1, 2]")
    assert garbled.recv(65536) == b""  # not a hello: closed without a word
    garbled.close()

    data = np.random.default_rng(3).bytes(CHUNK + 100)
    (tmp_path / "f.bin").write_bytes(data)
    fd = os.open(tmp_path / "f.bin", os.O_RDONLY)
    try:
        # A range past the end of the file reads what is there; digests are of the server's own read.
        reply = _ask(sock, 1, [fd, fd], [[0, CHUNK], [CHUNK, 10 * CHUNK]])
        assert reply["seq"] == 1 and "error" not in reply
        assert [r["size"] for r in reply["ranges"]] == [CHUNK, 100]
        assert [r["chunks"] for r in reply["ranges"]] == [[hashlib.sha256(data[:CHUNK]).hexdigest()],
                                                          [hashlib.sha256(data[CHUNK:]).hexdigest()]]
        assert (reply["stored"], reply["stored_bytes"]) == (2, CHUNK + 100)
        used = httpx.get(backend.url + "/v1/datasets",
                         headers={"Authorization": f"Bearer {backend.key}"}).json()["used_bytes"]
        assert used == CHUNK + 100
        # The same again: nothing new for this user.
        assert _ask(sock, 2, [fd], [[0, CHUNK]])["stored"] == 0
        # Offsets must fall on chunk boundaries (the manifest's chunks), one range per descriptor.
        assert _ask(sock, 3, [fd], [[5, 10]])["status"] == 400
        assert _ask(sock, 4, [fd], [[0, 10], [0, 10]])["status"] == 400
    finally:
        os.close(fd)
    # Only regular files: a pipe (a device, a socket, a directory alike) is refused.
    r, w = os.pipe()
    try:
        reply = _ask(sock, 5, [r], [[0, 10]])
        assert (reply["seq"], reply["status"], reply["code"]) == (5, 400, "not_a_file")
    finally:
        os.close(r)
        os.close(w)
    # The connection still serves after refusals.
    assert _ask(sock, 6, [], [])["ranges"] == []
    sock.close()


def test_a_key_revoked_during_an_upload_stops_it_at_the_next_batch(make_backend, tmp_path):
    backend = make_backend()
    created = backend.client().create_key("uploader")
    resp = httpx.post(backend.url + "/v1/datasets/same-host", headers={"Authorization": f"Bearer {created.key}"})
    resp.raise_for_status()
    sock, hello = _connect(resp.json())
    assert "answer" in hello
    data = np.random.default_rng(6).bytes(2 * CHUNK)
    (tmp_path / "f.bin").write_bytes(data)
    fd = os.open(tmp_path / "f.bin", os.O_RDONLY)
    try:
        assert _ask(sock, 1, [fd], [[0, CHUNK]])["stored"] == 1
        backend.client().revoke_key(created.id)
        reply = _ask(sock, 2, [fd], [[CHUNK, CHUNK]])
    finally:
        os.close(fd)
        sock.close()
    assert (reply["status"], reply["code"]) == (401, "unauthenticated") and "revoked" in reply["error"], reply
    used = httpx.get(backend.url + "/v1/datasets", headers={"Authorization": f"Bearer {backend.key}"}).json()
    assert used["used_bytes"] == CHUNK  # the second chunk was not stored for that user


def test_the_socket_applies_the_quota(make_backend, tmp_path):
    backend = make_backend(AIAAS_USER_QUOTA_BYTES=str(CHUNK))
    (tmp_path / "f.bin").write_bytes(np.random.default_rng(4).bytes(CHUNK + 1))
    sock, hello = _connect(_ticket(backend))
    assert "answer" in hello
    fd = os.open(tmp_path / "f.bin", os.O_RDONLY)
    try:
        reply = _ask(sock, 1, [fd], [[0, 2 * CHUNK]])
    finally:
        os.close(fd)
        sock.close()
    assert reply["status"] == 413 and reply["code"] == "quota_exceeded" and str(CHUNK) in reply["error"]
    # The client sees the HTTP route's error.
    from aiaas import PayloadTooLarge

    with pytest.raises(PayloadTooLarge, match="quota"):
        backend.client().upload("too-big", tmp_path / "f.bin", progress=False)


def test_an_interrupted_same_host_upload_resumes_with_only_missing_chunks(make_backend, tmp_path):
    backend = make_backend()
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(12):
        (folder / f"part-{i:02d}.bin").write_bytes(rng.bytes(CHUNK))
    # One chunk per message; the uploader kills itself (SIGKILL, nothing tidied) as it starts
    # its fourth message: three messages reached the backend, which finishes what it was handed.
    script = textwrap.dedent(f"""
        import os, signal, socket
        import aiaas
        from aiaas_sdk import _dataset_same_host
        _dataset_same_host.BATCH_BYTES = {CHUNK}
        send_fds = socket.send_fds
        sent = []
        def counting(sock, buffers, fds, *args):
            if len(sent) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            sent.append(len(fds))
            return send_fds(sock, buffers, fds, *args)
        socket.send_fds = counting
        aiaas.Client({backend.url!r}, {backend.key!r}).upload("resume", {str(folder)!r}, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=120,
                          env={**os.environ, "AIAAS_DATA_DIR": str(tmp_path / "sdk")})
    assert proc.returncode == -9  # killed, not finished
    client = backend.client()

    def used() -> int:
        return httpx.get(backend.url + "/v1/datasets",
                         headers={"Authorization": f"Bearer {backend.key}"}).json()["used_bytes"]

    wait_until(lambda: used() == 3 * CHUNK, timeout=60, what="the three chunks handed over to be stored")
    assert "resume" not in [d.name for d in client.datasets()]  # no half-visible version
    ds = client.upload("resume", folder, progress=False)
    assert (ds.version, ds.files, ds.bytes, ds.sent_chunks) == (1, 12, 12 * CHUNK, 9)
    assert used() == 12 * CHUNK
