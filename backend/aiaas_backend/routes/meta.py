"""Liveness and what this backend offers."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter, Request

from aiaas_sdk.wire import BackendInfo

router = APIRouter(tags=["meta"])


@router.get("/healthz", operation_id="health")
def health(request: Request) -> dict[str, str]:
    return {"status": "ok", "data_dir": str(request.app.state.settings.data_dir)}


@router.get("/v1/info", operation_id="backend_info")
def info(request: Request) -> BackendInfo:
    state = request.app.state
    return BackendInfo(
        version=metadata.version("aiaas"),
        executor=state.executor.name,
        gpus=state.executor.gpus,
        slots=state.executor.slots,
        environment=state.environment["lightning"],
    )
