"""The artifact store's contract: named objects and content-addressed blobs.

Two implementations keep it: :class:`~aiaas_backend.store.fs.FileStore` (a
directory, the default) and :class:`~aiaas_backend.store.s3.S3Store` (any
S3-compatible object storage). Everything above this seam -- dataset chunks
today, checkpoints and weights next -- names objects by key and never knows
which one it talks to.

Keys are ``/``-separated relative names (``chunks/ab/ab12...``). Objects are
written whole or not at all: a reader never sees half an object. Reads and
writes stream, so memory stays bounded whatever an object's size.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from datetime import datetime
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# How much one streaming read or write step holds in memory.
STREAM_BLOCK = 1024 * 1024


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid store key {key!r}: use /-separated names of letters, digits, '.', '_', '-'")
    return key


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


def blob_key(digest: str) -> str:
    """Where the blob whose SHA-256 is ``digest`` lives (fanned out by its first two hex digits)."""
    if not is_digest(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return f"blobs/{digest[:2]}/{digest}"


def pack_key() -> str:
    """A fresh name for a pack: one object holding many small blobs back to back, written
    once and never appended to (see :mod:`aiaas_backend.chunk_packs`)."""
    return f"packs/{uuid.uuid4().hex}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Store(ABC):
    """Where aiaas keeps bytes that outlive a process."""

    #: ``file:///...`` or ``s3://bucket/prefix``: what a log line or an error names.
    url: str

    @abstractmethod
    def put(self, key: str, source: BinaryIO) -> int:
        """Store the stream ``source`` (read to its end) at ``key``, replacing any object there;
        returns the bytes written. The object appears only once it is complete."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object at ``key``; :class:`KeyError` if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is at ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """The keys that start with ``prefix``, in no promised order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at ``key``; no error if there is none."""

    # -- durability: only a store on a local disk has anything to do ---------------
    def sync(self, keys: Collection[str] | None = None) -> None:
        """Make the objects at ``keys`` (None: every object written so far) survive a power cut.
        Writes are not flushed one by one (an fsync per chunk costs a journal commit each): a
        dataset version is committed only after a sync of the objects it names that are new
        since its base. Nothing to do by default: an object store's PUT is durable once it
        returns."""

    def synced_until(self) -> datetime | None:
        """Objects written before this time were flushed by a :meth:`sync`; those written after
        it may have been lost to a power cut since. None: every write is durable once it returns."""
        return None

    def lost(self, sizes: dict[str, int]) -> list[str]:
        """The keys of ``sizes`` whose object is missing or shorter than its size there (what a
        power cut can leave of a write that was not synced). None lost by default."""
        return []

    # -- conveniences built on the five above --------------------------------
    def put_bytes(self, key: str, data: bytes) -> int:
        return self.put(key, io.BytesIO(data))

    def put_parts(self, key: str, parts: Sequence[bytes | memoryview]) -> int:
        """Store the concatenation of ``parts`` (the pieces a request body arrived in)."""
        return self.put_bytes(key, b"".join(parts))

    def put_file(self, key: str, path: Path) -> int:
        """Store the file at ``path`` (which the caller keeps and must not change afterwards)."""
        with path.open("rb") as source:
            return self.put(key, source)

    def get_file(self, key: str, path: Path) -> int:
        """Write the object at ``key`` to ``path`` (whole or not at all); :class:`KeyError` if none."""
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            size = 0
            with self.open(key) as stream, tmp.open("wb") as out:
                while data := stream.read(STREAM_BLOCK):
                    out.write(data)
                    size += len(data)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """``size`` bytes of the object at ``key`` from ``offset`` (fewer if it ends first);
        :class:`KeyError` if there is none. For small ranges: they are returned whole."""
        with self.open(key) as stream:
            while offset > 0:  # streams need not seek: read past the start
                skipped = stream.read(min(offset, STREAM_BLOCK))
                if not skipped:
                    return b""
                offset -= len(skipped)
            return stream.read(size)

    def size(self, key: str) -> int:
        """The size of the object at ``key``; :class:`KeyError` if there is none. (This default
        reads the object through: the stores here ask the file system or the server.)"""
        with self.open(key) as stream:
            total = 0
            while data := stream.read(STREAM_BLOCK):
                total += len(data)
            return total

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def iter_bytes(self, key: str, block: int = STREAM_BLOCK) -> Iterator[bytes]:
        """The object at ``key`` in blocks of at most ``block`` bytes."""
        with self.open(key) as stream:
            while data := stream.read(block):
                yield data

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` under its own SHA-256 (once: an existing blob is not rewritten)."""
        digest = sha256_hex(data)
        key = blob_key(digest)
        if not self.exists(key):
            self.put_bytes(key, data)
        return digest

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
