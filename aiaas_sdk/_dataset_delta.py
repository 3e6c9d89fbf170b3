"""Re-uploads as changes: what this machine last uploaded of a dataset, and the difference from it.

After each upload the SDK notes the version it got and its files in
``AIAAS_DATA_DIR/hash-cache.sqlite``, keyed by backend URL, API key and dataset name: per
file, its size and chunk digests, and the local file it was read from with that file's
stamp (size, mtime, inode, as in the hash cache). The next upload of that name compares
stamps first: a file whose stamp is the one noted is the file the version holds, and costs
nothing more than its ``stat`` (no hash-cache lookup, no entry built); only the others are
looked up or read. It then sends the files added or changed since, and the paths gone, as a
change of that version (``base``): for a folder of thousands of files with a few edited, the
manifest that travels, and that the server checks and stores, is a few entries instead of
thousands. A file is a row, so noting the new version rewrites the rows of the files that
changed, not thousands.

The server checks that the base version still exists with the same manifest digest and
answers 409 ``base_mismatch`` otherwise; the upload is then sent whole, so a stale or
foreign record costs a round trip, never a wrong version.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from ._hashing import Table

# What the record holds of one file: (local file, its stamp, size, chunk digests joined by commas).
Noted = tuple[str, str, int, str]


@dataclass
class Base:
    version: int
    digest: str
    files: dict[str, Noted]

    def unchanged(self, files: dict[str, str], stamps: dict[str, str]) -> set[str]:
        """The paths of ``files`` read from the same local file, with the same stamp, as noted."""
        noted = self.files
        return {rel for rel, local in files.items()
                if (entry := noted.get(rel)) is not None and entry[1] == stamps[rel] and entry[0] == local}

    def table(self, paths: Iterable[str]) -> Table:
        """The noted size and chunks of ``paths``."""
        out: Table = {}
        for rel in paths:
            _local, _stamp, size, chunks = self.files[rel]
            out[rel] = (size, chunks.split(",") if chunks else [])
        return out


def _owner(url: str, api_key: str | None) -> str:
    # The key itself is not stored: its hash tells two users of one backend apart.
    return url.rstrip("/") + "#" + hashlib.sha256((api_key or "").encode()).hexdigest()[:16]


class Bases:
    """The last version this machine uploaded of each dataset (see the module docstring), in the
    hash cache's database (``db``: the upload's one connection to it)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with db:
            # ``bases`` held a version's files as one JSON text (rewritten whole at each upload).
            db.execute("DROP TABLE IF EXISTS bases")
            db.execute("CREATE TABLE IF NOT EXISTS base_versions (owner TEXT, name TEXT, version INTEGER, "
                       "digest TEXT, PRIMARY KEY (owner, name))")
            db.execute("CREATE TABLE IF NOT EXISTS base_files (owner TEXT, name TEXT, path TEXT, local TEXT, "
                       "stamp TEXT, size INTEGER, chunks TEXT, PRIMARY KEY (owner, name, path))")

    def get(self, url: str, api_key: str | None, name: str) -> Base | None:
        key = (_owner(url, api_key), name)
        row = self._db.execute("SELECT version, digest FROM base_versions WHERE owner = ? AND name = ?",
                               key).fetchone()
        if row is None:
            return None
        rows = self._db.execute("SELECT path, local, stamp, size, chunks FROM base_files WHERE owner = ? AND name = ?",
                                key).fetchall()
        return Base(row[0], row[1], {path: (local, stamp, size, chunks) for path, local, stamp, size, chunks in rows})

    def put(self, url: str, api_key: str | None, name: str, version: int, digest: str, table: Table,
            files: dict[str, str], stamps: dict[str, str], removed: Iterable[str] = (), whole: bool = False) -> None:
        """Note ``version`` as the last upload of ``name``: the files of ``table`` (read from
        ``files`` with ``stamps``) replace or add to those noted, ``removed`` go; ``whole``: the
        table is all the version holds."""
        key = (_owner(url, api_key), name)
        rows = [(*key, rel, files[rel], stamps[rel], size, ",".join(chunks)) for rel, (size, chunks) in table.items()]
        with self._db:
            if whole:
                self._db.execute("DELETE FROM base_files WHERE owner = ? AND name = ?", key)
            self._db.executemany("DELETE FROM base_files WHERE owner = ? AND name = ? AND path = ?",
                                 [(*key, rel) for rel in removed])
            self._db.executemany("INSERT OR REPLACE INTO base_files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("INSERT OR REPLACE INTO base_versions VALUES (?, ?, ?, ?)", (*key, version, digest))

    def forget(self, url: str, api_key: str | None, name: str) -> None:
        key = (_owner(url, api_key), name)
        with self._db:
            self._db.execute("DELETE FROM base_versions WHERE owner = ? AND name = ?", key)
            self._db.execute("DELETE FROM base_files WHERE owner = ? AND name = ?", key)


def changes(table: Table, base: Base, files: dict[str, str]) -> tuple[list[str], list[str]]:
    """The paths of ``table`` (the files read or looked up) that are new or differ from ``base``,
    and the paths only ``base`` has (gone from ``files``)."""
    noted = base.table(rel for rel in table if rel in base.files)
    changed = [rel for rel, entry in table.items() if noted.get(rel) != entry]
    removed = [rel for rel in base.files if rel not in files]
    return changed, removed
