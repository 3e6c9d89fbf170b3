"""The aiaas SDK. Import it as ``aiaas``; this package holds the implementation."""

from ._client import AsyncClient, Client
from ._connect import connect, connect_async
from ._errors import (
    AiaasError,
    AuthenticationError,
    BackendUnavailable,
    BadRequest,
    IncompatibleEnvironment,
    NotFound,
    PayloadTooLarge,
    RunCancelled,
    RunFailed,
    ServerError,
)
from ._run import AsyncRun, Run
from .wire import MetricPoint, RunEvent, RunStatus

__all__ = [
    "AiaasError",
    "AsyncClient",
    "AsyncRun",
    "AuthenticationError",
    "BackendUnavailable",
    "BadRequest",
    "Client",
    "IncompatibleEnvironment",
    "MetricPoint",
    "NotFound",
    "PayloadTooLarge",
    "Run",
    "RunCancelled",
    "RunEvent",
    "RunFailed",
    "RunStatus",
    "ServerError",
    "connect",
    "connect_async",
]
