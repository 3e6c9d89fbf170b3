"""The backend's settings: one pydantic-settings class, ``AIAAS_*`` environment variables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import psutil
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aiaas_sdk.config import default_data_dir


def detect_gpus() -> list[str]:
    """Visible NVIDIA GPU indices, without importing torch (the server stays light)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


# Addresses only this machine can reach: a backend bound to one of these may keep a key for
# its local user (``local.key``) and share it with the SDK through the config file.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIAAS_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in data_dir")
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    executor: Literal["local", "ray"] = "local"
    # API server processes sharing the port (SO_REUSEPORT): the primary and N-1 fronts that
    # answer predicts up to the queue and proxy the rest (docs/serving.md#several-server-processes).
    server_workers: int = Field(default=1, ge=1, le=64)
    # The Ray cluster to use with executor "ray": "auto", "HOST:PORT" of its head, or "ray://HOST:10001".
    ray_address: str | None = None
    # Ray Train restarts a failed worker group from its last checkpoint up to this many times.
    ray_max_failures: int = Field(default=2, ge=0)
    # Logical CPUs one Ray Train worker (one DDP process) and one Ray Serve replica reserve.
    ray_cpus_per_worker: float = Field(default=1.0, gt=0)
    ray_cpus_per_replica: float = Field(default=1.0, gt=0)
    # How Ray workers on other machines reach this server (default: the address it listens on).
    advertise_url: str | None = None
    # A folder on each Ray node where a run's Ray workers keep its working files (the code,
    # checkpoints before they are sent, output); default: the node's temporary folder. Ray
    # workers reach the run's stored files through the API only, so it is never shared.
    ray_worker_dir: str | None = None
    # CPU runs that may train at once; GPU runs are limited by free GPUs instead.
    slots: int = Field(default=1, ge=1, le=1024)
    gpus: list[str] = Field(default_factory=detect_gpus)
    # torch threads per local serving replica; 0: the cores divided among the replicas.
    replica_threads: int = Field(default=0, ge=0, le=1024)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    cancel_grace_s: float = Field(default=15.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    checkpoint_every_s: float = Field(default=60.0, gt=0)
    worker_python: str = sys.executable
    # Point the user's config file at this backend (loopback only, and never over another
    # backend's entry). The embedded backend of ``aiaas.connect("local")`` runs without it.
    write_config: bool = True
    warm_worker: bool = True
    # Prometheus metrics at GET /metrics; false records nothing (to measure their cost).
    metrics: bool = True
    # Let loopback clients read /metrics without a scrape key (a Prometheus on this machine).
    metrics_loopback: bool = False
    # Keys (docs/security.md): a key's last_used_at is written at most this often, and its use
    # from one address is audited once per key_audit_every_s.
    key_touch_every_s: float = Field(default=60.0, ge=0)
    key_audit_every_s: float = Field(default=3600.0, ge=0)
    # TLS by uvicorn itself: a PEM certificate (chain) and its private key, both or neither.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    # -- deployment monitoring (docs/monitoring.md) ------------------------------
    # Drift samples one predict input row in this many (0: no sampling, no drift scores).
    drift_sample_every: int = Field(default=8, ge=0, le=1_000_000)
    # Seconds between two evaluations of the alert rules.
    alert_interval_s: float = Field(default=1.0, ge=0.1, le=60)
    # Webhook deliveries: tries per event, and the first pause between them (doubling each time).
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff_s: float = Field(default=0.5, gt=0, le=60)
    # How user code (workers, replicas) is confined; docs/security.md. "bwrap": bubblewrap, and
    # refuse to start without it (the default: a server runs other people's code); "auto":
    # bubblewrap if it works here, else unconfined with a warning (the embedded single-user
    # backend of aiaas.connect("local")); "off": unconfined, for development.
    sandbox: Literal["bwrap", "auto", "off"] = "bwrap"
    # Per run (0: no limit). Memory: resident memory of all its processes (default: half the
    # machine's); processes: processes and threads; disk: bytes in its folder; wall: seconds.
    sandbox_memory_mb: int = Field(default_factory=lambda: psutil.virtual_memory().total // 2 // 2**20, ge=0)
    sandbox_processes: int = Field(default=4096, ge=0)
    sandbox_disk_mb: int = Field(default=50 * 1024, ge=0)
    sandbox_wall_s: float = Field(default=0.0, ge=0)
    # Size of a sandbox's private /tmp and /dev/shm (memory-backed; at most the disk limit).
    sandbox_tmp_mb: int = Field(default=1024, ge=1)
    # -- datasets and the artifact store (docs/datasets.md) ---------------------
    # Where dataset chunks live: unset (a directory under data_dir), file:///PATH, or s3://BUCKET/PREFIX.
    store_url: str | None = None
    # S3-compatible storage: endpoint (MinIO, SeaweedFS, ...; unset for AWS) and credentials
    # (unset: boto3's usual chain: AWS_* variables, ~/.aws, instance roles).
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = Field(default=None, repr=False)
    s3_region: str | None = None
    # Bytes of dataset chunks one user may keep; None: no limit.
    user_quota_bytes: int | None = Field(default=None, ge=0)
    # An upload session left open this long (never committed: an interrupted notebook) is closed,
    # and the chunks only it named stop counting (dataset_sweep.py).
    dataset_upload_ttl_s: float = Field(default=24 * 3600, gt=0)
    # The largest dataset chunk a client may send (the SDK sends 4 MiB ones).
    max_chunk_bytes: int = Field(default=64 * 1024**2, ge=1024)
    # A client on this machine may hand the server its open files over a Unix socket in
    # data_dir/upload instead of sending their bytes (upload_socket.py says why that is safe).
    upload_socket: bool = True
    # Each node's read-only cache of materialised dataset versions (LRU above dataset_cache_bytes).
    dataset_cache_dir: Path | None = None
    dataset_cache_bytes: int = Field(default=50 * 1024**3, ge=0)
    # -- per-user quotas and per-key rate limits (docs/security.md#quotas-and-rate-limits) --
    # Over one: 429 with Retry-After, naming the limit. 0: no limit.
    quota_runs_queued: int = Field(default=1000, ge=0)
    quota_deployments: int = Field(default=100, ge=0)
    # Replicas over all of a user's deployments (an autoscaled one counts its max_replicas).
    quota_replicas: int = Field(default=64, ge=0)
    # Requests per second per API key (token bucket, in this server process's memory), and
    # how many may come at once after a quiet spell (default: two seconds' worth).
    rate_requests_per_s: float = Field(default=10_000.0, ge=0)
    rate_burst: int | None = Field(default=None, ge=1)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if self.host not in LOOPBACK and self.write_config:
            # A server reachable from other machines must not write its
            # admin key into a config file by itself.
            self.write_config = False
        if self.store_url and not self.store_url.startswith(("s3://", "file://")):
            raise ValueError(f"store_url must be s3://BUCKET/PREFIX or file:///PATH, got {self.store_url!r}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both ssl_certfile and ssl_keyfile (--ssl-certfile and --ssl-keyfile)")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"no TLS file at {path}: pass the path of a PEM file")
        if self.executor == "ray" and not self.ray_address:
            raise ValueError("executor 'ray' needs ray_address (--ray-address auto, or the head's HOST:PORT)")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'aiaas.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def api_socket_dir(self) -> Path:
        """Holds ``api.sock``, the API on a Unix socket: the only way out of a sandbox."""
        return self.data_dir / "api"

    @property
    def sandbox_limits(self):  # type: ignore[no-untyped-def]
        from .sandbox import Limits

        return Limits(self.sandbox_memory_mb, self.sandbox_processes, self.sandbox_disk_mb, self.sandbox_wall_s)

    @property
    def cache_dir(self) -> Path:
        return self.dataset_cache_dir or self.data_dir / "cache"
