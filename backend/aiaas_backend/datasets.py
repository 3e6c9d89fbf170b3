"""Datasets: versions as immutable manifests of content-addressed chunks, owned by a user.

The rules live here; :mod:`.routes.datasets` is their HTTP face. A chunk is stored
once per backend (keyed by its SHA-256) and used by a user once that user has sent
its bytes (the server checks the hash), so deduplication never tells anyone what
another user holds. A user's quota counts the chunks they keep.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.orm import Session, defer

from aiaas_sdk.wire import RunStatus
from aiaas_sdk.wire_datasets import DatasetManifest, DatasetPublic

from . import chunk_packs, dataset_sweep, manifests
from .errors import ApiError
from .manifests import Manifest
from .models import (
    Dataset,
    DatasetChunk,
    DatasetUpload,
    DatasetVersion,
    PackedChunk,
    Run,
    User,
)
from .store import Store, blob_key


# A commit naming more new chunks than this syncs the whole store at once, without looking up
# where each is (a first upload's thousands); fewer, and it asks the store to sync their objects.
FEW_SYNC_CHUNKS = 1024


def not_found(name: str, version: int | None = None) -> ApiError:
    what = f"{name}:{version}" if version is not None else name
    return ApiError(404, f"no dataset {what!r} for this API key; list yours with client.datasets(), "
                    "upload with client.upload(name, path)", "dataset_not_found")


def public(dataset: Dataset, version: DatasetVersion) -> DatasetPublic:
    return DatasetPublic(name=dataset.name, version=version.version, files=version.files, bytes=version.bytes,
                         digest=version.digest, created_at=version.created_at)


def manifest_digest(manifest: DatasetManifest | dict[str, Any]) -> str:
    files = manifest.model_dump()["files"] if isinstance(manifest, DatasetManifest) else manifest["files"]
    canonical = json.dumps([[f["path"], f["size"], f["chunks"]] for f in sorted(files, key=lambda f: f["path"])],
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def used_bytes(session: Session, user: User) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(DatasetChunk.size), 0))
                              .where(DatasetChunk.user_id == user.id)) or 0)


def check_quota(session: Session, user: User, quota: int | None, adding: int,
                sweep: Callable[[], None] | None = None) -> None:
    """413 if the user's chunks and ``adding`` bytes more exceed ``quota``; ``sweep`` (what the
    user no longer keeps: :mod:`.dataset_sweep`) is tried first."""
    if quota is None or adding <= 0:
        return
    used = used_bytes(session, user)
    if used + adding > quota and sweep is not None:
        sweep()
        used = used_bytes(session, user)
    if used + adding > quota:
        raise ApiError(
            413,
            f"this upload needs {adding} more bytes but your dataset quota is {quota} bytes and you use {used}; "
            "delete versions you no longer need (ds.delete()) or ask the admin to raise AIAAS_USER_QUOTA_BYTES",
            "quota_exceeded",
        )


def owned_chunks(session: Session, user: User, digests: set[str]) -> set[str]:
    have: set[str] = set()
    ordered = sorted(digests)
    for i in range(0, len(ordered), 500):  # bounded IN lists
        have.update(session.scalars(select(DatasetChunk.digest).where(
            DatasetChunk.user_id == user.id, DatasetChunk.digest.in_(ordered[i:i + 500]))))
    return have


def chunk_digests(manifest: DatasetManifest | dict[str, Any]) -> set[str]:
    files = manifest.files if isinstance(manifest, DatasetManifest) else manifest["files"]
    return {d for f in files for d in (f.chunks if not isinstance(f, dict) else f["chunks"])}


def find_dataset(session: Session, user: User, name: str, version: int | None = None) -> Dataset:
    """This user's dataset ``name`` (no version loaded: a manifest can be thousands of files), or a
    404 (``version``: the one the caller asked for, named in the error)."""
    dataset = session.scalar(select(Dataset).where(Dataset.user_id == user.id, Dataset.name == name))
    if dataset is None:
        raise not_found(name, version)
    return dataset


def find(session: Session, user: User, name: str, version: int | None = None) -> tuple[Dataset, DatasetVersion]:
    """``name`` at ``version`` (None: the newest), or a 404."""
    dataset = find_dataset(session, user, name, version)
    # The manifest (thousands of files) is read only when the caller uses it: most need the row.
    query = (select(DatasetVersion).options(defer(DatasetVersion.manifest))
             .where(DatasetVersion.dataset_id == dataset.id))
    query = query.where(DatasetVersion.version == version) if version is not None else \
        query.order_by(DatasetVersion.version.desc()).limit(1)
    row = session.scalar(query)
    if row is None:
        raise not_found(name, version)
    return dataset, row


def run_versions(session: Session, run: Run) -> list[tuple[Dataset, DatasetVersion]]:
    """The dataset versions a run was submitted with (pinned at submit)."""
    ids = [d["version_id"] for d in run.datasets or []]
    if not ids:
        return []
    return [(dataset, version) for dataset, version in session.execute(
        select(Dataset, DatasetVersion).join(DatasetVersion).where(DatasetVersion.id.in_(ids)))]


def parse_ref(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition(":")
    if not name or (version and not version.isdigit()):
        raise ApiError(400, f"{ref!r} is not a dataset reference: use 'NAME' (the newest version) or 'NAME:VERSION'",
                       "bad_dataset_ref")
    return name, int(version) if version else None


def resolve(session: Session, user: User, refs: list[str]) -> list[dict[str, Any]]:
    """Pin each ``NAME`` or ``NAME:VERSION`` to the version a run will read (at submit, so a
    later upload does not change what a queued run trains on)."""
    pinned: list[dict[str, Any]] = []
    for ref in refs:
        name, version = parse_ref(ref)
        if any(p["name"] == name for p in pinned):
            raise ApiError(400, f"dataset {name!r} is named twice in datasets=[...]; name each once", "bad_dataset_ref")
        dataset, row = find(session, user, name, version)
        pinned.append({"name": dataset.name, "version": row.version, "version_id": row.id})
    return pinned


def recover_chunks(session: Session, store: Store) -> int:
    """At start: forget the chunks whose bytes a power cut took (written after the store's last
    sync, then missing or short), so the next upload sends them again; returns how many rows
    went. A version never names such a chunk: its commit flushed the chunks it adds first."""
    since = store.synced_until()
    if since is None:
        return 0
    rows = session.execute(select(DatasetChunk.user_id, DatasetChunk.digest, DatasetChunk.size)
                           .where(DatasetChunk.created_at > since)).all()
    where = chunk_packs.locations(session, (digest for _user, digest, _size in rows))
    # A pack is checked as a whole: it must reach the end of its last chunk. Every row naming a
    # pack written after the sync is among these (its rows were created after the pack).
    wanted: dict[str, int] = {}
    for _user, digest, size in rows:
        if digest in where:
            pack, offset, packed_size = where[digest]
            wanted[pack] = max(wanted.get(pack, 0), offset + packed_size)
        else:
            wanted[blob_key(digest)] = size
    lost = set(store.lost(wanted))
    gone = [(user_id, digest) for user_id, digest, _size in rows
            if (where[digest][0] if digest in where else blob_key(digest)) in lost]
    for user_id, digest in gone:
        session.execute(delete(DatasetChunk).where(DatasetChunk.user_id == user_id, DatasetChunk.digest == digest))
    packs = {w[0] for w in where.values()}
    lost_packs = [key for key in lost if key in packs]
    for i in range(0, len(lost_packs), 500):
        session.execute(delete(PackedChunk).where(PackedChunk.pack.in_(lost_packs[i:i + 500])))
    session.commit()
    # A short blob or pack goes too, or the next upload's copy would find it there and keep it.
    # Every row naming it was among those checked: what was written before the sync was synced whole.
    for key in lost:
        store.delete(key)
    if rows:
        store.sync()
    return len(gone)


def base_mismatch(name: str, version: int, why: str) -> ApiError:
    return ApiError(409, f"version {version} of dataset {name!r} {why}, so a change of it cannot be applied; "
                    "send the whole manifest without 'base' (client.upload does so by itself)", "base_mismatch")


def find_base(session: Session, user: User, name: str, version: int, digest: str) -> DatasetVersion:
    """The version an upload names as its base (its manifest not loaded), or a 409: a client
    whose record of it is stale (deleted since, another backend at the same URL) sends it whole."""
    row = session.scalar(select(DatasetVersion).join(Dataset).options(defer(DatasetVersion.manifest))
                         .where(Dataset.user_id == user.id, Dataset.name == name,
                                DatasetVersion.version == version))
    if row is None:
        raise base_mismatch(name, version, "does not exist (deleted, or never uploaded to this backend)")
    if row.digest != digest:
        raise base_mismatch(name, version, f"has digest {row.digest}, not {digest}")
    return row


def _base(session: Session, upload: DatasetUpload, base_version_id: int) -> tuple[DatasetVersion, Manifest | None]:
    """The version an upload's change builds on, and its manifest when a recent commit left it in
    memory (None: read it from the row; see :mod:`.manifests`)."""
    base = session.get(DatasetVersion, base_version_id, options=[defer(DatasetVersion.manifest)])
    if base is None:  # deleted while this upload was open
        raise ApiError(409, f"the version upload {upload.id} is based on was deleted meanwhile; upload again "
                       "(client.upload sends the whole manifest then)", "base_mismatch")
    return base, manifests.cached(base.digest)


def _apply(session: Session, upload: DatasetUpload, change: dict[str, Any]) -> Manifest:
    """The whole manifest of an upload sent as a change of a base version. The base's chunks
    need no check: this user keeps every chunk a version of theirs names."""
    base, built = _base(session, upload, change["base_version_id"])
    if built is None:
        built = manifests.whole(base.manifest["files"])
    removed = change.get("removed", [])
    absent = [p for p in removed if p not in built.files]
    if absent:
        raise ApiError(400, f"'removed' names {len(absent)} path(s) version {base.version} does not have, e.g. "
                       f"{absent[0]!r}; name only paths of the base version", "bad_manifest")
    return manifests.apply(built, change["files"], removed) if change["files"] or removed else built


def commit(session: Session, store: Store, user: User, upload: DatasetUpload, *, checked: bool = False
           ) -> tuple[Dataset, DatasetVersion]:
    """Make ``upload`` a version (or give back the newest, if equal) and delete it. ``checked``: this
    transaction found every chunk it names already (an upload opened with commit=true)."""
    manifest = upload.manifest  # validated when the upload was created; thousands of files: not twice
    added = chunk_digests(manifest)  # of a change: its own files' (see _apply)
    needed = added if not checked else set()
    missing = sorted(needed - owned_chunks(session, user, needed))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ApiError(400, f"the backend lacks {len(missing)} chunk(s) this manifest names: {shown}; "
                       "PUT them to /v1/datasets/chunks/DIGEST (client.upload resumes by itself)", "missing_chunks")
    dataset = session.scalar(select(Dataset).where(Dataset.user_id == user.id, Dataset.name == upload.name))
    if dataset is None:
        dataset = Dataset(user_id=user.id, name=upload.name, next_version=1)
        session.add(dataset)
        session.flush()
    # A version keeps its files only: chunk sizes served the upload's quota check, and a
    # thousand-file manifest is encoded, digested and (as the next base) decoded at each commit.
    built = _apply(session, upload, manifest) if "base_version_id" in manifest else manifests.whole(manifest["files"])
    # Its manifest is not loaded: comparing digests is enough, and it has thousands of files.
    newest = session.scalar(select(DatasetVersion).options(defer(DatasetVersion.manifest))
                            .where(DatasetVersion.dataset_id == dataset.id)
                            .order_by(DatasetVersion.version.desc()).limit(1))
    if inspect(upload).persistent:
        session.delete(upload)
    if newest is not None and newest.digest == built.digest:
        manifests.remember(built)
        return dataset, newest  # nothing changed: the same version, not a new one
    # Every chunk's bytes on disk before a version names them (see Store.sync): those its own files
    # name (of a change, the changed files'; the base's were synced when the base was made).
    try:
        store.sync(chunk_packs.keys(session, added, FEW_SYNC_CHUNKS))
    except OSError as exc:  # a missing object, a failing disk: no version may name its chunks
        raise ApiError(503, f"the dataset store ({store.url}) could not flush this version's chunks: {exc}; nothing "
                       "was committed, upload again (the admin should check the store's disk)", "store_unavailable",
                       {"Retry-After": "1"}) from exc
    version = DatasetVersion(
        dataset_id=dataset.id, version=dataset.next_version, manifest=built.row(),
        digest=built.digest, files=len(built.files), bytes=built.bytes,
    )
    dataset.next_version += 1
    session.add(version)
    session.flush()
    # For the next upload's change of this version. Kept even if this transaction fails: the
    # cache is by digest, and a digest names these files whichever version has it, if any.
    manifests.remember(built)
    return dataset, version


def runs_using(session: Session, user: User, version_ids: set[int]) -> list[Run]:
    active = session.scalars(select(Run).where(
        Run.user_id == user.id, Run.status.in_([RunStatus.queued.value, RunStatus.running.value])))
    return [r for r in active if any(d["version_id"] in version_ids for d in r.datasets or [])]


def delete_versions(session: Session, store: Store, user: User, dataset: Dataset,
                    versions: list[DatasetVersion], upload_ttl_s: float) -> set[str]:
    """Delete ``versions`` unless an active run reads one (409 naming it); then drop what the user
    no longer keeps (:func:`.dataset_sweep.sweep`). Returns the packs that lost chunks and still
    hold some (for :mod:`.pack_compaction`)."""
    busy = runs_using(session, user, {v.id for v in versions})
    if busy:
        names = ", ".join(f"{r.id} ({r.status})" for r in busy[:5])
        raise ApiError(409, f"dataset {dataset.name!r} is in use by run {names}; wait for it to end or cancel it, "
                       "then delete", "dataset_in_use")
    with dataset_sweep.OWNERSHIP:  # before this transaction's first write (see sweep_held)
        for v in versions:
            session.delete(v)
        # The dataset row stays even with no versions: its next_version keeps numbers from returning.
        session.flush()
        return dataset_sweep.sweep_held(session, store, user, upload_ttl_s)
