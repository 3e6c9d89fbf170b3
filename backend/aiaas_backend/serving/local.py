"""The local serving runtime: replica processes on this machine, one router per deployment.

Replicas are started and replaced in the background; a deployment is ready as
soon as one replica is. Rolling updates start the new version's replicas
before retiring the old ones, so requests keep flowing; a replica that dies
is replaced with one of the same version.

Replicas start through the sandbox launcher: a replica sees its run's folder read-only
and a folder of its own for its socket, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..artifacts import Artifacts
from ..sandbox import LaunchSpec, Launcher, Limits
from .base import DeploymentConfig, ServingRuntime
from .optimize_jobs import OptimizeJobs
from .router import Replica, Router

log = logging.getLogger("aiaas.serving")

# How long a replica may take to import torch and load its model before it counts as failed;
# a compiled one also loads (and, for shapes the cache lacks, compiles) its kernels first.
READY_S = 120.0
READY_COMPILE_S = 600.0


def replica_env() -> dict[str, str]:
    """OpenMP threads that sleep when idle, unless the operator chose otherwise.

    torch's intra-op threads otherwise spin after every op, waiting for the next: a replica
    between batches then burns a core that the API server and the other replicas need. With
    an MLP under load that was 0.9 ms of replica CPU per request against 0.05 ms sleeping,
    and 3-4x the requests per second (bench_serving.py, 2 cores).
    """
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Runtime:
    config: DeploymentConfig
    router: Router
    versions: dict[str, str] = field(default_factory=dict)  # replica name -> run id
    error: str | None = None
    starting: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def status(self) -> str:
        if self.router.ready_replicas:
            return "updating" if self.starting else "ready"
        return "failed" if self.error and not self.starting else "starting"


class LocalServing(ServingRuntime):
    name = "local"

    def __init__(self, artifacts: Artifacts, data_dir: Path, launcher: Launcher,
                 gpus: list[str] | None = None, replica_threads: int = 0, limits: Limits | None = None) -> None:
        self._artifacts = artifacts
        self._replica_threads = replica_threads
        self._gpus = gpus or []
        self._launcher = launcher
        # A replica serves until it is retired: no wall time, and it writes no folder.
        self._limits = Limits(limits.memory_mb, limits.processes) if limits else Limits()
        self._log_path = data_dir / "replicas.log"
        self._sockets = Path(tempfile.mkdtemp(prefix="aiaas-sock-"))  # short paths: AF_UNIX limit
        self._runtimes: dict[str, Runtime] = {}
        self._counter = 0
        self._log: IO[bytes] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._optimized = data_dir / "optimized"
        self._jobs: OptimizeJobs | None = None

    def runtime(self, deployment_id: str) -> Runtime | None:
        return self._runtimes.get(deployment_id)

    def schedule(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background (replica starts take seconds; requests do not wait)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _threads(self, replicas: int) -> int:
        return self._replica_threads or max(1, (os.cpu_count() or 1) // max(1, replicas))

    async def optimize(self, run_id: str, method: str, signature: dict[str, Any] | None,
                       batch_rows: int) -> dict[str, Any]:
        if self._jobs is None:
            self._jobs = OptimizeJobs(self._artifacts, self._launcher, self._optimized, self._limits,
                                      self._open_log(), self._threads(1))
        return await self._jobs.measure(run_id, method, signature, batch_rows)

    def _open_log(self) -> IO[bytes]:
        if self._log is None:
            self._log = open(self._log_path, "ab")
        return self._log

    # -- replicas -------------------------------------------------------------
    async def _start_replica(self, runtime: Runtime, run_id: str) -> Replica | None:
        self._counter += 1
        name = f"{runtime.config.id}-{self._counter}"
        sock_dir = self._sockets / str(self._counter)  # the replica's own: it creates its socket there
        sock_dir.mkdir()
        sock = sock_dir / "replica.sock"
        # By default a replica gets its share of the cores. On a machine the replicas share
        # with the API server and other work, their intra-op threads stall at every op's
        # barrier while one waits to be scheduled; AIAAS_REPLICA_THREADS=1 avoids that at
        # the cost of peak throughput for heavy models (both measured with bench_serving.py).
        threads = self._threads(runtime.config.replicas)
        # Replicas take the backend's GPUs in turn (shared with training, not reserved);
        # without GPUs they run on the CPU, sharing its cores.
        gpu = self._gpus[self._counter % len(self._gpus)] if self._gpus else ""
        spec = LaunchSpec(owner=runtime.config.id, module="aiaas_backend.serving.replica", args=[],
                          folder=self._artifacts.run_dir(run_id), folder_writable=False, shared_rw={"sock": sock_dir},
                          env={"CUDA_VISIBLE_DEVICES": gpu, **replica_env()}, limits=self._limits,
                          stdin=subprocess.DEVNULL,
                          stdout=self._open_log(), die_with_parent=True)
        method = runtime.config.optimize
        if method:  # measured at deploy: the replica only applies it, from the server's cache
            spec.shared_ro["optimized"] = self._optimized / run_id / method
        spec.args = ["--socket", f"{self._launcher.shared_inside(spec, 'sock')}/replica.sock",
                     "--run-dir", self._launcher.folder_inside(spec), "--run", run_id, "--threads", str(threads),
                     *(["--optimize", method, "--optimized", self._launcher.shared_inside(spec, "optimized")]
                       if method else [])]
        try:
            proc = self._launcher.start(spec)
        except OSError as exc:
            runtime.error = f"could not start a replica: {exc}"
            return None
        ready_s = READY_COMPILE_S if method == "compile" else READY_S
        for _ in range(int(ready_s / 0.05)):
            if proc.poll() is not None:
                runtime.error = (f"a replica exited with code {proc.returncode} while loading run {run_id}; "
                                 f"see {self._log_path}")
                return None
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        else:
            proc.kill()
            runtime.error = f"a replica did not become ready within {ready_s:.0f} s; see {self._log_path}"
            return None
        reader, writer = await asyncio.open_unix_connection(str(sock))

        def stop() -> None:
            writer.close()
            if proc.poll() is None:
                proc.terminate()
            shutil.rmtree(sock_dir, ignore_errors=True)
            # Reap it (no zombies in the server), killing it if it ignores the terminate.
            threading.Thread(target=_reap, args=(proc,), daemon=True).start()

        replica = Replica(name, reader, writer, stop)
        replica.process = proc  # type: ignore[attr-defined]
        runtime.versions[name] = run_id
        return replica

    async def _add_replicas(self, runtime: Runtime, run_id: str, count: int) -> int:
        runtime.starting += count
        added = 0

        async def one() -> None:
            nonlocal added
            replica = await self._start_replica(runtime, run_id)
            if replica is not None:
                runtime.router.add_replica(replica)  # serves as soon as it is ready
                added += 1

        try:
            # Together, not one after another: a replica spends its start-up importing torch
            # and loading weights, so n replicas were ready only after n start-ups.
            results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        finally:
            runtime.starting -= count
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return added

    async def _retire(self, runtime: Runtime, replicas: list[Replica]) -> None:
        for replica in replicas:
            await runtime.router.remove_replica(replica)
            runtime.versions.pop(replica.name, None)

    # -- deployments ---------------------------------------------------------
    async def deploy(self, config: DeploymentConfig) -> Runtime:
        router = Router(max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
                        max_queue=config.max_queue, timeout_s=config.timeout_s)
        runtime = Runtime(config, router)

        async def replace(lost: Replica) -> None:
            runtime.versions.pop(lost.name, None)
            if lost in router.replicas:
                router.replicas.remove(lost)
            lost.stop()
            if runtime.config.id in self._runtimes:
                self.schedule(self._add_replicas(runtime, runtime.config.run_id, 1))
                if self.on_event is not None:
                    self.on_event(runtime.config.id, "replica_restarted", f"replica {lost.name} stopped; a new "
                                  "one replaces it", {"replica": lost.name, "run_id": runtime.config.run_id})

        router.on_replica_lost = replace
        self._runtimes[config.id] = runtime
        self.schedule(self._add_replicas(runtime, config.run_id, config.replicas))
        return runtime

    async def update(self, deployment_id: str, run_id: str) -> None:
        """Rolling: the new version's replicas join before the old ones leave."""
        runtime = self._runtimes[deployment_id]
        async with runtime.lock:
            old = list(runtime.router.replicas)
            runtime.config.run_id = run_id
            runtime.error = None
            if await self._add_replicas(runtime, run_id, runtime.config.replicas) == 0:
                return  # keep serving the old version; runtime.error says why
            await self._retire(runtime, old)

    async def scale(self, deployment_id: str, replicas: int) -> None:
        runtime = self._runtimes[deployment_id]
        async with runtime.lock:
            runtime.config.replicas = replicas
            current = list(runtime.router.replicas)
            if replicas > len(current):
                await self._add_replicas(runtime, runtime.config.run_id, replicas - len(current))
            else:
                await self._retire(runtime, current[replicas:])

    async def delete(self, deployment_id: str) -> None:
        runtime = self._runtimes.pop(deployment_id, None)
        if runtime is not None:
            await runtime.router.close()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for deployment_id in list(self._runtimes):
            await self.delete(deployment_id)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self._sockets, ignore_errors=True)
