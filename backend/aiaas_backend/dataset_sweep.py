"""Forgetting what a user no longer keeps: upload sessions that will not be committed, and the
chunks nothing of theirs names any more.

An open upload session names the chunks it will commit, so they are kept (stored, and counted
in the user's quota) while it is open. An upload interrupted in the notebook is never
committed: calling ``client.upload`` again opens a new session and commits that one. The old
session used to stay open for good, and with it every chunk its manifest named, even after
the user deleted every version of the dataset. Now:

- a commit closes the uploads of the same dataset that the user opened before it (earlier
  tries at the same version). An upload of the same dataset racing it from another notebook
  then gets 404 ``upload_not_found`` at its own commit, naming why, and the SDK opens it again
  once;
- an upload left open longer than ``AIAAS_DATASET_UPLOAD_TTL_S`` (a day by default) is closed by
  the next sweep of its user.

:func:`sweep` runs when a version is deleted, after a commit that closed earlier uploads, and
before an upload is refused for going over the user's quota. That last one keeps the chunks
recorded in the last :data:`IN_FLIGHT` even if nothing names them yet: an upload on its way
stores chunks before it opens its session (the same-host socket reads the files first), and a
sweep made while it goes over the quota must not take them from under it.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from . import chunk_packs
from .models import Dataset, DatasetChunk, DatasetUpload, DatasetVersion, User, utcnow
from .store import Store, blob_key

if TYPE_CHECKING:
    from .pack_compaction import Compactor


def close_earlier_uploads(session: Session, user: User, name: str, before: datetime) -> int:
    """Close the user's uploads of dataset ``name`` opened before ``before`` (a commit's own
    upload's start); returns how many. The caller commits."""
    result = session.execute(delete(DatasetUpload).where(
        DatasetUpload.user_id == user.id, DatasetUpload.name == name, DatasetUpload.created_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# A sweep for the quota keeps unnamed chunks recorded this recently (see the module docstring).
IN_FLIGHT = timedelta(minutes=15)

# Who keeps a chunk changes under this lock. A sweep decides that nobody keeps a chunk and
# deletes its bytes; an upload that found the chunk stored (another user's) records its own row.
# Interleaved, the upload could record a row for bytes the sweep then deletes. Under the lock,
# the upload looks again before it commits (chunk_intake.take) and stores the bytes if they are
# gone. Every dataset write runs in the API's first process, so a process-wide lock is enough.
OWNERSHIP = threading.Lock()


def sweep(session: Session, store: Store, user: User, upload_ttl_s: float,
          keep_since: datetime | None = None) -> set[str]:
    """Close the user's uploads open longer than ``upload_ttl_s``, then drop the user's chunks
    that no version and no open upload of theirs names (but those recorded since ``keep_since``),
    and blobs nobody keeps. Commits. Returns the packs that lost chunks and still hold some (for
    :mod:`.pack_compaction`)."""
    with OWNERSHIP:
        return sweep_held(session, store, user, upload_ttl_s, keep_since)


def sweep_held(session: Session, store: Store, user: User, upload_ttl_s: float,
               keep_since: datetime | None = None) -> set[str]:
    """:func:`sweep`, for a caller that holds :data:`OWNERSHIP` (taken before its transaction's
    first write: an upload holding the lock may be waiting for that transaction's write lock)."""
    from .datasets import chunk_digests

    session.execute(delete(DatasetUpload).where(
        DatasetUpload.user_id == user.id, DatasetUpload.created_at < utcnow() - timedelta(seconds=upload_ttl_s)))
    session.flush()
    keep: set[str] = set()
    for manifest in session.scalars(select(DatasetVersion.manifest).join(Dataset)
                                    .where(Dataset.user_id == user.id)):
        keep |= chunk_digests(manifest)
    for manifest in session.scalars(select(DatasetUpload.manifest).where(DatasetUpload.user_id == user.id)):
        keep |= chunk_digests(manifest)
    mine = select(DatasetChunk.digest).where(DatasetChunk.user_id == user.id)
    if keep_since is not None:
        mine = mine.where(DatasetChunk.created_at < keep_since)
    gone = [d for d in session.scalars(mine) if d not in keep]
    for i in range(0, len(gone), 500):
        session.execute(delete(DatasetChunk).where(DatasetChunk.user_id == user.id,
                                                   DatasetChunk.digest.in_(gone[i:i + 500])))
    session.flush()
    held: set[str] = set()  # by another user still: one query per 500, not one per chunk
    for i in range(0, len(gone), 500):
        held.update(session.scalars(select(DatasetChunk.digest).distinct()
                                    .where(DatasetChunk.digest.in_(gone[i:i + 500]))))
    orphans = [d for d in gone if d not in held]
    packed = chunk_packs.forget(session, orphans)
    session.commit()
    # After the commit: a blob or pack is removed only once no row names it.
    for digest in orphans:
        if digest not in packed:
            store.delete(blob_key(digest))
    touched = set(packed.values())
    return touched - chunk_packs.drop_empty(session, store, touched)


class Sweeper:
    """A backend's sweeps: the packs they take chunks from go to its compactor."""

    def __init__(self, store: Store, compactor: Compactor, upload_ttl_s: float) -> None:
        self._store, self._compactor, self.upload_ttl_s = store, compactor, upload_ttl_s

    def after_change(self, session: Session, user: User) -> None:
        """After a deletion, or a commit that closed earlier uploads."""
        self._compactor.submit(sweep(session, self._store, user, self.upload_ttl_s))

    def for_quota(self, session: Session, user: User) -> None:
        """Before refusing an upload over the quota (keeps the chunks of uploads on their way)."""
        recent = min(IN_FLIGHT, timedelta(seconds=self.upload_ttl_s))  # never longer than an upload may stay open
        self._compactor.submit(sweep(session, self._store, user, self.upload_ttl_s, utcnow() - recent))
