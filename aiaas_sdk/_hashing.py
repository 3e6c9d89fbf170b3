"""Cutting an upload's files into content-addressed chunks: the manifest and where each chunk's bytes are.

Every file is read once, in 4 MiB chunks hashed with SHA-256, by a few threads at once
(hashlib releases the GIL on large buffers, so they hash in parallel). Each thread reads
into one buffer of its own, reused for every chunk: memory stays a few MiB whatever the
dataset's size. Digests of files already hashed are remembered (:class:`HashCache`), so
a re-upload reads only the files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import default_data_dir

CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Piece:
    """Where one chunk's bytes are: ``size`` bytes of ``path`` from ``offset``."""

    path: str
    offset: int
    size: int


def cache_path() -> Path:
    """The SDK's cache database (hash cache and the record of last uploads), its folder made."""
    path = default_data_dir() / "hash-cache.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def connect_cache(path: Path, **kwargs: object) -> sqlite3.Connection:
    """The SDK's cache database. WAL without a sync per commit: a power cut may lose the last
    writes (the cache is then older, which costs a re-read), never leave it half written."""
    db = sqlite3.connect(path, timeout=30, **kwargs)  # type: ignore[arg-type]
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


# Connections to the cache database that uploads of this process finished with, by path. Closing
# the last one costs SQLite's checkpoint (two fsyncs: 10 ms of a 150 ms re-upload here), which a
# notebook uploading again should not pay each time; SQLite checkpoints a kept one as its WAL grows.
_IDLE: dict[Path, list[sqlite3.Connection]] = {}
_IDLE_LOCK = threading.Lock()
_INHERITED: list[sqlite3.Connection] = []


def _forget_in_child() -> None:
    """A forked child never uses its parent's connections, nor closes them (kept from the GC), and
    gets a lock of its own (another thread of the parent may have held it at the fork)."""
    global _IDLE_LOCK
    _INHERITED.extend(db for dbs in _IDLE.values() for db in dbs)
    _IDLE.clear()
    _IDLE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


@contextmanager
def cache_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the cache database at ``path`` for one upload (uploads at once get one
    each), kept open afterwards for the next."""
    with _IDLE_LOCK:
        idle = _IDLE.get(path)
        db = idle.pop() if idle else None
    if db is None:
        db = connect_cache(path, check_same_thread=False)
    try:
        yield db
    except BaseException:
        db.close()  # whatever it was in the middle of is not the next upload's
        raise
    with _IDLE_LOCK:
        closing = [db]
        if len(_IDLE.get(path, [])) < 2:
            # Only the last data dir's are kept (a process rarely changes it; a test suite that
            # does would otherwise hold files open in every one).
            closing = [old for other in list(_IDLE) if other != path for old in _IDLE.pop(other)]
            _IDLE.setdefault(path, []).append(db)
    for old in closing:
        old.close()


class HashCache:
    """Chunk digests of files already hashed, keyed by path, size, mtime and inode (as git's
    index does): re-uploading a large folder re-reads only the files that changed.

    Rows are read for a whole upload in one query and written in one transaction at
    :meth:`close`: a folder of thousands of files costs milliseconds, not a query each."""

    def __init__(self, path: Path | None = None, db: sqlite3.Connection | None = None) -> None:
        """``db``: a connection to the cache's database to use (and leave open), instead of opening ``path``."""
        self._own = db is None
        if db is None:
            db = connect_cache(path or cache_path(), check_same_thread=False)
        self._db = db
        # Digests joined by commas, not JSON: a re-upload reads thousands of rows, and a split
        # costs a tenth of a json.loads. (``files`` held JSON lists before.)
        self._db.execute("CREATE TABLE IF NOT EXISTS file_chunks (path TEXT PRIMARY KEY, stamp TEXT, chunks TEXT)")
        self._known: dict[str, tuple[str, str]] = {}
        self._new: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    @staticmethod
    def stamp(st: os.stat_result) -> str:
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{CHUNK_BYTES}"

    def load(self, paths: Iterable[str]) -> None:
        """Read the rows of ``paths`` in one query (call before :meth:`get`)."""
        keys = list(paths)
        try:
            rows = self._db.execute("SELECT path, stamp, chunks FROM file_chunks WHERE path IN "
                                    "(SELECT value FROM json_each(?))", (json.dumps(keys),)).fetchall()
        except sqlite3.OperationalError:  # an SQLite without JSON functions: bounded IN lists
            rows = []
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                rows += self._db.execute(f"SELECT path, stamp, chunks FROM file_chunks WHERE path IN "
                                         f"({','.join('?' * len(part))})", part).fetchall()
        self._known.update((p, (s, c)) for p, s, c in rows)

    def get(self, path: str, stamp: str) -> list[str] | None:
        row = self._known.get(path)
        if row is None or row[0] != stamp:
            return None
        return row[1].split(",") if row[1] else []

    def put(self, path: str, stamp: str, chunks: list[str]) -> None:
        with self._lock:
            self._new.append((path, stamp, ",".join(chunks)))

    def close(self) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO file_chunks VALUES (?, ?, ?)", self._new)
            self._new.clear()
        if self._own:
            self._db.close()


_buffers = threading.local()


def _buffer() -> bytearray:
    """This thread's read buffer (one per thread, reused: no allocation per chunk)."""
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < CHUNK_BYTES:
        buf = _buffers.buf = bytearray(CHUNK_BYTES)
    return buf


def _hash_file(path: str) -> list[tuple[str, Piece]]:
    buf = _buffer()
    view = memoryview(buf)
    out: list[tuple[str, Piece]] = []
    offset = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            got = 0
            while got < CHUNK_BYTES and (n := f.readinto(view[got:CHUNK_BYTES])):
                got += n
            if not got:
                break
            out.append((hashlib.sha256(view[:got]).hexdigest(), Piece(path, offset, got)))
            offset += got
            if got < CHUNK_BYTES:
                break
    return out


# What an upload's files hold: {path in the dataset: (size, chunk digests in order)}.
Table = dict[str, tuple[int, list[str]]]


# Reads files elsewhere: given ``(local file, stamp)`` pairs, their sizes and chunk digests in
# order, or None if it cannot (the same-host upload socket, :mod:`._dataset_same_host`).
Reader = Callable[[list[tuple[str, str]]], list[tuple[int, list[str]]] | None]


def stamps_of(files: dict[str, str]) -> dict[str, str]:
    """Each file's stamp (one ``stat``), by its path in the dataset."""
    stamp = HashCache.stamp
    return {rel: stamp(os.stat(path)) for rel, path in files.items()}


def hash_files(files: dict[str, str], parallel: int, cache: HashCache | None = None,
               reader: Reader | None = None, stamps: dict[str, str] | None = None) -> Table:
    """The size and chunk digests of each of ``files`` (``{path in the dataset: local file}``).
    Files the cache knows cost a stat (none if ``stamps`` has theirs); only the others are read,
    by ``reader`` when it can, else here, ``parallel`` at a time."""
    if not files:
        return {}
    if cache is not None:
        cache.load(files.values())
    stamps = stamps if stamps is not None else stamps_of(files)
    table: Table = {}
    to_read: list[tuple[str, str, str]] = []
    for rel, path in files.items():
        stamp = stamps[rel]
        known = cache.get(path, stamp) if cache is not None else None
        if known is None:
            to_read.append((rel, path, stamp))
        else:
            table[rel] = (int(stamp.split(":", 1)[0]), known)

    def read(item: tuple[str, str, str]) -> tuple[int, list[str]]:
        _rel, path, stamp = item
        pieces = _hash_file(path)
        size = sum(p.size for _, p in pieces)
        if cache is not None and size == int(stamp.split(":")[0]):
            cache.put(path, stamp, [d for d, _ in pieces])
        return size, [d for d, _ in pieces]

    elsewhere = reader([(path, stamp) for _rel, path, stamp in to_read]) if reader and to_read else None
    if elsewhere is not None:
        for (rel, path, stamp), (size, digests) in zip(to_read, elsewhere, strict=True):
            table[rel] = (size, digests)
            if cache is not None:
                cache.put(path, stamp, digests)
    elif to_read:
        with ThreadPoolExecutor(max(1, min(parallel, len(to_read)))) as pool:
            table.update(zip((rel for rel, _, _ in to_read), pool.map(read, to_read), strict=True))
    return table


def pieces_of(table: Table, files: dict[str, str], paths: Iterable[str]) -> dict[str, Piece]:
    """Where each chunk of ``paths`` is on disk, by digest (the first file holding it)."""
    pieces: dict[str, Piece] = {}
    for rel in paths:
        size, digests = table[rel]
        for i, digest in enumerate(digests):
            if digest not in pieces:
                offset = i * CHUNK_BYTES
                pieces[digest] = Piece(files[rel], offset, min(CHUNK_BYTES, size - offset))
    return pieces


def manifest_json(table: Table, paths: Iterable[str], pieces: dict[str, Piece]) -> dict[str, object]:
    """The wire form of :class:`~aiaas_sdk.wire_datasets.DatasetManifest` for ``paths``, built
    as plain data: thousands of files, no model objects (the server validates it)."""
    files = [{"path": rel, "size": table[rel][0], "chunks": table[rel][1]} for rel in sorted(paths)]
    return {"files": files, "chunk_sizes": {d: p.size for d, p in pieces.items()}}
