"""Re-uploads as changes: what this machine last uploaded of a dataset, and the difference from it.

After each upload the SDK notes the version it got and its files (sizes and chunk
digests) in ``AIAAS_DATA_DIR/hash-cache.sqlite``, keyed by backend URL, API key and
dataset name. The next upload of that name sends only the files added or changed since,
and the paths gone, as a change of that version (``base``): for a folder of thousands
of files with a few edited, the manifest that travels, and that the server checks and
stores, is a few entries instead of thousands. The server checks that the base version
still exists with the same manifest digest and answers 409 ``base_mismatch`` otherwise;
the upload is then sent whole, so a stale or foreign record costs a round trip, never
a wrong version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ._hashing import Table, connect_cache
from .config import default_data_dir


@dataclass
class Base:
    version: int
    digest: str
    table: Table


def _owner(url: str, api_key: str | None) -> str:
    # The key itself is not stored: its hash tells two users of one backend apart.
    return url.rstrip("/") + "#" + hashlib.sha256((api_key or "").encode()).hexdigest()[:16]


class Bases:
    """The last version this machine uploaded of each dataset (see the module docstring)."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or default_data_dir() / "hash-cache.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect_cache(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS bases (owner TEXT, name TEXT, version INTEGER, digest TEXT, "
                         "files TEXT, PRIMARY KEY (owner, name))")

    def get(self, url: str, api_key: str | None, name: str) -> Base | None:
        row = self._db.execute("SELECT version, digest, files FROM bases WHERE owner = ? AND name = ?",
                               (_owner(url, api_key), name)).fetchone()
        if row is None:
            return None
        try:
            table = {rel: (size, chunks) for rel, (size, chunks) in json.loads(row[2]).items()}
        except (ValueError, TypeError):  # an unreadable record: send the whole manifest
            return None
        return Base(row[0], row[1], table)

    def put(self, url: str, api_key: str | None, name: str, version: int, digest: str, table: Table) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO bases VALUES (?, ?, ?, ?, ?)",
                             (_owner(url, api_key), name, version, digest, json.dumps(table, separators=(",", ":"))))

    def forget(self, url: str, api_key: str | None, name: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM bases WHERE owner = ? AND name = ?", (_owner(url, api_key), name))

    def close(self) -> None:
        self._db.close()


def changes(table: Table, base: Table) -> tuple[list[str], list[str]]:
    """The paths of ``table`` that are new or differ from ``base``, and those only ``base`` has."""
    changed = [rel for rel, entry in table.items() if base.get(rel) != entry]
    removed = [rel for rel in base if rel not in table]
    return changed, removed
