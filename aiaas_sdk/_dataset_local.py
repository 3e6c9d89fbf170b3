"""``aiaas.data_path`` in the notebook: the folder a version was uploaded from while it still
holds exactly that version, else a read-only copy fetched from the backend.

A pinned version names fixed bytes, so the folder it was uploaded from stands for it only as
long as nothing in it changed: each upload notes a fingerprint of the folder (every file's
path, local file and stamp: size, mtime, inode), and ``data_path("pets:1")`` walks and stats
the folder again before returning it. After the folder was edited (and version 2 uploaded
from it), or for a version uploaded from another machine, the version is fetched into this
machine's cache (the same content-addressed cache a worker node uses, under
``AIAAS_DATA_DIR/cache``), where it is read-only and shared by every notebook on the machine.

``data_path("pets")`` means the newest version, as in a run submitted with
``datasets=["pets"]``: when the notebook is connected, the backend is asked which that is.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._dataset_delta import _owner
from ._errors import BackendUnavailable, BadRequest, NotFound
from ._hashing import stamps_of
from .config import default_data_dir
from .wire_datasets import DatasetManifest, DatasetPublic

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client

# The cache's size bound: the backend's setting of the same name, the same default.
CACHE_BYTES_ENV = "AIAAS_DATASET_CACHE_BYTES"
DEFAULT_CACHE_BYTES = 50 * 1024**3
# One cache handle per cache folder, kept for the process's life: its read locks keep the
# versions this notebook fetched from being evicted under it.
_CACHES: dict[Path, Any] = {}
# The client that last uploaded as each user of each backend (by _owner: the key's hash, never
# the key): data_path fetches with it (a script may use aiaas.Client directly, without
# connect()). Weak: data_path never keeps a client alive.
_UPLOADERS: dict[str, weakref.ref[Client | AsyncClient]] = {}


def record_path() -> Path:
    return default_data_dir() / "datasets.json"


def cache_root() -> Path:
    return default_data_dir() / "cache"


def fingerprint(files: dict[str, str], stamps: dict[str, str]) -> str:
    """One digest of every file's path in the dataset, local file and stamp."""
    text = "".join([f"{rel}\0{files[rel]}\0{stamps[rel]}\n" for rel in sorted(files)])
    return hashlib.sha256(text.encode()).hexdigest()


def _read_record() -> dict[str, Any]:
    try:
        record = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(update: dict[str, Any]) -> None:
    record = _read_record()
    record.update(update)
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def remember(client: Client | AsyncClient, data: DatasetPublic, folder: Path, files: dict[str, str],
             printed: str, walked: bool) -> None:
    """Note that ``folder`` holds this version as uploaded, ``files`` with the :func:`fingerprint`
    ``printed`` (``walked``: the whole folder is the dataset, so a file added later changes it
    too; else only ``files`` are)."""
    owner = _owner(client.url, client._api_key)
    _UPLOADERS[owner] = weakref.ref(client)
    entry = {"folder": str(folder), "owner": owner, "version": data.version, "digest": data.digest,
             "fingerprint": printed, "files": None if walked else files}
    _write_record({data.name: entry, f"{data.name}:{data.version}": entry})


def _intact(entry: dict[str, Any]) -> Path | None:
    """The entry's folder if it still holds what was uploaded from it."""
    from ._dataset_sources import _walk

    folder = Path(entry["folder"])
    try:
        files = entry["files"] if entry.get("files") is not None else _walk(folder)
        return folder if fingerprint(files, stamps_of(files)) == entry.get("fingerprint") else None
    except (OSError, BadRequest):
        return None


@contextmanager
def _backend(entry: dict[str, Any] | None) -> Iterator[Client | None]:
    """The client to ask the backend with: the one that uploaded this entry, else the notebook's
    connection (aiaas.connect) when it is the same user of the same backend, or nothing was
    uploaded from here."""
    from ._client import Client
    from ._connect import last_connected

    uploader = _UPLOADERS.get(entry.get("owner", "")) if entry is not None else None
    owner = uploader() if uploader is not None else None
    if isinstance(owner, Client) and not owner._http.is_closed:
        yield owner
        return
    if owner is not None and not isinstance(owner, Client):  # an AsyncClient; data_path is synchronous
        with Client(owner.url, owner._api_key, timeout=owner._timeout, **owner._tls_args) as twin:
            yield twin
        return
    connected = last_connected()
    same = connected is not None and (entry is None or entry.get("owner") == _owner(connected.url, connected._api_key))
    yield connected if same else None


def local_copy(ref: str) -> Path:
    """What ``aiaas.data_path(ref)`` returns outside a run (see the module's doc)."""
    name, _, pinned = ref.partition(":")
    entry = _read_record().get(ref)
    if isinstance(entry, str):  # a record from before fingerprints: the folder, as then
        if Path(entry).exists():
            return Path(entry)
        entry = None
    here = _intact(entry) if entry is not None and entry.get("folder") else None
    if here is not None and pinned:
        return here
    cached = cache_root() / "versions" / entry["digest"] if entry is not None and entry.get("digest") else None
    offline = here or (cached if cached is not None and cached.is_dir() else None)
    with _backend(entry) as client:
        if client is not None:
            try:
                data = client.dataset(name, int(pinned) if pinned else None).data
            except BackendUnavailable:
                if offline is None:
                    raise
                return offline  # the backend is down: the copy of the newest version known here
            if here is not None and entry is not None and entry.get("digest") == data.digest:
                return here
            return fetch(client, data)
    if offline is not None:
        return offline
    raise NotFound(f"no copy of dataset {ref!r} on this machine: connect to its backend first "
                   f"(aiaas.connect(URL, api_key=...)) so data_path can fetch it, or upload it from here with "
                   f"client.upload({name!r}, PATH)")


def fetch(client: Client, data: DatasetPublic) -> Path:
    """The version ``data`` in this machine's cache, fetched from the backend unless it is there."""
    from ._datasets import _call
    from ._node_cache import NodeCache

    root = cache_root()
    cache = _CACHES.get(root)
    if cache is None:
        cache = _CACHES[root] = NodeCache(root, int(os.environ.get(CACHE_BYTES_ENV) or DEFAULT_CACHE_BYTES))
        atexit.register(cache.close)

    def manifest() -> DatasetManifest:
        resp = client._send(_call("GET", f"/v1/datasets/{data.name}/manifest", params={"version": data.version}))
        assert resp is not None
        return DatasetManifest.model_validate_json(resp.content)

    def chunk(digest: str) -> Any:
        resp = client._send(_call("GET", f"/v1/datasets/{data.name}/chunks/{digest}"))
        assert resp is not None
        yield resp.content

    path = cache.version(data.digest, manifest, chunk)
    cache.evict(only_if_grew=True)
    _write_record({f"{data.name}:{data.version}": {"owner": _owner(client.url, client._api_key),
                                                   "version": data.version, "digest": data.digest}})
    return path
