"""The store's tables. Every change goes with an Alembic migration in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite gives back naive datetimes for timezone-aware columns; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set only from the command line (`aiaas keys create --admin`): an admin's keys manage every user's keys.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class KeyLifecycle:
    """What API keys and deployment keys share: a name, an end, and when they were last used."""

    name: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Written at most once per interval per key (audit.KeyUsage), not on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def ended(self, now: datetime | None = None) -> str | None:
        """Why the key no longer works ("revoked at ...", "expired at ..."), or None while it works."""
        if self.revoked_at is not None:
            return f"revoked at {as_utc(self.revoked_at):%Y-%m-%d %H:%M:%S} UTC"
        if self.expires_at is not None and as_utc(self.expires_at) <= (now or utcnow()):
            return f"expired at {as_utc(self.expires_at):%Y-%m-%d %H:%M:%S} UTC"
        return None


class ApiKey(KeyLifecycle, Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trainer_kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_test: Mapped[bool] = mapped_column(Boolean, default=False)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_ids: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    final_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_started: Mapped[float | None] = mapped_column(Float)
    worker_token_hash: Mapped[str | None] = mapped_column(String(64))
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_wseq: Mapped[int] = mapped_column(Integer, default=0)
    input_signature: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The dataset versions the run reads: [{"name", "version", "version_id"}], fixed at submit.
    datasets: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # A resumable checkpoint every N epochs; None: by time (Settings.checkpoint_every_s).
    checkpoint_every_n_epochs: Mapped[int | None] = mapped_column(Integer)
    # Per feature mean, std and histogram of the training inputs (monitoring/drift.py).
    input_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Event(Base):
    """One entry of a run's ordered log: a status change, a metric point or a log line."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    time: Mapped[float] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("run_id", "seq", name="uq_events_run_seq"),
        Index("ix_events_run_kind_seq", "run_id", "kind", "seq"),
    )


class Deployment(Base):
    """A named endpoint serving one run's model; ``history`` holds earlier run ids for rollback."""

    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    history: Mapped[list[str]] = mapped_column(JSON, default=list)
    replicas: Mapped[int] = mapped_column(Integer)
    max_batch_size: Mapped[int] = mapped_column(Integer)
    max_wait_ms: Mapped[float] = mapped_column(Float)
    max_queue: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Float)
    autoscale: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # optimize="int8"|"compile"|"onnx", and what it measured for the version now served.
    optimize: Mapped[str | None] = mapped_column(String(16))
    optimize_tolerance: Mapped[float | None] = mapped_column(Float)
    optimization: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # SLO rules (wire_monitoring.AlertRules) and the ones firing now: {rule: {"since", "value"}},
    # kept here so that a restart resolves what was raised before it.
    alert_rules: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    alerts_firing: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_event_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_deployments_user_name"),)


class DeploymentEvent(Base):
    """One entry of a deployment's ordered log (alerts, restarts, updates, scaling)."""

    __tablename__ = "deployment_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    time: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("deployment_id", "seq", name="uq_deployment_events_seq"),)


class Webhook(Base):
    """Where a user's alert events are POSTed, signed with ``secret`` (HMAC-SHA256).

    The secret is kept as given: the server needs it to sign, unlike API keys, which it only checks.
    """

    __tablename__ = "webhooks"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeploymentKey(KeyLifecycle, Base):
    """A key that may call one deployment and nothing else (to share an endpoint)."""

    __tablename__ = "deployment_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One line of the append-only audit log: a key created, revoked, or used from a new address.

    Nothing updates or deletes these rows (the migration adds triggers that refuse it)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(16))
    key_kind: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[int] = mapped_column(Integer)
    key_prefix: Mapped[str] = mapped_column(String(16))
    # The key's owner (a deployment key's: the deployment's owner); no foreign keys, so the
    # log outlives whatever it names.
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # Who acted: "cli", or "user:NAME" for a change made through the API; for "use", the key itself.
    actor: Mapped[str] = mapped_column(String(220))
    ip: Mapped[str | None] = mapped_column(String(64))


class ScrapeKey(Base):
    """A key that may read ``GET /metrics`` and nothing else (for Prometheus)."""

    __tablename__ = "scrape_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Dataset(Base):
    """A user's named dataset; its versions hold the data. ``next_version`` never goes back,
    so ``pets:2`` names one manifest forever, even after version 2 is deleted."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_datasets_user_name"),)


class DatasetVersion(Base):
    """An immutable manifest: every file's path, size and chunk digests."""

    __tablename__ = "dataset_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    # SHA-256 of the canonical manifest: equal content, equal digest (the node cache's key).
    digest: Mapped[str] = mapped_column(String(64))
    files: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_version"),)


class DatasetChunk(Base):
    """A chunk a user has sent (and the server verified). Blobs are stored once per backend;
    a user may use a blob only after sending its bytes themself, so nobody learns what
    another user holds."""

    __tablename__ = "dataset_chunks"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PackedChunk(Base):
    """Where a small chunk's bytes are: ``size`` bytes from ``offset`` of the pack object ``pack``
    (small chunks are stored many to an object, not one each; larger ones as blobs of their own).
    One row per digest, whoever sent it: who may use it is :class:`DatasetChunk`'s business."""

    __tablename__ = "dataset_packed_chunks"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    pack: Mapped[str] = mapped_column(String(64), index=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)


class DatasetUpload(Base):
    """An upload in progress: the manifest to commit once every chunk is here."""

    __tablename__ = "dataset_uploads"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
