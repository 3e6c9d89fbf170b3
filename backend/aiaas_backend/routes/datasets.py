"""The datasets API: upload sessions, chunks, versions (docs/datasets.md)."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aiaas_sdk.wire import (
    DATASET_NAME,
    ChunkPublic,
    DatasetPublic,
    DatasetsPublic,
    DatasetUploadCreate,
    DatasetUploadPublic,
)

from .. import datasets as ds
from ..deps import CurrentUser, SessionDep, SettingsDep, StoreDep
from ..errors import ApiError
from ..models import Dataset, DatasetChunk, DatasetUpload, DatasetVersion, User
from ..store import Store, blob_key, is_digest

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Name = Annotated[str, Path(pattern=DATASET_NAME, description="lowercase letters, digits, '_', '-', '.'")]


@router.put("/chunks/{digest}", operation_id="put_dataset_chunk")
async def put_chunk(digest: str, request: Request, session: SessionDep, user: CurrentUser, store: StoreDep,
                    settings: SettingsDep) -> ChunkPublic:
    """Send one chunk's bytes (the body). Idempotent: sending a chunk again changes nothing.
    The server hashes what arrives and refuses bytes that do not match ``digest``."""
    if not is_digest(digest):
        raise ApiError(400, f"{digest!r} is not a SHA-256 hex digest (64 lowercase hex digits)", "bad_digest")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > settings.max_chunk_bytes:
            raise ApiError(413, f"a chunk may hold at most {settings.max_chunk_bytes} bytes (AIAAS_MAX_CHUNK_BYTES); "
                           "send smaller chunks", "chunk_too_large")
        parts.append(part)
    # Hashing, the store and the database block: off the event loop.
    return await run_in_threadpool(_store_chunk, session, user, store, settings.user_quota_bytes, digest, parts)


def _store_chunk(session: Session, user: User, store: Store, quota: int | None, digest: str,
                 parts: list[bytes]) -> ChunkPublic:
    data = b"".join(parts)
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ApiError(400, f"the chunk's bytes hash to {actual}, not {digest}: it was corrupted on the way or "
                       "the file changed while uploading; upload again", "chunk_hash_mismatch")
    if session.get(DatasetChunk, (user.id, digest)) is not None:
        return ChunkPublic(digest=digest, size=len(data), stored=False)
    ds.check_quota(session, user, quota, len(data))
    key = blob_key(digest)
    if not store.exists(key):  # another user's identical chunk: stored once
        store.put(key, io.BytesIO(data))
    session.merge(DatasetChunk(user_id=user.id, digest=digest, size=len(data)))
    session.commit()
    return ChunkPublic(digest=digest, size=len(data), stored=True)


@router.post("/{name}/uploads", status_code=status.HTTP_201_CREATED, operation_id="create_dataset_upload")
def create_upload(name: Name, body: DatasetUploadCreate, session: SessionDep, user: CurrentUser,
                  settings: SettingsDep) -> DatasetUploadPublic:
    """Start an upload: the manifest of the new version. The reply names the chunks to send."""
    manifest = body.manifest
    needed = ds.chunk_digests(manifest)
    unsized = needed - set(manifest.chunk_sizes)
    if unsized:
        raise ApiError(400, f"chunk_sizes lacks {len(unsized)} digest(s) the files name, e.g. {min(unsized)}",
                       "bad_manifest")
    missing = sorted(needed - ds.owned_chunks(session, user, needed))
    missing_bytes = sum(manifest.chunk_sizes[d] for d in missing)
    ds.check_quota(session, user, settings.user_quota_bytes, missing_bytes)
    upload = DatasetUpload(id="upl_" + uuid.uuid4().hex[:16], user_id=user.id, name=name,
                           manifest=manifest.model_dump(mode="json"))
    session.add(upload)
    session.commit()
    return DatasetUploadPublic(id=upload.id, name=name, missing=missing, missing_bytes=missing_bytes)


@router.post("/{name}/uploads/{upload_id}/commit", operation_id="commit_dataset_upload")
def commit_upload(name: Name, upload_id: str, session: SessionDep, user: CurrentUser) -> DatasetPublic:
    """Make the upload a version, once every chunk it names is here (400 naming those that are not).
    A manifest equal to the newest version's gives that version back, not a new one."""
    upload = session.get(DatasetUpload, upload_id)
    if upload is None or upload.user_id != user.id or upload.name != name:
        raise ApiError(404, f"no upload {upload_id!r} of dataset {name!r} for this API key (committed already, "
                       "or never started); start one with client.upload(name, path)", "upload_not_found")
    dataset, version = ds.commit(session, user, upload)
    session.commit()
    return ds.public(dataset, version)


@router.get("", operation_id="list_datasets")
def list_datasets(session: SessionDep, user: CurrentUser, settings: SettingsDep) -> DatasetsPublic:
    """Every version of this user's datasets, by name, newest version first."""
    rows = session.execute(select(Dataset, DatasetVersion).join(DatasetVersion)
                           .where(Dataset.user_id == user.id)
                           .order_by(Dataset.name, DatasetVersion.version.desc())).all()
    return DatasetsPublic(data=[ds.public(d, v) for d, v in rows], count=len(rows),
                          used_bytes=ds.used_bytes(session, user), quota_bytes=settings.user_quota_bytes)


@router.get("/{name}", operation_id="get_dataset")
def get_dataset(name: Name, session: SessionDep, user: CurrentUser,
                version: Annotated[int | None, Query(ge=1)] = None) -> DatasetPublic:
    """One version (the newest unless ``version`` is given)."""
    return ds.public(*ds.find(session, user, name, version))


@router.get("/{name}/manifest", operation_id="get_dataset_manifest")
def get_manifest(name: Name, session: SessionDep, user: CurrentUser,
                 version: Annotated[int | None, Query(ge=1)] = None) -> dict:  # type: ignore[type-arg]
    """The version's files: path, size and chunk digests of each."""
    return ds.find(session, user, name, version)[1].manifest


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_dataset")
def delete_dataset(name: Name, session: SessionDep, user: CurrentUser, store: StoreDep,
                   version: Annotated[int | None, Query(ge=1, description="one version; all when absent")] = None
                   ) -> None:
    """Delete one version (or all). Refused with 409 while a queued or running run reads it."""
    dataset, row = ds.find(session, user, name, version)
    versions = [row] if version is not None else list(
        session.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)))
    ds.delete_versions(session, store, user, dataset, versions)
