"""A run's files for its Ray workers, with their run-scoped token (see ``run_files.py``).

``GET  /v1/worker/runs/{run}/files/code.bin``          the shipped code
``GET  /v1/worker/runs/{run}/files/resume/last.ckpt``  the last resumable checkpoint (404: none yet)
``PUT  /v1/worker/runs/{run}/files/{name}``            ``resume/last.ckpt``, ``final.ckpt``, ``weights.pt``
``GET  /v1/replica/runs/{run}/files/{name}``           ``code.bin``, ``weights.pt`` for a Ray Serve replica

A PUT carries ``X-Content-SHA256``; the body is checked against it (and against the
size limit) before anything replaces the stored file, so a cut or corrupted upload
never takes the place of a good checkpoint. Sending the same bytes again changes
nothing (idempotent), so a worker retries a PUT whose answer it lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from ..artifacts import open_regular
from ..deps import SettingsDep, TokenDep
from ..errors import ApiError
from ..run_files import READABLE, SERVED, WRITABLE, ReplicaTokens, RunFiles
from .worker import _worker_run

router = APIRouter(prefix="/v1/worker/runs", tags=["worker"], include_in_schema=False)
replica_router = APIRouter(prefix="/v1/replica/runs", tags=["worker"], include_in_schema=False)

# Body pieces are gathered to this size before a write (in a thread: the event loop stays free).
_WRITE_BLOCK = 1024 * 1024


class StoredFile(BaseModel):
    name: str
    bytes: int
    sha256: str


def _files(request: Request) -> RunFiles:
    return request.app.state.run_files


def _run_id(run_id: str, token: TokenDep, request: Request) -> str:
    """The run this token is for (401 otherwise), checked in a session of its own: an upload
    takes minutes, and must not hold a database session open all along."""
    with request.app.state.sessions() as session:
        return _worker_run(run_id, session, token).id


TokenRunId = Annotated[str, Depends(_run_id)]


def _regular(path: Path) -> bool:
    try:  # what a local worker wrote: a link it left there must not be followed
        os.close(open_regular(path))
        return True
    except OSError:
        return False


def _check_name(name: str, allowed: frozenset[str], verb: str) -> None:
    if name not in allowed:
        raise ApiError(404, f"a worker may {verb} {', '.join(sorted(allowed))} of its run, not {name!r}",
                       "unknown_run_file")


async def _serve_file(request: Request, run_id: str, name: str) -> FileResponse:
    path = await asyncio.to_thread(_files(request).find, run_id, name)
    if path is None or not await asyncio.to_thread(_regular, path):
        raise ApiError(404, f"run {run_id} has no {name} yet", "no_run_file")
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/{run_id}/files/{name:path}", response_class=FileResponse)
async def get_run_file(name: str, run_id: TokenRunId, request: Request) -> FileResponse:
    _check_name(name, READABLE, "fetch")
    return await _serve_file(request, run_id, name)


@replica_router.get("/{run_id}/files/{name:path}", response_class=FileResponse)
async def get_served_file(run_id: str, name: str, token: TokenDep, request: Request) -> FileResponse:
    tokens: ReplicaTokens = request.app.state.replica_tokens
    if not tokens.valid(run_id, token):
        raise ApiError(401, "this replica token is not valid for this run", "bad_replica_token")
    _check_name(name, SERVED, "fetch")
    return await _serve_file(request, run_id, name)


@router.put("/{run_id}/files/{name:path}")
async def put_run_file(
    name: str,
    run_id: TokenRunId,
    request: Request,
    settings: SettingsDep,
    sha256: Annotated[str | None, Header(alias="X-Content-SHA256")] = None,
) -> StoredFile:
    _check_name(name, WRITABLE, "send")
    if sha256 is None or len(sha256) != 64:
        raise ApiError(400, "send the body's SHA-256 (64 hex digits) in the X-Content-SHA256 header",
                       "missing_digest")
    limit = settings.max_upload_bytes
    files = _files(request)
    spooled = files.spool(run_id, name)
    hasher = hashlib.sha256()
    size = 0
    try:
        with spooled.open("wb") as out:
            pending: list[bytes] = []
            held = 0
            async for piece in request.stream():
                size += len(piece)
                if size > limit:
                    raise ApiError(413, f"{name} is over this backend's limit of {limit} bytes; raise "
                                   "AIAAS_MAX_UPLOAD_BYTES on the server", "payload_too_large")
                hasher.update(piece)
                pending.append(piece)
                held += len(piece)
                if held >= _WRITE_BLOCK:
                    await asyncio.to_thread(out.write, b"".join(pending))
                    pending, held = [], 0
            if pending:
                await asyncio.to_thread(out.write, b"".join(pending))
        actual = hasher.hexdigest()
        if actual != sha256.lower():
            raise ApiError(400, f"{name}: the {size} bytes received hash to {actual}, not {sha256}: the upload was "
                           "cut or corrupted; send it again", "file_hash_mismatch")
        await asyncio.to_thread(files.accept, run_id, name, spooled)
    finally:
        spooled.unlink(missing_ok=True)
    return StoredFile(name=name, bytes=size, sha256=actual)
