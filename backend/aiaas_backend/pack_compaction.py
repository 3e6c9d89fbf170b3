"""Rewriting packs that mostly hold chunks nobody keeps.

A pack (:mod:`.chunk_packs`) is written once, and goes when no row names any chunk in it.
Until then the chunks deleted from it keep their bytes on disk: one small file that two
users share keeps the whole pack of deleted files it arrived with. So a deletion hands the
packs it took chunks from to :class:`Compactor`, and a pack whose kept chunks fill less
than :data:`LIVE_SHARE` of it has them copied into a new pack and goes. The kept chunks of
several such packs go into one new pack, up to :data:`NEW_PACK_BYTES`.

The order leaves no row without its bytes, whatever fails or runs at the same time:

1. read the old pack and check each kept chunk against its digest (a chunk that does not
   match is left where it is, and so is its pack);
2. write the new pack and flush it: a start's power-cut check (``datasets.recover_chunks``)
   only looks at chunks recorded since the store's last whole sync, and these rows are older;
3. move each row to the new pack only if it still names the old one (another deletion, or
   another server process compacting the same pack, may have dropped or moved it meanwhile);
4. delete the old pack once no row names it.

A reader that looked a chunk up before step 3 and reads after step 4 finds its pack gone and
looks again (``chunk_packs.read``'s ``relocate``). Two processes compacting one pack at once
leave an unnamed copy in one of the new packs: bytes a later compaction of that pack reclaims.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import chunk_packs
from .chunk_intake import write_turn
from .models import PackedChunk
from .store import Store

log = logging.getLogger(__name__)

# A pack is rewritten once the chunks kept in it fill less than this share of it.
LIVE_SHARE = 0.5
# The kept chunks of several sparse packs go into one new pack, up to this many bytes (the
# size of the packs an upload writes: the same-host socket's batches).
NEW_PACK_BYTES = 32 * 1024 * 1024


@dataclass
class Compacted:
    """What a compaction did: packs rewritten, their bytes, and the kept bytes copied out of them."""

    packs: int = 0
    before: int = 0
    after: int = 0

    def __iadd__(self, other: Compacted) -> Compacted:
        self.packs += other.packs
        self.before += other.before
        self.after += other.after
        return self

    @property
    def freed(self) -> int:
        return self.before - self.after


def kept_bytes(session: Session, packs: Collection[str] | None = None) -> dict[str, int]:
    """The bytes of the chunks rows name in each of ``packs`` (None: every pack); a pack no row
    names is not in the answer."""
    query = select(PackedChunk.pack, func.sum(PackedChunk.size)).group_by(PackedChunk.pack)
    if packs is None:
        return {pack: int(size) for pack, size in session.execute(query)}
    wanted = sorted(packs)
    out: dict[str, int] = {}
    for i in range(0, len(wanted), 500):  # bounded IN lists
        out.update((pack, int(size)) for pack, size in
                   session.execute(query.where(PackedChunk.pack.in_(wanted[i:i + 500]))))
    return out


def sparse(session: Session, store: Store, packs: Collection[str] | None = None) -> list[tuple[str, int, int]]:
    """``(pack, kept bytes, its size)`` of the packs among ``packs`` (None: all) that are worth
    rewriting. The size is the store's (it counts unnamed copies too); one call per pack."""
    out = []
    for pack, kept in sorted(kept_bytes(session, packs).items()):
        try:
            size = store.size(pack)
        except KeyError:
            continue  # lost: the start's check forgets its chunks
        if kept < LIVE_SHARE * size:
            out.append((pack, kept, size))
    return out


def compact(session: Session, store: Store, packs: Collection[str] | None = None) -> Compacted:
    """Rewrite the sparse packs among ``packs`` (None: every pack in the store)."""
    done = Compacted()
    group: list[tuple[str, int, int]] = []
    held = 0
    for item in sparse(session, store, packs):
        if group and held + item[1] > NEW_PACK_BYTES:
            done += _rewrite(session, store, group)
            group, held = [], 0
        group.append(item)
        held += item[1]
    if group:
        done += _rewrite(session, store, group)
    session.commit()  # ends the read transaction: the next call sees other processes' rows
    return done


def _rewrite(session: Session, store: Store, group: list[tuple[str, int, int]]) -> Compacted:
    """Copy the kept chunks of ``group``'s packs into one new pack, move their rows, drop the old packs."""
    moving: dict[str, list[bytes]] = {}
    came_from: dict[str, str] = {}
    for pack, _kept, _size in group:
        rows = session.execute(select(PackedChunk.digest, PackedChunk.offset, PackedChunk.size)
                               .where(PackedChunk.pack == pack)).all()
        try:
            data = store.get_bytes(pack)  # whole: one read, and a pack is at most a few tens of MiB
        except KeyError:
            continue
        for digest, offset, size in rows:
            chunk = data[offset:offset + size]
            if len(chunk) != size or hashlib.sha256(chunk).hexdigest() != digest:
                log.warning("pack %s: chunk %s does not match its digest; it stays where it is", pack, digest)
                continue
            moving[digest] = [chunk]
            came_from[digest] = pack
    if not moving:
        return Compacted()
    key, rows = chunk_packs.write_pack(store, moving)
    store.sync([key])
    with write_turn(session):
        for row in rows:
            session.execute(update(PackedChunk)
                            .where(PackedChunk.digest == row["digest"], PackedChunk.pack == came_from[row["digest"]])
                            .values(pack=key, offset=row["offset"]))
        session.commit()
    old = {pack for pack, _kept, _size in group}
    dropped = chunk_packs.drop_empty(session, store, old | {key})  # the new one too, if every row moved on
    gone = [(pack, size) for pack, _kept, size in group if pack in dropped]
    after = sum(len(chunk[0]) for chunk in moving.values()) if key not in dropped else 0
    log.info("compacted %d pack(s) of %d bytes into %s (%d bytes kept)", len(gone), sum(s for _p, s in gone), key,
             after)
    return Compacted(len(gone), sum(size for _pack, size in gone), after)


class Compactor:
    """Compacts the packs deletions hand it, on a thread of its own, one batch at a time: a
    deletion's request does not wait for the copying."""

    def __init__(self, sessions: Callable[[], Session], store: Store) -> None:
        self._sessions, self._store = sessions, store
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pack-compaction")
        self._lock = threading.Lock()
        self._total = Compacted()

    def submit(self, packs: Collection[str]) -> Future[Compacted] | None:
        """Compact the sparse ones among ``packs`` soon (None: nothing to look at)."""
        if not packs:
            return None
        return self._pool.submit(self._run, set(packs))

    def _run(self, packs: set[str]) -> Compacted:
        try:
            with self._sessions() as session:
                done = compact(session, self._store, packs)
        except Exception:  # bytes not freed yet, never data lost: `aiaas store compact` retries them all
            log.exception("compacting %d pack(s) failed", len(packs))
            raise
        with self._lock:
            self._total += done
        return done

    @property
    def total(self) -> Compacted:
        """What this compactor did since it started (for /metrics)."""
        with self._lock:
            return Compacted(self._total.packs, self._total.before, self._total.after)

    def close(self) -> None:
        # A compaction under way ends; queued ones are dropped (their packs stay sparse until a later
        # deletion or `aiaas store compact`): a stopping server does not copy gigabytes first.
        self._pool.shutdown(wait=True, cancel_futures=True)
