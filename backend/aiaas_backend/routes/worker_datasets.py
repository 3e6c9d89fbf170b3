"""What a worker reads to materialise its run's datasets, with its run-scoped token.

Workers fetch chunks through the API rather than from the store itself: no node needs
store credentials or a shared file system, and a token reaches only the chunks of the
dataset versions its own run reads.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiaas_sdk.wire_datasets import DatasetManifest, WorkerDataset, WorkerDatasets

from .. import datasets as ds
from ..deps import SessionDep, SettingsDep, StoreDep
from ..errors import ApiError
from ..store import is_digest
from .chunk_reads import chunk_response
from .worker import WorkerRun

router = APIRouter(prefix="/v1/worker/runs", tags=["worker"], include_in_schema=False)


@router.get("/{run_id}/datasets")
def run_datasets(run: WorkerRun, session: SessionDep, settings: SettingsDep) -> WorkerDatasets:
    """The manifests of the versions this run reads, and where this backend's nodes cache them."""
    return WorkerDatasets(
        datasets=[WorkerDataset(name=d.name, version=v.version, digest=v.digest,
                                manifest=DatasetManifest.model_validate(v.manifest))
                  for d, v in ds.run_versions(session, run)],
        cache_dir=str(settings.cache_dir), cache_bytes=settings.dataset_cache_bytes,
    )


@router.get("/{run_id}/chunks/{digest}", response_model=None)
def run_chunk(digest: str, run: WorkerRun, session: SessionDep, store: StoreDep, request: Request
              ) -> Response:
    if not is_digest(digest):
        raise ApiError(400, f"{digest!r} is not a SHA-256 hex digest", "bad_digest")
    # Cached on the app per run: a run asks for thousands of chunks, its manifests do not change.
    cache: dict[str, set[str]] = request.app.state.__dict__.setdefault("worker_chunk_sets", {})
    allowed = cache.get(run.id)
    if allowed is None:
        allowed = set().union(*(ds.chunk_digests(v.manifest) for _d, v in ds.run_versions(session, run)))
        if len(cache) > 64:
            cache.clear()
        cache[run.id] = allowed
    if digest not in allowed:
        raise ApiError(404, f"chunk {digest} is not in a dataset this run reads", "chunk_not_found")
    return chunk_response(session, store, digest)
