"""The aiaas SDK. Import it as ``aiaas``; this package holds the implementation.

The public names load on first use (PEP 562 ``__getattr__``). Training workers,
serving replicas and optimize jobs import small parts of this package (the wire
schemas, :mod:`.packaging`, :mod:`.tensor_codec`) in every process they start; they
should not pay for the HTTP client stack (httpx, aiohttp, widgets) they never use.
``from aiaas_sdk import Client`` and ``aiaas.connect()`` work as before, and type
checkers read the imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client
    from ._connect import connect, connect_async
    from ._dataset import AsyncDataset, Dataset
    from ._datasets import data_path
    from ._deployment import AsyncDeployment, Deployment
    from ._errors import (
        AiaasError,
        AuthenticationError,
        BackendUnavailable,
        BadRequest,
        ConfigError,
        DeploymentOverloaded,
        IncompatibleEnvironment,
        InvalidInput,
        NotFound,
        PayloadTooLarge,
        QuotaExceeded,
        RateLimited,
        RunCancelled,
        RunFailed,
        ServerError,
        WaitTimeout,
    )
    from ._run import AsyncRun, Run
    from .wire import DeploymentStats, MetricPoint, ModelVersion, RunEvent, RunStatus
    from .wire_monitoring import AlertsPublic, DeploymentEvent, DriftReport

# Where each public name is defined; keep it in step with the imports above
# (tests/unit/test_exported_members.py checks that the two agree).
_SOURCES: dict[str, tuple[str, ...]] = {
    "._async_client": ("AsyncClient",),
    "._client": ("Client",),
    "._connect": ("connect", "connect_async"),
    "._dataset": ("AsyncDataset", "Dataset"),
    "._datasets": ("data_path",),
    "._deployment": ("AsyncDeployment", "Deployment"),
    "._errors": (
        "AiaasError", "AuthenticationError", "BackendUnavailable", "BadRequest", "ConfigError",
        "DeploymentOverloaded", "IncompatibleEnvironment", "InvalidInput", "NotFound", "PayloadTooLarge",
        "QuotaExceeded", "RateLimited", "RunCancelled", "RunFailed", "ServerError", "WaitTimeout",
    ),
    "._run": ("AsyncRun", "Run"),
    ".wire": ("DeploymentStats", "MetricPoint", "ModelVersion", "RunEvent", "RunStatus"),
    ".wire_monitoring": ("AlertsPublic", "DeploymentEvent", "DriftReport"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = [
    "AiaasError",
    "AlertsPublic",
    "AsyncClient",
    "AsyncDataset",
    "AsyncDeployment",
    "AsyncRun",
    "AuthenticationError",
    "BackendUnavailable",
    "BadRequest",
    "Client",
    "ConfigError",
    "Dataset",
    "Deployment",
    "DeploymentEvent",
    "DeploymentOverloaded",
    "DeploymentStats",
    "DriftReport",
    "IncompatibleEnvironment",
    "InvalidInput",
    "MetricPoint",
    "ModelVersion",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "Run",
    "RunCancelled",
    "RunEvent",
    "RunFailed",
    "RunStatus",
    "ServerError",
    "WaitTimeout",
    "connect",
    "connect_async",
    "data_path",
]


if not TYPE_CHECKING:  # hidden from type checkers: a misspelt name stays an error, not Any

    def __getattr__(name: str) -> Any:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # later look-ups find it without coming here
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
