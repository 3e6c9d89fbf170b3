"""Datasets from the notebook: ``client.upload``, ``client.datasets()``, ``aiaas.data_path``.

An upload hashes each file in 4 MiB chunks (SHA-256, :mod:`._hashing`), tells the
backend the manifest, and sends only the chunks the backend does not have from this
user, several requests at once, each carrying up to 16 MiB of chunks (hundreds of small
files' in one). A request's body is read from disk while it is sent, 1 MiB at a time:
memory stays bounded (a few MiB per request in flight) whatever the dataset's size, and an
interrupted upload resumes where it stopped. The backend checks every chunk's hash and
commits the manifest as a new immutable version (or hands back the newest version if
nothing changed). A re-upload sends its manifest as a change of the version this machine
uploaded last (:mod:`._dataset_delta`): the few files that changed, not thousands.

When the backend runs on this machine, the files are not read here at all: the backend is
handed their open descriptors and reads, hashes and stores them itself
(:mod:`._dataset_same_host`); the chunks then travel nowhere.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx

from ._dataset_delta import Base, Bases, changes
from ._dataset_early import Early
from ._dataset_local import fingerprint, local_copy, remember
from ._dataset_same_host import Near
from ._dataset_sources import collect
from ._errors import BadRequest, NotFound
from ._hashing import (
    HashCache,
    Piece,
    Table,
    cache_db,
    cache_path,
    hash_files,
    manifest_json,
    pieces_of,
    stamps_of,
)
from .wire_datasets import (
    ChunksPublic,
    DatasetPublic,
    DatasetsPublic,
    DatasetUploadPublic,
)

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client
    from ._ops import Call, Op

# What aiaas.data_path reads on a worker (set by the backend before the run's code starts).
ENV = "AIAAS_DATASETS"


# -- the HTTP calls (I/O-free generators, as in _ops) ------------------------------------------


def _call(method: str, path: str, **kwargs: Any) -> Call:
    from ._ops import Call

    return Call(method, path, **kwargs)


def _json(resp: httpx.Response | None) -> bytes:
    assert resp is not None
    return resp.content


def create_upload(name: str, body: dict[str, Any]) -> Op[DatasetUploadPublic]:
    """``body``: a DatasetUploadCreate in its wire form (built as plain data: thousands of files).
    Asks the backend to commit at once when it lacks no chunk (``committed`` in the reply; an
    older backend ignores the parameter and the upload is committed by :func:`commit_upload`)."""
    resp = yield _call("POST", f"/v1/datasets/{name}/uploads", json=body, params={"commit": "true"},
                       idempotent=False, timeout=300)
    return DatasetUploadPublic.model_validate_json(_json(resp))


def commit_upload(name: str, upload_id: str) -> Op[DatasetPublic]:
    resp = yield _call("POST", f"/v1/datasets/{name}/uploads/{upload_id}/commit", idempotent=False, timeout=300)
    return DatasetPublic.model_validate_json(_json(resp))


def put_chunks(body: Iterable[bytes], size: int) -> Call:
    """Chunks in one request (framing: hex digest, 8-byte size, bytes; see the API). ``body``
    is iterated again if the request is retried."""
    return _call("POST", "/v1/datasets/chunks", content=body,
                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                 timeout=300)


# One request carries up to REQUEST_BYTES of chunks (up to four full ones, or hundreds of a
# small file's): the server's fixed cost of a request (routing, the API key, a thread hop, a
# commit) was a third of its CPU time with one request per 4 MiB chunk.
REQUEST_BYTES = 16 * 1024 * 1024
REQUEST_COUNT = 1024
_FRAME = 72  # a chunk's header: 64 hex digits and an 8-byte size
# The body is read from disk in parts of at most this size while it is sent.
PART_BYTES = 1024 * 1024


def plan(todo: list[tuple[str, Piece]]) -> list[list[tuple[str, Piece]]]:
    """Group the chunks to send into requests of up to REQUEST_BYTES (and REQUEST_COUNT chunks),
    in file order, so each file is read front to back."""
    groups: list[list[tuple[str, Piece]]] = []
    batch: list[tuple[str, Piece]] = []
    size = 0
    for item in sorted(todo, key=lambda item: (item[1].path, item[1].offset)):
        if batch and (size + item[1].size > REQUEST_BYTES or len(batch) >= REQUEST_COUNT):
            groups.append(batch)
            batch, size = [], 0
        batch.append(item)
        size += item[1].size
    if batch:
        groups.append(batch)
    return groups


class _Body:
    """A request's body, read from the files while it is sent: a part of at most PART_BYTES in
    memory per request in flight, whatever the request's size. Iterable again, for a retry.

    Parts are ``bytes`` (httpx's HTTP/1.1 layer sends a bytes part as it is, where it would copy
    a memoryview), small chunks gathered into one part with their headers."""

    def __init__(self, group: list[tuple[str, Piece]]) -> None:
        self.group = group
        self.size = sum(_FRAME + piece.size for _, piece in group)

    def __iter__(self) -> Iterator[bytes]:
        gathered = bytearray()
        for digest, piece in self.group:
            gathered += digest.encode()
            gathered += piece.size.to_bytes(8, "big")
            with open(piece.path, "rb", buffering=0) as f:
                f.seek(piece.offset)
                left = piece.size
                if left < PART_BYTES:
                    gathered += _read(f, piece, left)
                    if len(gathered) >= PART_BYTES:
                        yield bytes(gathered)
                        gathered.clear()
                    continue
                yield bytes(gathered)
                gathered.clear()
                while left:
                    part = _read(f, piece, min(left, PART_BYTES))
                    left -= len(part)
                    yield part
        if gathered:
            yield bytes(gathered)


def _read(f: Any, piece: Piece, size: int) -> bytes:
    data = f.read(size)
    while len(data) < size:  # a raw read may return less (a pipe, a network file system)
        more = f.read(size - len(data))
        if not more:
            raise OSError(f"{piece.path} shrank while uploading (expected {piece.size} bytes at {piece.offset}); "
                          "upload again once it is written")
        data += more
    return data


def list_datasets() -> Op[DatasetsPublic]:
    return DatasetsPublic.model_validate_json(_json((yield _call("GET", "/v1/datasets"))))


def get_dataset(name: str, version: int | None) -> Op[DatasetPublic]:
    params = {"version": version} if version is not None else None
    return DatasetPublic.model_validate_json(_json((yield _call("GET", f"/v1/datasets/{name}", params=params))))


def delete_dataset(name: str, version: int | None) -> Op[None]:
    params = {"version": version} if version is not None else None
    yield _call("DELETE", f"/v1/datasets/{name}", params=params)


# -- the upload, driven by the sync client (the async one runs it in a thread) ---------------


@dataclass
class UploadResult:
    data: DatasetPublic
    sent_chunks: int
    sent_bytes: int


class _NoBar:
    """The bar of an upload without one (progress=False): tqdm is not even imported (40 ms)."""

    total = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm  # a widget in notebooks, text in a terminal

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled,
                leave=True)


def upload(client: Client, name: str, source: Any, *, parallel: int = 8, progress: bool = True,
           same_host: bool = True, owner: AsyncClient | None = None) -> UploadResult:
    """Upload ``source`` as a version of dataset ``name`` with ``client`` (``owner``: the async
    client this upload runs for, which data_path then fetches with)."""
    near = Near(client, same_host)

    def on_backend(items: list[tuple[str, str]]) -> list[tuple[int, list[str]]] | None:
        """Have a backend on this machine read, hash and store the files (None: it cannot)."""
        conn = near.get()
        if conn is None:
            return None
        total = sum(int(stamp.split(":")[0]) for _path, stamp in items)
        with _progress(total, progress, f"upload {name}") as bar:
            return conn.read(items, bar.update)

    try:
        with cache_db(cache_path()) as db:  # the hash cache and the bases: one file
            bases = Bases(db)
            base = bases.get(client.url, client._api_key, name)
            if base is not None:
                # A re-upload: the backend's socket is reached while the folder is walked and stat'ed,
                # ready for the first changed file (an unchanged folder wastes a ticket's round trip).
                near.start()
            files, folder = collect(source, name)
            # Files as the last upload noted them cost their stat only; the rest are looked up or read.
            # On a re-upload, a backend on this machine reads each changed file as soon as it is found.
            early = Early(near, lambda: _progress(0, progress, f"upload {name}")) if base is not None and same_host \
                else None
            try:
                stamps, same = _stat(files, base, near, early)
                # data_path's record of the folder, taken here while the backend reads the changed files.
                printed = fingerprint(files, stamps) if folder is not None else None
            finally:
                found = early.finish() if early is not None else {}
            cache = HashCache(db=db)
            try:
                table: Table = dict(found)
                for rel, (_size, digests) in found.items():
                    cache.put(files[rel], stamps[rel], digests)
                rest = {rel: path for rel, path in files.items() if rel not in same and rel not in table}
                table.update(hash_files(rest, min(parallel, os.cpu_count() or 1), cache, on_backend, stamps))
            finally:
                cache.close()
            whole = base is None
            try:
                result = _send_version(client, name, files, table, base, parallel, progress, near)
            except BadRequest as exc:
                if base is None or exc.code != "base_mismatch":
                    raise
                table.update(base.table(same))  # sent whole: every file's entry (read, if not noted)
                table.update(hash_files({rel: files[rel] for rel in same if rel not in table},
                                        min(parallel, os.cpu_count() or 1), None, on_backend, stamps))
                result, whole = _send_version(client, name, files, table, None, parallel, progress, near), True
            removed = [rel for rel in base.seen if rel not in files] if base is not None and not whole else []
            if base is None or whole or table or removed or \
                    (base.version, base.digest) != (result.data.version, result.data.digest):
                bases.put(client.url, client._api_key, name, result.data.version, result.data.digest, table, files,
                          stamps, removed, None if whole else base)
    finally:
        near.close()
    if folder is not None:
        walked = not (isinstance(source, str | os.PathLike) and Path(source).expanduser().is_file())
        assert printed is not None
        remember(owner or client, result.data, folder, files, printed, walked)
    if near.conn is not None:  # what the backend read from our files itself
        result.sent_chunks += near.conn.stored_chunks
        result.sent_bytes += near.conn.stored_bytes
    return result


def _stat(files: dict[str, str], base: Base | None, near: Near,
          early: Early | None) -> tuple[dict[str, str], set[str]]:
    """Each file's stamp, and the paths ``base`` notes unchanged (read from the same local file,
    with the same stamp); each other
    one goes to ``early`` as it is found, or ``near`` starts opening at the first (for an
    unchanged folder, never)."""
    if base is None:
        near.start()
        return stamps_of(files), set()
    stamps: dict[str, str] = {}
    same: set[str] = set()
    stamp, seen = HashCache.stamp, base.seen
    for rel, path in files.items():
        stamps[rel] = now = stamp(os.stat(path))
        if seen.get(rel) == path + "|" + now:  # see _dataset_delta._seen (inlined: thousands of files)
            same.add(rel)
        elif early is not None:
            early.add(rel, path, now)
        else:
            near.start()
    return stamps, same


def _send_version(client: Client, name: str, files: dict[str, str], table: Table, base: Base | None,
                  parallel: int, progress: bool, near: Near) -> UploadResult:
    """Open the upload (the whole manifest, or its change from ``base``), send the chunks the
    backend lacks, commit. ``table``: every file's entry, or with a base those not noted unchanged
    in it. A base's chunks are all on the backend: only changed files' can be missing.

    An upload the backend closed before its commit (an upload of the same dataset from another
    notebook, opened later, was committed first) is opened again, once."""
    try:
        return _send_once(client, name, files, table, base, parallel, progress, near)
    except NotFound as exc:
        if exc.code != "upload_not_found":
            raise
        return _send_once(client, name, files, table, base, parallel, progress, near)


def _send_once(client: Client, name: str, files: dict[str, str], table: Table, base: Base | None,
               parallel: int, progress: bool, near: Near) -> UploadResult:
    changed, removed = changes(table, base, files) if base is not None else (list(table), [])
    pieces = pieces_of(table, files, changed)
    body: dict[str, Any] = {"manifest": manifest_json(table, changed, pieces)}
    if base is not None:
        body.update(base={"version": base.version, "digest": base.digest}, removed=removed)
    session = client._drive(create_upload(name, body))

    if session.committed is not None:  # nothing was missing: one request made the version
        return UploadResult(session.committed, 0, 0)
    todo = [(d, pieces[d]) for d in session.missing]
    lock = threading.Lock()
    sent = [0, 0]

    with _progress(session.missing_bytes, progress and bool(todo), f"upload {name}") as bar:
        def send(group: list[tuple[str, Piece]]) -> None:
            body = _Body(group)
            resp = client._send(put_chunks(body, body.size))
            assert resp is not None
            ChunksPublic.model_validate_json(resp.content)
            size = sum(piece.size for _, piece in group)
            with lock:
                sent[0] += len(group)
                sent[1] += size
            bar.update(size)

        conn = near.get() if todo else None
        if conn is not None:  # the backend reads them from our files (counted by the caller)
            conn.send(sorted(todo, key=lambda item: (item[1].path, item[1].offset)), bar.update)
        else:
            with ThreadPoolExecutor(max(1, parallel)) as pool:
                for _ in pool.map(send, plan(todo)):
                    pass
    data = client._drive(commit_upload(name, session.id))
    return UploadResult(data, sent[0], sent[1])


# -- aiaas.data_path ---------------------------------------------------------------------------


def data_path(name: str) -> Path:
    """The folder of dataset ``name`` (``"pets"`` or ``"pets:2"``), read-only.

    On a worker: the run's copy, materialised before your code started (submit the run with
    ``datasets=["pets"]``). In the notebook (``Trainer.fit`` in-process): the folder this
    machine uploaded the version from while it still holds exactly that version, else a copy
    fetched from the backend you connected to (``aiaas.connect``) into this machine's cache,
    so the same ``LightningDataModule`` reads the same bytes in both places. ``"pets"`` is the
    newest version, as in a run.
    """
    on_worker = os.environ.get(ENV)
    if on_worker is not None:
        mapping = json.loads(on_worker)
        if name in mapping:
            return Path(mapping[name])
        raise NotFound(f"this run has no dataset {name!r} (it has {sorted(mapping) or 'none'}): "
                       f"submit it with client.train(..., datasets=[{name.split(':')[0]!r}])")
    return local_copy(name)
