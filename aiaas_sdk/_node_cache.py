"""A node's read-only cache of dataset versions, shared by every run on the node (and, on a
notebook's machine, what ``aiaas.data_path`` fetches a version into).

Layout under the cache dir::

    files/ab/<file id>        one read-only file per distinct content (id: SHA-256 of its chunk list)
    versions/<version digest>/  the version's tree, hard links into files/ (appears whole, by rename)
    locks/<version digest>.lock  exclusive while a version is built, shared while a run reads it

A version already here costs a directory lookup, whatever its size, so a cached
dataset adds nothing to a run's start. Versions that share files share their bytes
on disk. Above ``max_bytes`` the least recently used versions that no run holds go,
then the files no version links any more.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from ._flush import flush_files
from .wire_datasets import DatasetManifest, ManifestFile

# fetch(digest) -> the chunk's bytes as an iterator of blocks.
Fetch = Callable[[str], Iterator[bytes]]


class ChunkCorrupted(RuntimeError):
    pass


def file_id(f: ManifestFile) -> str:
    return hashlib.sha256(f"{f.size}:{','.join(f.chunks)}".encode()).hexdigest()


class NodeCache:
    def __init__(self, root: Path, max_bytes: int, parallel: int = 8) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.parallel = parallel
        for sub in ("files", "versions", "locks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # Shared locks held for this process's life: the versions its run reads are never evicted.
        self._held: dict[str, IO[bytes]] = {}
        # Whether this handle built a version (the cache may have outgrown its size).
        self.grew = False

    def close(self) -> None:
        """Release this process's read locks (its run ended): its versions may be evicted."""
        for lock in self._held.values():
            lock.close()
        self._held.clear()

    def _lock(self, digest: str) -> IO[bytes]:
        return open(self.root / "locks" / f"{digest}.lock", "a+b")

    def version(self, digest: str, manifest: DatasetManifest | Callable[[], DatasetManifest], fetch: Fetch) -> Path:
        """The read-only folder of this version, built first if it is not here. ``manifest`` may
        be a function that gives it: a cached version of thousands of files is then not parsed."""
        path = self.root / "versions" / digest
        if digest in self._held and path.is_dir():  # this handle reads it already
            os.utime(path)
            return path
        lock = self._lock(digest)
        if not path.is_dir():
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per node; the others wait, then find it built
            try:
                if not path.is_dir():
                    self._build(path, manifest if isinstance(manifest, DatasetManifest) else manifest(), fetch)
                    self.grew = True
            except BaseException:
                lock.close()  # a failed build holds nothing (closing also drops the lock)
                raise
            finally:
                if not lock.closed:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_SH)
        if digest in self._held:  # this handle holds its read lock already
            lock.close()
        else:
            self._held[digest] = lock
        os.utime(path)  # the LRU clock
        return path

    def _build(self, path: Path, manifest: DatasetManifest, fetch: Fetch) -> None:
        missing = {fid: f for f in manifest.files if not self._has(fid := file_id(f), f.size)}
        with ThreadPoolExecutor(self.parallel) as pool:
            futures = [pool.submit(self._fetch_file, fid, f, fetch) for fid, f in missing.items()]
        written = [future.result() for future in futures if future.exception() is None]  # (temporary, final)
        try:
            # Their bytes on disk before any name points at them: after a power cut a run must not
            # find a version whose files are empty or short (see aiaas_sdk._flush). Those fetched
            # whole are kept even if another failed: the next try fetches only the rest.
            flush_files([tmp for tmp, _final in written], self.root)
            for tmp, final in written:
                tmp.replace(final)
        finally:
            for tmp, _final in written:
                tmp.unlink(missing_ok=True)
        failed = [error for future in futures if (error := future.exception()) is not None]
        if failed:
            raise failed[0]
        tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        for f in manifest.files:
            target = tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(self._file(file_id(f)), target)
        for dirpath, _dirs, _files in os.walk(tmp):
            os.chmod(dirpath, 0o555)
        tmp.rename(path)

    def _file(self, fid: str) -> Path:
        return self.root / "files" / fid[:2] / fid

    def _has(self, fid: str, size: int) -> bool:
        """Whether the file is here whole. A cache written before its files were flushed may
        hold one a power cut left short (empty, on ext4): it is fetched again."""
        try:
            return self._file(fid).stat().st_size == size
        except FileNotFoundError:
            return False

    def _fetch_file(self, fid: str, f: ManifestFile, fetch: Fetch) -> tuple[Path, Path]:
        """Fetch a file into a temporary name beside its final one (the caller flushes and
        renames it); returns both."""
        final = self._file(fid)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{fid}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tmp.open("wb") as out:
                for digest in f.chunks:
                    hasher = hashlib.sha256()
                    for block in fetch(digest):
                        hasher.update(block)
                        out.write(block)
                    if hasher.hexdigest() != digest:
                        raise ChunkCorrupted(f"chunk {digest} of {f.path} arrived corrupted")
            tmp.chmod(0o444)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, final

    # -- eviction -------------------------------------------------------------------
    def size(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root / "files"):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def evict(self, *, only_if_grew: bool = False) -> list[str]:
        """Remove least recently used versions no run holds until the cache fits; returns them.
        ``only_if_grew``: nothing to do unless this handle built a version (measuring the cache
        stats every file in it: a run whose versions were all cached must not pay for that)."""
        if only_if_grew and not self.grew:
            return []
        self.grew = False  # measured now: the next call need not, unless a version is built meanwhile
        if self.size() <= self.max_bytes:
            return []
        removed = []
        versions = sorted((p for p in (self.root / "versions").iterdir() if not p.name.startswith(".")),
                          key=lambda p: p.stat().st_mtime)
        for path in versions:
            with self._lock(path.name) as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a run reads it
                _remove_tree(path)
                removed.append(path.name)
            self._drop_unlinked()
            if self.size() <= self.max_bytes:
                break
        return removed

    def _drop_unlinked(self) -> None:
        for dirpath, _dirs, files in os.walk(self.root / "files"):
            for name in files:
                file = Path(dirpath, name)
                try:
                    if file.stat().st_nlink == 1 and not name.startswith("."):
                        file.unlink()
                except FileNotFoundError:
                    pass


def _remove_tree(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, stat.S_IRWXU)
    # Renamed first, so a half-removed version is never mistaken for a complete one.
    doomed = path.with_name(f".gone-{path.name}-{time.monotonic_ns()}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
