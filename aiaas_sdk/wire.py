"""Wire schemas shared by the SDK and the backend: the JSON bodies of the HTTP API.

The backend imports these (and :mod:`aiaas_sdk.packaging`) and nothing else
from the SDK, so the two sides cannot disagree about a field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

JSONScalar = str | int | float | bool | None


def _utc(value: datetime) -> datetime:
    # SQLite gives stored times back without their offset (they are UTC): sent like that, they
    # are no RFC 3339 date-time (the schema's "format") and a client cannot tell them from local.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class RunStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


class RunSpec(BaseModel):
    """The JSON half of a run submission; the pickled code travels beside it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    # Only JSON-able Trainer kwargs travel here, so the backend can read the
    # resources a run asks for; callbacks, loggers and plugins are pickled.
    trainer_kwargs: dict[str, JSONScalar | list[JSONScalar]] = Field(default_factory=dict)
    test: bool = False
    # Datasets the run reads through aiaas.data_path: "pets" (the newest version) or "pets:2".
    datasets: list[str] = Field(default_factory=list, max_length=64)
    # A resumable checkpoint at the end of every N-th epoch; None: by time (AIAAS_CHECKPOINT_EVERY_S).
    checkpoint_every_n_epochs: int | None = Field(default=None, ge=1)


class RunProgress(BaseModel):
    """Where a run is, from its latest ``progress`` event (totals are None when unknown)."""

    step: int
    total_steps: int | None = None
    epoch: int | None = None
    max_epochs: int | None = None


class RunPublic(BaseModel):
    id: str
    name: str
    status: RunStatus
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    trainer_kwargs: dict[str, Any] = Field(default_factory=dict)
    gpus: int = 0
    device: str | None = None
    attempt: int = 1
    cancel_requested: bool = False
    error: str | None = None
    traceback: str | None = None
    final_metrics: dict[str, float] = Field(default_factory=dict)
    has_checkpoint: bool = False
    worker_pid: int | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    datasets: list[str] = Field(default_factory=list, description="the exact dataset versions the run reads: NAME:VERSION")
    checkpoint_every_n_epochs: int | None = Field(
        default=None, description="a resumable checkpoint every N epochs; null: by time (the backend's setting)")
    # Filled for running runs only (cheap: read from the newest events), so a list
    # can show progress and loss without streaming every run's events.
    progress: RunProgress | None = None
    latest_metrics: dict[str, float] = Field(
        default_factory=dict, description="running runs: the newest value of each metric among its recent points")


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


class MetricPoint(BaseModel):
    seq: int
    name: str
    value: float
    step: int | None = None
    epoch: int | None = None
    time: float


class MetricsPage(BaseModel):
    data: list[MetricPoint]
    next_after: int = Field(description="pass as `after` to read the next page")


class LogLine(BaseModel):
    seq: int
    time: float
    line: str


class LogsPage(BaseModel):
    data: list[LogLine]
    next_after: int


class InputSignature(BaseModel):
    """What one row of a model's input looks like, learnt from training."""

    dtype: str
    shape: list[int] = Field(description="the shape of one row (without the batch dimension)")


class RunEvent(BaseModel):
    """One entry of a run's ordered event log.

    ``kind`` is ``status`` (data: status, attempt, error/reason), ``metric``
    (name, value, step, epoch), ``log`` (line) or ``progress`` (step,
    total_steps, epoch, max_epochs; totals are None when unknown).
    """

    seq: int
    kind: Literal["status", "metric", "log", "progress"]
    time: float
    data: dict[str, Any]


class Autoscale(BaseModel):
    """Replicas that follow the load (Ray Serve's autoscaler; a backend with ``--executor ray``)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=1, le=64)
    max_replicas: int = Field(ge=1, le=64)
    target_ongoing_requests: float = Field(default=1.0, gt=0, le=1000,
                                           description="batches in flight per replica that autoscaling aims for")

    @model_validator(mode="after")
    def _ordered(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}")
        return self


OptimizeMethod = Literal["int8", "compile", "onnx"]


class OptimizationReport(BaseModel):
    """What an optimisation measured at deploy time against the model as trained."""

    method: OptimizeMethod
    speedup: float = Field(description="time of the model as trained / time optimised, per batch of batch_rows")
    max_abs_deviation: float = Field(description="largest absolute difference of any output value")
    tolerance: float = Field(description="the largest deviation the deployment accepts")
    baseline_ms: float
    optimized_ms: float
    batch_rows: int
    rows: int = Field(description="rows the deviation was measured on")
    inputs: str = Field(description="where the rows came from: example_input_array, or synthetic (drawn to fit "
                        "the run's input signature)")


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                      description="lower-case letters, digits, '-' and '_'; unique among your deployments")
    run_id: str
    replicas: int = Field(default=1, ge=1, le=64)
    max_batch_size: int = Field(default=64, ge=1, le=65536)
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    max_queue: int = Field(default=1024, ge=1, le=1_000_000)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    autoscale: Autoscale | None = None
    optimize: OptimizeMethod | None = Field(
        default=None, description="serve the model quantised to int8, compiled, or through ONNX Runtime; "
        "measured at deploy (and at each update) against the model as trained")
    optimize_tolerance: float | None = Field(
        default=None, ge=0, description="largest absolute output deviation accepted (default: 0.05 for int8, "
        "1e-4 for compile and onnx)")


class DeploymentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str


class DeploymentScale(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=1, le=64)


class DeploymentPublic(BaseModel):
    id: str
    name: str
    status: Literal["starting", "ready", "updating", "failed", "stopped"]
    run_id: str
    history: list[str] = Field(default_factory=list, description="earlier versions, newest last (for rollback)")
    replicas: int
    ready_replicas: int
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    timeout_s: float
    autoscale: Autoscale | None = None
    input_signature: InputSignature | None = None
    error: str | None = None
    created_at: UtcDatetime
    predict_path: str
    optimize: OptimizeMethod | None = None
    optimize_tolerance: float | None = None
    optimization: OptimizationReport | None = None
    alerts_firing: list[str] = Field(default_factory=list, description="alert rules breached now (dep.alerts())")


class DeploymentsPublic(BaseModel):
    data: list[DeploymentPublic]
    count: int


class DeploymentStats(BaseModel):
    requests: int
    errors: int
    rejected: int
    dropped: int = Field(description="requests whose client disconnected before an answer")
    queue_depth: int
    batches: int
    mean_batch_rows: float | None
    p50_ms: float | None
    p99_ms: float | None
    ready_replicas: int
    # Defaults keep a newer SDK reading an older backend's answer.
    p95_ms: float | None = None
    batch_sizes: dict[int, int] = Field(default_factory=dict, description="batches run, by number of rows")
    optimization: OptimizationReport | None = None
    streams: int = Field(default=0, description="streams that sent their first piece")
    streams_cancelled: int = Field(default=0, description="streams stopped because their caller left")
    first_piece_p50_ms: float | None = Field(default=None, description="time to first piece, queue included")
    first_piece_p99_ms: float | None = None
    pieces_per_s: float | None = Field(default=None, description="median pieces per second after the first piece")


class StreamRequest(BaseModel):
    """A streamed generation: the text pieces of the model's ``generate(prompt, max_tokens=...)``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=1_000_000)
    max_tokens: int = Field(default=64, ge=1, le=65536,
                            description="the most pieces to generate (the model may set a lower max_new_tokens)")


class DeploymentKeyPublic(BaseModel):
    key: str = Field(description="shown once: it may call this deployment (predict, read it) and nothing else")
    deployment: str


class ModelVersion(BaseModel):
    """A succeeded run: something you can deploy."""

    run_id: str
    name: str
    created_at: UtcDatetime
    final_metrics: dict[str, float] = Field(default_factory=dict)
    input_signature: InputSignature | None = None


class ModelsPublic(BaseModel):
    data: list[ModelVersion]
    count: int


class BackendInfo(BaseModel):
    version: str
    executor: str
    gpus: int
    slots: int
    environment: dict[str, str]


# ---- worker -> backend (run-scoped token) --------------------------------



class WorkerEvent(BaseModel):
    # Numbered by the worker so a retried batch is stored once.
    wseq: int
    kind: Literal["metric", "log", "progress"]
    time: float
    data: dict[str, Any]


class WorkerEventBatch(BaseModel):
    attempt: int
    events: list[WorkerEvent] = Field(default_factory=list, max_length=50_000)


class WorkerStatus(BaseModel):
    attempt: int
    status: RunStatus
    device: str | None = None
    error: str | None = None
    traceback: str | None = None
    final_metrics: dict[str, float] = Field(default_factory=dict)
    input_signature: InputSignature | None = None
    # The training inputs' statistics, for drift (aiaas_backend.monitoring.drift checks the shape).
    input_stats: dict[str, Any] | None = None


class WorkerReply(BaseModel):
    cancel_requested: bool
    # The last worker sequence number stored for this attempt: a restarted worker group
    # (Ray Train's retry) numbers its events on from here.
    last_wseq: int = 0
