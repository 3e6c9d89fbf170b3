"""Taking in dataset chunks: verify each against its digest, store the new ones, record them.

A blob reaches the store before the row that lets its user name it is committed, so a
committed row always has its bytes behind it (a crash in between leaves an unnamed blob,
never a named hole).

Uploads keep several requests in flight and each ends in a small write transaction. On
SQLite those transactions take turns on a process-wide lock: SQLite's own lock makes a
waiting writer sleep in growing steps (1, 2, 5, 10 ms...), which the profile of a 1 GB
upload showed as most of the server's time; a Python lock wakes the next writer at once.
Each request's rows go in as one INSERT that ignores rows already there (idempotent PUTs).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from . import chunk_packs
from . import datasets as ds
from .errors import ApiError
from .models import DatasetChunk, PackedChunk, User, utcnow
from .dataset_sweep import OWNERSHIP
from .store import Store, blob_key

_SQLITE_WRITER = threading.Lock()


@contextmanager
def write_turn(session: Session) -> Iterator[None]:
    """Hold the process's SQLite write turn (nothing to wait for on PostgreSQL)."""
    if session.get_bind().dialect.name == "sqlite":
        with _SQLITE_WRITER:
            yield
    else:
        yield


# A chunk's bytes: the parts of the request body it arrived in (views, not copies).
Parts = Sequence[bytes | memoryview]


def verify(chunks: Sequence[tuple[str, Parts]]) -> None:
    """Refuse the request (400) if any chunk's bytes do not hash to its digest."""
    for digest, parts in chunks:
        hasher = hashlib.sha256()
        for part in parts:
            hasher.update(part)  # releases the GIL: requests hash in parallel
        actual = hasher.hexdigest()
        if actual != digest:
            raise ApiError(400, f"chunk {digest}: its bytes hash to {actual}: it was corrupted on the way or the "
                           "file changed while uploading; upload again", "chunk_hash_mismatch")


def insert_ignoring_duplicates(session: Session, table: Table, rows: list[dict[str, object]]) -> None:
    """Insert ``rows`` into ``table``, skipping those whose key is there already (idempotent
    PUTs; two uploads of one chunk at once). Core inserts: the ORM's bulk path cost a tenth
    of the server's Python time per upload (thousands of rows)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:  # another database: plain INSERT of rows the caller checked are absent
        session.execute(insert(table), rows)
        return
    session.execute(dialect_insert(table).on_conflict_do_nothing(), rows)


def take(session: Session, user: User, store: Store, quota: int | None,
         chunks: Sequence[tuple[str, Parts]], *, verified: bool = False, durable: bool = False,
         sweep: Callable[[], None] | None = None) -> dict[str, int]:
    """Verify ``chunks``, store the ones the backend lacks (the small ones as one pack, see
    :mod:`.chunk_packs`), and record those this user had not sent before; returns those
    new to the user, with their sizes. Nothing is recorded if one is bad.

    ``verified``: the caller computed each digest from these very bytes (the same-host
    socket hashes what it read), so hashing them again would check nothing. ``durable``: flush
    what was written before recording it, so that a commit naming these chunks finds them
    flushed (the socket's batches end while the client still stats its folder; the commit
    then waits for no disk). ``sweep`` runs before refusing chunks over the quota (see
    :func:`.datasets.check_quota`)."""
    if not verified:
        verify(chunks)
    fresh = {digest: data for digest, data in chunks}
    for have in ds.owned_chunks(session, user, set(fresh)):
        del fresh[have]
    if not fresh:
        return {}
    sizes = {digest: sum(len(p) for p in parts) for digest, parts in fresh.items()}
    ds.check_quota(session, user, quota, sum(sizes.values()), sweep)
    small = {d for d in fresh if sizes[d] < chunk_packs.PACK_BELOW}
    packed = set(chunk_packs.locations(session, small))  # another user's, stored once
    pack_rows, written = _store(store, fresh, sizes, packed, durable)
    reused = [d for d in fresh if d in packed or (d not in small and blob_key(d) not in written)]
    now = utcnow()
    rows: list[dict[str, object]] = [{"user_id": user.id, "digest": d, "size": size, "created_at": now}
                                     for d, size in sizes.items()]
    with OWNERSHIP, write_turn(session):
        insert_ignoring_duplicates(session, PackedChunk.__table__, pack_rows)
        insert_ignoring_duplicates(session, DatasetChunk.__table__, rows)
        if reused:
            # The chunks found stored by someone else may have lost their last holder since, and
            # their bytes with them (a sweep between the lookup above and this turn): store those again.
            there = chunk_packs.locations(session, [d for d in reused if d in packed])
            gone = {d: fresh[d] for d in reused
                    if (d not in there if d in packed else not store.exists(blob_key(d)))}
            if gone:
                again, _ = _store(store, gone, sizes, set(), durable)
                insert_ignoring_duplicates(session, PackedChunk.__table__, again)
        session.commit()
    return sizes


def _store(store: Store, chunks: dict[str, Parts], sizes: dict[str, int], packed: set[str], durable: bool
           ) -> tuple[list[dict[str, object]], list[str]]:
    """Write those of ``chunks`` the store lacks: the small ones not in ``packed`` as one new pack,
    the others as blobs unless one is there; the new pack's rows, and the keys written (flushed
    when ``durable``)."""
    to_pack = {d: parts for d, parts in chunks.items() if sizes[d] < chunk_packs.PACK_BELOW and d not in packed}
    pack_rows: list[dict[str, object]] = []
    written: list[str] = []
    try:
        if to_pack:
            key, pack_rows = chunk_packs.write_pack(store, to_pack)
            written.append(key)
        for digest, parts in chunks.items():
            if sizes[digest] < chunk_packs.PACK_BELOW:
                continue
            key = blob_key(digest)
            if not store.exists(key):  # another user's identical chunk: stored once
                store.put_parts(key, parts)
                written.append(key)
        if durable and written:
            store.sync(written)
    except Exception as exc:  # S3 and disk failures alike: the SDK retries a 503
        raise ApiError(503, f"the dataset store ({store.url}) failed: {type(exc).__name__}: {exc}; "
                       "the upload resumes where it stopped when you call it again", "store_unavailable",
                       {"Retry-After": "1"}) from exc
    return pack_rows, written
