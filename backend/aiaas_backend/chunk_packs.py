"""Small dataset chunks, stored many to an object (a pack) instead of one object each.

A folder of thousands of small files would otherwise cost the store one object per
chunk: on a local disk that is an inode each, and ext4's inode allocation was 40% of the
server's CPU time uploading the benchmark's GiB (6,000 files of 4-64 KB), more when the
file system has many recently freed inodes; on S3 it is a PUT each. Chunks under
:data:`PACK_BELOW` bytes that one request brings are written back to back as one new pack
(``packs/<uuid>``); a ``dataset_packed_chunks`` row per digest says which pack holds it,
where. A pack is written once and never appended to, so a reader never sees it change.

Larger chunks stay blobs of their own (``blobs/ab/ab12...``). A digest with a row here is
read from its pack; any other from its blob (stores written before packs keep working).

Deleting: a row goes with the last user's :class:`~.models.DatasetChunk` of its digest,
and a pack goes once no row names it. A pack left mostly holding chunks nobody keeps is
rewritten by :mod:`.pack_compaction` (its kept chunks move to a new pack). Two uploads that
send the same new small chunk at the same moment each write it; the first row wins and the
other copy stays unnamed in its pack (bytes a compaction of that pack reclaims).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .models import PackedChunk
from .store import Store, blob_key, pack_key

# Chunks under this size go into packs (the SDK cuts files into 4 MiB chunks: a file under
# 1 MiB is one small chunk, as is a large file's short tail).
PACK_BELOW = 4 * 1024 * 1024

# Where a packed chunk is: (pack key, offset, size).
Location = tuple[str, int, int]
Parts = Sequence[bytes | memoryview]


def locations(session: Session, digests: Iterable[str]) -> dict[str, Location]:
    """The packed ones among ``digests``, by digest."""
    ordered = sorted(set(digests))
    out: dict[str, Location] = {}
    for i in range(0, len(ordered), 500):  # bounded IN lists
        for digest, pack, offset, size in session.execute(
                select(PackedChunk.digest, PackedChunk.pack, PackedChunk.offset, PackedChunk.size)
                .where(PackedChunk.digest.in_(ordered[i:i + 500]))):
            out[digest] = (pack, offset, size)
    return out


def keys(session: Session, digests: Collection[str], limit: int) -> set[str] | None:
    """The store keys holding ``digests`` (their packs, or their blobs), or None when there are
    more than ``limit`` digests (the caller then syncs the whole store)."""
    if len(digests) > limit:
        return None
    where = locations(session, digests)
    return {where[d][0] if d in where else blob_key(d) for d in digests}


def write_pack(store: Store, chunks: dict[str, Parts]) -> tuple[str, list[dict[str, object]]]:
    """Store ``chunks`` back to back as one new pack; returns its key and the index rows to
    insert (after the pack is written: a row always has its bytes behind it)."""
    key = pack_key()
    parts: list[bytes | memoryview] = []
    rows: list[dict[str, object]] = []
    offset = 0
    for digest, chunk in chunks.items():
        size = sum(len(p) for p in chunk)
        rows.append({"digest": digest, "pack": key, "offset": offset, "size": size})
        parts.extend(chunk)
        offset += size
    store.put_parts(key, parts)
    return key, rows


def read(store: Store, digest: str, where: Location | None,
         relocate: Callable[[], Location | None] | None = None) -> Iterator[bytes]:
    """A chunk's bytes: from its pack when ``where`` says so, else from its blob. ``relocate``
    looks the chunk up again when its pack is gone: a compaction (:mod:`.pack_compaction`)
    may have moved it since ``where`` was looked up."""
    if where is not None:
        try:
            data = _packed(store, digest, where)
        except KeyError:
            if relocate is None:
                raise
            where = relocate()
            if where is not None:
                data = _packed(store, digest, where)
        if where is not None:
            yield data
            return
    yield from store.iter_bytes(blob_key(digest))


def _packed(store: Store, digest: str, where: Location) -> bytes:
    pack, offset, size = where
    data = store.read_range(pack, offset, size)
    if len(data) != size:
        raise KeyError(f"{pack} ends before chunk {digest} ({size} bytes at {offset})")
    return data


def forget(session: Session, digests: Sequence[str]) -> dict[str, str]:
    """Drop the rows of ``digests`` (chunks nobody keeps any more); returns ``{digest: pack}`` for
    the packed ones. Call :func:`drop_empty` with their packs after the transaction commits."""
    where = {digest: loc[0] for digest, loc in locations(session, digests).items()}
    found = sorted(where)
    for i in range(0, len(found), 500):
        session.execute(delete(PackedChunk).where(PackedChunk.digest.in_(found[i:i + 500])))
    return where


def drop_empty(session: Session, store: Store, packs: Iterable[str]) -> set[str]:
    """Delete the packs among ``packs`` that no row names (new chunks never go into an old pack,
    so a pack found empty stays empty); returns those deleted."""
    dropped = set()
    for pack in packs:
        if not session.scalar(select(func.count()).select_from(PackedChunk).where(PackedChunk.pack == pack)):
            store.delete(pack)
            dropped.add(pack)
    return dropped
