"""The aiaas SDK. Import it as ``aiaas``; this package holds the implementation."""

from ._client import AsyncClient, Client
from ._connect import connect, connect_async
from ._dataset import AsyncDataset, Dataset
from ._datasets import data_path
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
from ._deployment import AsyncDeployment, Deployment
from ._run import AsyncRun, Run
from .wire import DeploymentStats, MetricPoint, ModelVersion, RunEvent, RunStatus
from .wire_monitoring import AlertsPublic, DeploymentEvent, DriftReport

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
