"""The datasets API: upload sessions, chunks, versions (docs/datasets.md)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aiaas_sdk.wire_datasets import (
    DATASET_NAME,
    ChunkPublic,
    ChunksPublic,
    DatasetPublic,
    DatasetsPublic,
    DatasetUploadCreate,
    DatasetUploadPublic,
    SameHostUploadPublic,
)

from .. import chunk_intake, dataset_sweep
from .. import datasets as ds
from ..deps import CurrentUser, SessionDep, SettingsDep, StoreDep, TokenDep
from ..errors import ApiError
from ..models import Dataset, DatasetUpload, DatasetVersion, User, utcnow
from ..security import api_key_for
from ..store import is_digest
from .chunk_reads import chunk_response

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Name = Annotated[str, Path(pattern=DATASET_NAME, description="lowercase letters, digits, '_', '-', '.'")]


@router.put("/chunks/{digest}", operation_id="put_dataset_chunk")
async def put_chunk(digest: str, request: Request, session: SessionDep, user: CurrentUser, store: StoreDep,
                    settings: SettingsDep) -> ChunkPublic:
    """Send one chunk's bytes (the body). Idempotent: sending a chunk again changes nothing.
    The server hashes what arrives and refuses bytes that do not match ``digest``."""
    if not is_digest(digest):
        raise ApiError(400, f"{digest!r} is not a SHA-256 hex digest (64 lowercase hex digits)", "bad_digest")
    parts = await _body(request, settings.max_chunk_bytes)
    # Hashing, the store and the database block: off the event loop.
    stored = await run_in_threadpool(partial(chunk_intake.take, session, user, store, settings.user_quota_bytes,
                                             [(digest, parts)], sweep=_for_quota(request, session, user)))
    return ChunkPublic(digest=digest, size=sum(len(p) for p in parts), stored=bool(stored))


@router.post("/same-host", operation_id="open_same_host_upload")
def open_same_host_upload(request: Request, session: SessionDep, token: TokenDep,
                          user: CurrentUser) -> SameHostUploadPublic:
    """A ticket for one connection to this backend's same-host upload socket: a client on the
    backend's machine hands it open files to read instead of sending their bytes (see
    ``upload_socket.py`` for why that is safe). 404 when the backend has none."""
    intake = getattr(request.app.state, "upload_socket", None)
    if intake is None:
        raise ApiError(404, "this backend takes dataset chunks over HTTP only (AIAAS_UPLOAD_SOCKET=false, or it "
                       "was not started by `aiaas server`)", "no_upload_socket")
    key = api_key_for(session, token)  # the one CurrentUser accepted; the socket checks it again per batch
    if key is None or key.user_id != user.id:
        raise ApiError(401, "same-host uploads need an API key; upload with one", "unauthenticated")
    ticket, answer = intake.tickets.issue(key.id)
    return SameHostUploadPublic(socket=str(intake.path), ticket=ticket, answer=answer)


@router.post("/chunks", operation_id="put_dataset_chunks")
async def put_chunks(request: Request, session: SessionDep, user: CurrentUser, store: StoreDep,
                     settings: SettingsDep) -> ChunksPublic:
    """Send many chunks in one body, each framed as its 64-character hex digest, its size as
    8 bytes big-endian, then its bytes: small files cost one request per batch, not one each,
    and large ones a request per few chunks. Every chunk is checked before any is stored."""
    body = _Parts(await _body(request, settings.max_chunk_bytes))
    chunks: list[tuple[str, list[memoryview]]] = []
    while body.left:
        at = body.at
        head = b"".join(body.take(72))
        digest = head[:64].decode("ascii", "replace")
        if len(head) < 72 or not is_digest(digest):
            raise ApiError(400, f"chunk batch framing is broken at byte {at}: expected a 64-character hex digest "
                           "and an 8-byte size", "bad_batch")
        size = int.from_bytes(head[64:], "big")
        if size > body.left:
            raise ApiError(400, f"chunk {digest} claims {size} bytes but the batch ends first", "bad_batch")
        chunks.append((digest, body.take(size)))
    stored = await run_in_threadpool(partial(chunk_intake.take, session, user, store, settings.user_quota_bytes,
                                             chunks, sweep=_for_quota(request, session, user)))
    return ChunksPublic(received=len(chunks), stored=len(stored))


async def _body(request: Request, limit: int) -> list[bytes]:
    """The request's body as the parts it arrived in (a chunk is hashed and written from them,
    never copied into one buffer), refused with 413 past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(413, f"a chunk (or a batch of chunks) may hold at most {limit} bytes "
                           "(AIAAS_MAX_CHUNK_BYTES); send smaller ones", "chunk_too_large")
        if part:
            parts.append(part)
    return parts


class _Parts:
    """Reads a body that arrived in parts, as views of those parts (no copies)."""

    def __init__(self, parts: list[bytes]) -> None:
        self._views = [memoryview(p) for p in parts]
        self._index = 0
        self._offset = 0
        self.at = 0
        self.left = sum(len(p) for p in parts)

    def take(self, size: int) -> list[memoryview]:
        """The next ``size`` bytes (fewer at the end) as views."""
        out: list[memoryview] = []
        while size and self._index < len(self._views):
            view = self._views[self._index]
            piece = view[self._offset:self._offset + size]
            out.append(piece)
            size -= len(piece)
            self.at += len(piece)
            self.left -= len(piece)
            self._offset += len(piece)
            if self._offset == len(view):
                self._index, self._offset = self._index + 1, 0
        return out


@router.post("/{name}/uploads", status_code=status.HTTP_201_CREATED, operation_id="create_dataset_upload")
def create_upload(name: Name, body: DatasetUploadCreate, request: Request, session: SessionDep, user: CurrentUser,
                  settings: SettingsDep, store: StoreDep,
                  commit: Annotated[bool, Query(description="commit at once if no chunk is missing")] = False,
                  ) -> DatasetUploadPublic:
    """Start an upload: the manifest of the new version, whole or as a change of ``base``
    (see DatasetUploadCreate). The reply names the chunks to send. With ``commit=true`` and every
    chunk already here (a re-upload whose changed files the same-host socket stored, or an
    unchanged one), the version is made at once and the reply carries it in ``committed``: one
    request instead of two."""
    manifest = body.manifest
    stored = manifest.model_dump(mode="json")
    if body.base is not None:
        base = ds.find_base(session, user, name, body.base.version, body.base.digest)
        stored.update(base_version_id=base.id, removed=body.removed)
    needed = ds.chunk_digests(manifest)
    unsized = needed - set(manifest.chunk_sizes)
    if unsized:
        raise ApiError(400, f"chunk_sizes lacks {len(unsized)} digest(s) the files name, e.g. {min(unsized)}",
                       "bad_manifest")
    missing = sorted(needed - ds.owned_chunks(session, user, needed))
    missing_bytes = sum(manifest.chunk_sizes[d] for d in missing)
    ds.check_quota(session, user, settings.user_quota_bytes, missing_bytes, _for_quota(request, session, user))
    upload = DatasetUpload(id="upl_" + uuid.uuid4().hex[:16], user_id=user.id, name=name,
                           manifest=stored)
    if commit and not missing:  # never stored: the version is made in this transaction
        dataset, version = ds.commit(session, store, user, upload, checked=True)
        closed = dataset_sweep.close_earlier_uploads(session, user, name, utcnow())
        session.commit()
        if closed:
            request.app.state.sweeper.after_change(session, user)
        return DatasetUploadPublic(id=upload.id, name=name, missing=[], missing_bytes=0,
                                   committed=ds.public(dataset, version))
    session.add(upload)
    session.commit()
    return DatasetUploadPublic(id=upload.id, name=name, missing=missing, missing_bytes=missing_bytes)


@router.post("/{name}/uploads/{upload_id}/commit", operation_id="commit_dataset_upload")
def commit_upload(name: Name, upload_id: str, request: Request, session: SessionDep, user: CurrentUser,
                  store: StoreDep, settings: SettingsDep) -> DatasetPublic:
    """Make the upload a version, once every chunk it names is here (400 naming those that are not).
    A manifest equal to the newest version's gives that version back, not a new one. Closes the
    uploads of this dataset opened before this one (earlier tries: see dataset_sweep.py)."""
    upload = session.get(DatasetUpload, upload_id)
    if upload is None or upload.user_id != user.id or upload.name != name:
        raise ApiError(404, f"no upload {upload_id!r} of dataset {name!r} for this API key: committed already, "
                       "never started, replaced by a newer upload of this dataset that was committed first, or "
                       f"left open longer than {settings.dataset_upload_ttl_s:g} s (AIAAS_DATASET_UPLOAD_TTL_S); "
                       "upload again with client.upload(name, path)", "upload_not_found")
    started = upload.created_at
    dataset, version = ds.commit(session, store, user, upload)
    closed = dataset_sweep.close_earlier_uploads(session, user, name, started)
    session.commit()
    if closed:
        request.app.state.sweeper.after_change(session, user)
    return ds.public(dataset, version)


def _for_quota(request: Request, session: Session, user: User) -> Callable[[], None]:
    """What to try before refusing an upload over the quota (dataset_sweep.py)."""
    return lambda: request.app.state.sweeper.for_quota(session, user)


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


@router.get("/{name}/chunks/{digest}", operation_id="get_dataset_chunk", response_model=None,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the chunk's bytes"}})
def get_chunk(name: Name, digest: str, session: SessionDep, user: CurrentUser, store: StoreDep) -> Response:
    """One chunk of this user's dataset ``name`` (its manifest lists them; the notebook's
    ``aiaas.data_path`` fetches a version with it). Only chunks the user sent themself:
    another user's get 404, like unknown ones."""
    ds.find_dataset(session, user, name)  # first: another user's dataset is a 404, whatever the digest
    if not is_digest(digest):
        raise ApiError(400, f"{digest!r} is not a SHA-256 hex digest (64 lowercase hex digits)", "bad_digest")
    if not ds.owned_chunks(session, user, {digest}):
        raise ApiError(404, f"chunk {digest} is not in your datasets: a version's chunks are listed by "
                       f"GET /v1/datasets/{name}/manifest", "chunk_not_found")
    return chunk_response(session, store, digest)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_dataset")
def delete_dataset(name: Name, request: Request, session: SessionDep, user: CurrentUser, store: StoreDep,
                   settings: SettingsDep,
                   version: Annotated[int | None, Query(ge=1, description="one version; all when absent")] = None
                   ) -> None:
    """Delete one version (or all). Refused with 409 while a queued or running run reads it.
    The store's space is freed at once for chunks stored alone, and soon after for small chunks
    that shared a pack with kept ones (the pack is compacted after this returns)."""
    dataset, row = ds.find(session, user, name, version)
    versions = [row] if version is not None else list(
        session.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)))
    packs = ds.delete_versions(session, store, user, dataset, versions, settings.dataset_upload_ttl_s)
    request.app.state.compactor.submit(packs)
