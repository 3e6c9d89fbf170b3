"""A stored chunk's bytes as a response: for a worker materialising its run's datasets, and for
a notebook fetching a version into its local cache. Callers check who may read it first."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from .. import chunk_packs
from ..errors import ApiError
from ..store import FileStore, Store, blob_key


def chunk_response(session: Session, store: Store, digest: str) -> Response:
    """The chunk ``digest`` (a checked digest), from its pack or its own blob; 404 if the store lost it."""
    where = chunk_packs.locations(session, [digest]).get(digest)
    if where is not None:  # a small chunk, inside a pack: read whole (under PACK_BELOW bytes)
        try:
            data = b"".join(chunk_packs.read(store, digest, where,
                                             lambda: chunk_packs.locations(session, [digest]).get(digest)))
        except KeyError:
            raise ApiError(404, f"chunk {digest} is missing from the store ({store.url})", "chunk_not_found") from None
        return Response(data, media_type="application/octet-stream")
    key = blob_key(digest)
    if isinstance(store, FileStore):
        path = store.local_path(key)
        if not path.exists():
            raise ApiError(404, f"chunk {digest} is missing from the store ({store.url})", "chunk_not_found")
        return FileResponse(path, media_type="application/octet-stream")
    return StreamingResponse(_stream(store, key), media_type="application/octet-stream")


def _stream(store: Store, key: str) -> Iterator[bytes]:
    yield from store.iter_bytes(key)
