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
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from ._hashing import Table


@dataclass
class Base:
    version: int
    digest: str
    seen: dict[str, str]  # path in the dataset -> "local file|its stamp" when it was uploaded (see _seen)
    patches: int  # how many of them are noted apart from the record's JSON text (see Bases.put)
    _db: sqlite3.Connection
    _key: tuple[str, str]

    def table(self, paths: Iterable[str]) -> Table:
        """The noted size and chunks of those of ``paths`` the record has (files of this version)."""
        wanted = list(paths)
        out: Table = {}
        for i in range(0, len(wanted), 500):  # bounded IN lists
            part = wanted[i:i + 500]
            for rel, size, chunks in self._db.execute(
                    f"SELECT path, size, chunks FROM base_files WHERE owner = ? AND name = ? AND path IN "
                    f"({','.join('?' * len(part))})", (*self._key, *part)):
                out[rel] = (size, chunks.split(",") if chunks else [])
        return out


def _seen(local: str, stamp: str) -> str:
    # A stamp has no "|" (digits and ":"), so two of these are equal only if both parts are;
    # "|" needs no escape in JSON (a NUL did, and made the record twice as slow to read).
    return local + "|" + stamp


def _owner(url: str, api_key: str | None) -> str:
    # The key itself is not stored: its hash tells two users of one backend apart.
    return url.rstrip("/") + "#" + hashlib.sha256((api_key or "").encode()).hexdigest()[:16]


class Bases:
    """The last version this machine uploaded of each dataset (see the module docstring), in the
    hash cache's database (``db``: the upload's one connection to it).

    The stamps are one JSON text per dataset, read whole at each upload (2 ms for 6,445 files,
    where as many rows took 15), plus the few changed since it was written, as rows: a re-upload
    of a few files writes those, not the 650 KB text again (which cost more than the rest of the
    record's work, twice over with SQLite's checkpoint). The files' entries are rows (few are
    read, and few rewritten)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with db:
            # ``bases`` held a version's files as one JSON text (decoded and rewritten whole each time).
            db.execute("DROP TABLE IF EXISTS bases")
            db.execute("CREATE TABLE IF NOT EXISTS base_versions (owner TEXT, name TEXT, version INTEGER, "
                       "digest TEXT, seen TEXT, PRIMARY KEY (owner, name))")
            # A path's stamp since the text was written (NULL: the path is gone).
            db.execute("CREATE TABLE IF NOT EXISTS base_seen (owner TEXT, name TEXT, path TEXT, seen TEXT, "
                       "PRIMARY KEY (owner, name, path)) WITHOUT ROWID")
            db.execute("CREATE TABLE IF NOT EXISTS base_files (owner TEXT, name TEXT, path TEXT, size INTEGER, "
                       "chunks TEXT, PRIMARY KEY (owner, name, path)) WITHOUT ROWID")

    def get(self, url: str, api_key: str | None, name: str) -> Base | None:
        key = (_owner(url, api_key), name)
        row = self._db.execute("SELECT version, digest, seen FROM base_versions WHERE owner = ? AND name = ?",
                               key).fetchone()
        if row is None:
            return None
        try:
            seen = json.loads(row[2])
        except (TypeError, ValueError):  # unreadable: the whole manifest goes
            return None
        patches = self._db.execute("SELECT path, seen FROM base_seen WHERE owner = ? AND name = ?", key).fetchall()
        for path, value in patches:
            if value is None:
                seen.pop(path, None)
            else:
                seen[path] = value
        return Base(row[0], row[1], seen, len(patches), self._db, key)

    def put(self, url: str, api_key: str | None, name: str, version: int, digest: str, table: Table,
            files: dict[str, str], stamps: dict[str, str], removed: Iterable[str] = (),
            base: Base | None = None) -> None:
        """Note ``version`` as the last upload of ``name`` from ``files`` (with ``stamps``). With
        ``base`` (what get returned), it is that version changed: the entries of ``table`` replace
        or add to those noted, ``removed`` go. Without, ``table`` is all the version holds."""
        key = (_owner(url, api_key), name)
        removed = list(removed)
        changed = {rel: _seen(files[rel], stamps[rel]) for rel in table}
        rows = [(*key, rel, size, ",".join(chunks)) for rel, (size, chunks) in table.items()]
        with self._db:
            if base is None:
                self._db.execute("DELETE FROM base_files WHERE owner = ? AND name = ?", key)
            self._db.executemany("DELETE FROM base_files WHERE owner = ? AND name = ? AND path = ?",
                                 [(*key, rel) for rel in removed])
            self._db.executemany("INSERT OR REPLACE INTO base_files VALUES (?, ?, ?, ?, ?)", rows)
            if base is not None and base.patches + len(changed) + len(removed) <= max(256, len(base.seen) // 8):
                self._db.executemany("INSERT OR REPLACE INTO base_seen VALUES (?, ?, ?, ?)",
                                     [(*key, rel, value) for rel, value in changed.items()] +
                                     [(*key, rel, None) for rel in removed])
                self._db.execute("UPDATE base_versions SET version = ?, digest = ? WHERE owner = ? AND name = ?",
                                 (version, digest, *key))
                return
            # The whole text again (the first time, or once the rows would grow past an eighth of it).
            seen = {rel: _seen(local, stamps[rel]) for rel, local in files.items()}
            self._db.execute("DELETE FROM base_seen WHERE owner = ? AND name = ?", key)
            self._db.execute("INSERT OR REPLACE INTO base_versions VALUES (?, ?, ?, ?, ?)",
                             (*key, version, digest, json.dumps(seen, separators=(",", ":"))))

    def forget(self, url: str, api_key: str | None, name: str) -> None:
        key = (_owner(url, api_key), name)
        with self._db:
            for table in ("base_versions", "base_seen", "base_files"):
                self._db.execute(f"DELETE FROM {table} WHERE owner = ? AND name = ?", key)


def changes(table: Table, base: Base, files: dict[str, str]) -> tuple[list[str], list[str]]:
    """The paths of ``table`` (the files read or looked up) that are new or differ from ``base``,
    and the paths only ``base`` has (gone from ``files``)."""
    noted = base.table(rel for rel in table if rel in base.seen)
    changed = [rel for rel, entry in table.items() if noted.get(rel) != entry]  # not noted: sent
    removed = [rel for rel in base.seen if rel not in files]
    return changed, removed
