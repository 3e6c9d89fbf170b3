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
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .config import default_data_dir
from .wire_datasets import DatasetManifest, ManifestFile

CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Piece:
    """Where one chunk's bytes are: ``size`` bytes of ``path`` from ``offset``."""

    path: str
    offset: int
    size: int


class HashCache:
    """Chunk digests of files already hashed, keyed by path, size, mtime and inode (as git's
    index does): re-uploading a large folder re-reads only the files that changed.

    Rows are read for a whole upload in a few queries and written in one transaction at
    :meth:`close`: a folder of thousands of files costs milliseconds, not a query each."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_data_dir() / "hash-cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, stamp TEXT, chunks TEXT)")
        self._known: dict[str, tuple[str, str]] = {}
        self._new: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    @staticmethod
    def stamp(st: os.stat_result) -> str:
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{CHUNK_BYTES}"

    def load(self, paths: Iterable[str]) -> None:
        """Read the rows of ``paths`` (call before :meth:`get`; bounded IN lists)."""
        keys = list(paths)
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self._db.execute(f"SELECT path, stamp, chunks FROM files WHERE path IN ({','.join('?' * len(part))})",
                                    part).fetchall()
            self._known.update((p, (s, c)) for p, s, c in rows)

    def get(self, path: str, stamp: str) -> list[str] | None:
        row = self._known.get(path)
        return json.loads(row[1]) if row and row[0] == stamp else None

    def put(self, path: str, stamp: str, chunks: list[str]) -> None:
        with self._lock:
            self._new.append((path, stamp, json.dumps(chunks)))

    def close(self) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", self._new)
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


def hash_files(files: dict[str, str], parallel: int, cache: HashCache | None = None
               ) -> tuple[DatasetManifest, dict[str, Piece]]:
    """The manifest of ``files`` (``{path in the dataset: local file}``) and, for each chunk
    digest, where its bytes are. Files the cache knows cost a stat; only the others are read,
    ``parallel`` at a time."""
    if cache is not None:
        cache.load(files.values())
    found: dict[str, list[tuple[str, Piece]]] = {}
    to_read: list[tuple[str, str, str]] = []
    for rel, path in files.items():
        st = os.stat(path)
        stamp = HashCache.stamp(st)
        known = cache.get(path, stamp) if cache is not None else None
        if known is None:
            to_read.append((rel, path, stamp))
        else:
            found[rel] = [(d, Piece(path, i * CHUNK_BYTES, min(CHUNK_BYTES, st.st_size - i * CHUNK_BYTES)))
                          for i, d in enumerate(known)]

    def read(item: tuple[str, str, str]) -> list[tuple[str, Piece]]:
        _rel, path, stamp = item
        pieces = _hash_file(path)
        if cache is not None and sum(p.size for _, p in pieces) == int(stamp.split(":")[0]):
            cache.put(path, stamp, [d for d, _ in pieces])
        return pieces

    if to_read:
        with ThreadPoolExecutor(max(1, min(parallel, len(to_read)))) as pool:
            found.update(zip((rel for rel, _, _ in to_read), pool.map(read, to_read), strict=True))
    pieces: dict[str, Piece] = {}
    entries = []
    for rel in sorted(found):
        digests = found[rel]
        entries.append(ManifestFile.model_construct(path=rel, size=sum(p.size for _, p in digests),
                                                    chunks=[d for d, _ in digests]))
        for digest, piece in digests:
            pieces.setdefault(digest, piece)
    manifest = DatasetManifest.model_construct(files=entries,
                                               chunk_sizes={d: p.size for d, p in pieces.items()})
    return manifest, pieces
