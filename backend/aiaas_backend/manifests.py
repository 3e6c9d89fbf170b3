"""Building a version's manifest at the commit: a change applied to its base, its digest, its row.

A version stores its whole manifest (one row: the worker, the node cache and deletes read it
in one go), so a re-upload that changes 64 of 6,445 files still writes 6,445 entries. Built
from Python objects each time (parse the base's JSON, apply the change, encode it once
canonically for the digest and once for the row) that cost about 25 ms of a 1% re-upload's
commit, more than the change itself. Here each file carries its two encodings, built once by
string formatting, and the newest manifests a commit may build on stay in memory, keyed by
their digest: a change then copies references and joins strings.

The cache is content-addressed: a digest names one manifest (SHA-256 of its canonical form),
whoever's it is and whichever row holds it, so an entry can never be stale, and a commit
reaches one only through a base version the user owns (``datasets.find_base``). It holds at
most CACHE_FILES files' entries (a few MB per 10,000 files); a miss parses the base's row.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

CACHE_FILES = 100_000

# _quote is what json.dumps uses for a str (ensure_ascii): the same text, escapes and all.

# A file's entry and its two encodings: in the stored row (json.dumps's default separators) and
# in the canonical text the digest hashes (compact; see datasets.manifest_digest).
Entry = tuple[dict[str, Any], str, str]


def _entry(f: dict[str, Any]) -> Entry:
    path, size, chunks = _quote(f["path"]), int(f["size"]), f["chunks"]
    # Chunks are validated hex digests (wire_datasets): nothing in them needs escaping.
    listed = '"' + '", "'.join(chunks) + '"' if chunks else ""
    compact = '"' + '","'.join(chunks) + '"' if chunks else ""
    entry = {"path": f["path"], "size": size, "chunks": chunks}
    return entry, f'{{"path": {path}, "size": {size}, "chunks": [{listed}]}}', f"[{path},{size},[{compact}]]"


class Encoded(dict):  # type: ignore[type-arg]
    """A JSON value whose text is already built: the engine's serializer writes ``text`` as it is
    (db.encode_json) instead of encoding the dict again."""

    def __init__(self, value: dict[str, Any], text: str) -> None:
        super().__init__(value)
        self.text = text


@dataclass
class Manifest:
    """A version's files by path (each with its encodings) and the digest of the whole."""

    files: dict[str, Entry]
    order: list[str]  # sorted paths
    digest: str

    @property
    def bytes(self) -> int:
        return sum(e[0]["size"] for e in self.files.values())

    def row(self) -> Encoded:
        """The value to store in DatasetVersion.manifest (``{"files": [...]}``, sorted by path)."""
        entries = [self.files[p] for p in self.order]
        return Encoded({"files": [e[0] for e in entries]}, '{"files": [' + ", ".join(e[1] for e in entries) + "]}")


def build(files: dict[str, Entry], order: list[str] | None = None) -> Manifest:
    order = order if order is not None else sorted(files)
    canonical = "[" + ",".join(files[p][2] for p in order) + "]"
    return Manifest(files, order, hashlib.sha256(canonical.encode()).hexdigest())


def whole(files: list[dict[str, Any]]) -> Manifest:
    """The manifest of a whole upload's (or a stored version's) file list."""
    return build({f["path"]: _entry(f) for f in files})


def apply(base: Manifest, changed: list[dict[str, Any]], removed: list[str]) -> Manifest:
    """``base`` with ``removed`` paths gone and ``changed`` files added or replaced (the caller
    checked that each removed path is in the base)."""
    files = dict(base.files)
    for path in removed:
        del files[path]
    added = False
    for f in changed:
        added |= f["path"] not in files
        files[f["path"]] = _entry(f)
    return build(files, None if added or removed else base.order)


_cache: OrderedDict[str, Manifest] = OrderedDict()
_lock = threading.Lock()


def cached(digest: str) -> Manifest | None:
    with _lock:
        found = _cache.get(digest)
        if found is not None:
            _cache.move_to_end(digest)
        return found


def remember(manifest: Manifest) -> None:
    """Keep ``manifest`` for the next commit that builds on it (the oldest go past CACHE_FILES)."""
    if len(manifest.files) > CACHE_FILES:
        return
    with _lock:
        _cache[manifest.digest] = manifest
        _cache.move_to_end(manifest.digest)
        while sum(len(m.files) for m in _cache.values()) > CACHE_FILES:
            _cache.popitem(last=False)
