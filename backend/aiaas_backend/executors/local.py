"""The default executor: one worker process per run on this machine.

Runs wait in a queue, taken fairly across users (:mod:`.fair`), until their resources
are free: GPUs (handed out through ``CUDA_VISIBLE_DEVICES``) or one of ``slots`` CPU places. A warm worker
(:mod:`.warm`) waits for the next run whenever a place is free.

Workers run in their own session, so they outlive the API server: on start the
executor re-adopts workers that are still alive, and requeues (from the last
checkpoint) runs whose worker is gone.

Every worker starts through the sandbox launcher (:mod:`aiaas_backend.sandbox`). The
executor also watches each worker's limits
(memory over all its processes, bytes in its folder, wall time) and ends a run that
goes over one with a message naming it.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aiaas_sdk.wire import RunStatus

from ..artifacts import Artifacts
from ..config import Settings
from ..event_bus import EventBus
from ..lifecycle import set_status
from ..models import Run
from ..processes import process_alive
from ..reports import apply_leftovers
from ..run_files import RunFiles
from ..sandbox import LaunchSpec, Launcher, Watch
from ..security import new_worker_token
from .base import Executor
from .fair import fair_order
from .run_data import RunData
from .warm import WarmWorker

log = logging.getLogger("aiaas.executor")


@dataclass
class _Worker:
    run_id: str
    attempt: int
    gpu_ids: list[str]
    proc: subprocess.Popen[bytes] | psutil.Process
    watch: Watch | None = None
    cancel_deadline: float | None = None
    # Set when the executor ended the worker for going over a limit: the run's error.
    limit_reason: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_reason(self) -> str | None:
        """None while alive; otherwise how the process ended, in words."""
        if isinstance(self.proc, subprocess.Popen):
            code = self.proc.poll()
            if code is None:
                return None
            if self.limit_reason:
                return self.limit_reason
            if code > 128 and code - 128 in signal.valid_signals():
                code = 128 - code  # bubblewrap passes a signal on as 128 + its number
            if code < 0:
                name = signal.Signals(-code).name
                hint = " (out of memory, or killed by someone)" if -code == signal.SIGKILL else ""
                return f"the worker process was killed by {name}{hint}"
            return f"the worker process exited with code {code} before reporting a result"
        try:
            if self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            pass
        return self.limit_reason or ("the worker process ended while the server was restarting, without "
                                     "reporting a result")

    def kill(self) -> None:
        Launcher.kill(self.pid)


class LocalExecutor(Executor):
    name = "local"
    # The program a worker process runs: it reads one JSON assignment line on stdin.
    worker_module = "aiaas_backend.worker"

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        artifacts: Artifacts,
        api_url: Callable[[], str],
        bus: EventBus,
        launcher: Launcher,
        run_data: RunData | None = None,
        files: RunFiles | None = None,
    ) -> None:
        self._settings = settings
        self._run_data = run_data
        self._launcher = launcher
        self._bus = bus
        self._sessions = sessions
        self._artifacts = artifacts
        self._api_url = api_url
        self._workers: dict[str, _Worker] = {}
        self._warm = WarmWorker(launcher, artifacts, self._spawn, enabled=settings.warm_worker)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aiaas-executor", daemon=True)
        self._log_file: IO[bytes] | None = None
        self._files = files
        self._keeper = ThreadPoolExecutor(1, thread_name_prefix="aiaas-keep-files")

    # -- Executor -----------------------------------------------------------
    @property
    def gpus(self) -> int:
        return len(self._settings.gpus)

    @property
    def slots(self) -> int:
        return self._settings.slots

    def start(self) -> None:
        self._log_file = open(self._settings.data_dir / "workers.log", "ab")
        self._warm.clear_leftovers()
        with self._sessions() as session:
            self._reconcile(session)
            session.commit()
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._warm.stop()
        self._keeper.shutdown(wait=True)  # a run's files half-way to the store finish first
        # Busy workers keep running on purpose: the next start adopts them.
        if self._log_file:
            self._log_file.close()

    # -- the loop -----------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=0.25)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._enforce_limits()
                with self._sessions() as session:
                    self._reap(session)
                    self._enforce_cancels(session)
                    self._dispatch(session)
                if not self._stopping.is_set():
                    self._warm.ensure(self._has_room())
            except Exception:  # keep scheduling whatever one tick hit
                log.exception("executor tick failed")
                time.sleep(1.0)

    def _reconcile(self, session: Session) -> None:
        for run in session.scalars(select(Run).where(Run.status == RunStatus.running.value)):
            proc = process_alive(run.worker_pid, run.worker_started)
            gpu_ids = [g for g in (run.gpu_ids or "").split(",") if g]
            if proc is not None:
                log.info("adopting the live worker %s of run %s", proc.pid, run.id)
                # Its wall time counts again from now: the start of the adoption.
                self._workers[run.id] = _Worker(run.id, run.attempt, gpu_ids, proc, self._watch(proc.pid, run.id))
            else:
                self._finish(session, run, "its worker was gone when the server restarted", requeue=True)
                self._keep_if_succeeded(run)

    def _reap(self, session: Session) -> None:
        for run_id, worker in list(self._workers.items()):
            reason = worker.exit_reason()
            if reason is None:
                continue
            del self._workers[run_id]
            if self._run_data is not None:
                # Its links would keep evicted cache files alive; a requeued run is placed again.
                self._run_data.release(self._artifacts.run_dir(run_id))
            run = session.get(Run, run_id)
            if run is not None and run.attempt == worker.attempt:
                self._finish(session, run, reason, requeue=False)
                session.commit()
                self._keep_if_succeeded(run)
                self._bus.publish(run_id)

    def _keep_if_succeeded(self, run: Run) -> None:
        """A succeeded run's final files into the store (run_files.py), off the scheduling loop:
        on S3 that is an upload."""
        if self._files is not None and run.status == RunStatus.succeeded.value:
            self._keeper.submit(self._keep, run.id)

    def _keep(self, run_id: str) -> None:
        try:
            self._files.keep(run_id)  # type: ignore[union-attr]
        except Exception:  # the folder still has them; the store's copy is what failed
            log.exception("run %s: storing its final files failed", run_id)

    def _finish(self, session: Session, run: Run, reason: str, *, requeue: bool) -> None:
        """Settle a run whose worker is gone, using what it left on disk first."""
        if RunStatus(run.status).terminal:
            return
        pending = self._artifacts.pending_events(run.id, run.attempt)
        if apply_leftovers(session, run, pending, self._artifacts.result(run.id, run.attempt)):
            return
        if run.cancel_requested:
            set_status(session, run, RunStatus.cancelled, error="cancelled by the user")
        elif requeue and run.attempt < self._settings.max_attempts:
            where = "its last checkpoint" if self._has_checkpoint(run.id) else "the start (no checkpoint yet)"
            run.attempt += 1
            run.last_wseq = 0  # the next worker numbers its reports from 1 again
            set_status(
                session, run, RunStatus.queued, reason=f"requeued from {where}: {reason}",
                worker_pid=None, worker_started=None, gpu_ids=None,
            )
        else:
            tried = f" (attempt {run.attempt} of {self._settings.max_attempts})" if requeue else ""
            set_status(session, run, RunStatus.failed, error=f"{reason}{tried}")

    def _enforce_limits(self) -> None:
        for run_id, worker in self._workers.items():
            if worker.watch is None or worker.limit_reason:
                continue
            reason = worker.watch.check()
            if reason:
                log.warning("run %s: %s; ending its worker", run_id, reason)
                worker.limit_reason = reason
                worker.kill()

    def _enforce_cancels(self, session: Session) -> None:
        for run_id, worker in self._workers.items():
            run = session.get(Run, run_id)
            if run is None or not run.cancel_requested:
                continue
            now = time.monotonic()
            if worker.cancel_deadline is None:
                # The worker hears of the cancel in the reply to its next report
                # and stops after the current step; kill it if it does not.
                worker.cancel_deadline = now + self._settings.cancel_grace_s
            elif now > worker.cancel_deadline:
                log.warning("run %s did not stop within the grace period; killing its worker", run_id)
                worker.kill()

    # -- placing runs ---------------------------------------------------------
    def _free_gpus(self) -> list[str]:
        used = {g for w in self._workers.values() for g in w.gpu_ids}
        return [g for g in self._settings.gpus if g not in used]

    def _cpu_runs(self) -> int:
        return sum(1 for w in self._workers.values() if not w.gpu_ids)

    def _has_room(self) -> bool:
        return bool(self._free_gpus()) or self._cpu_runs() < self._settings.slots

    def _dispatch(self, session: Session) -> None:
        for run in fair_order(session):
            free = self._free_gpus()
            if run.gpus > 0:
                if len(free) < run.gpus:
                    return  # no overtaking: the next run in fair order waits for its GPUs
                gpu_ids = free[: run.gpus]
            elif self._cpu_runs() < self._settings.slots:
                gpu_ids = []
            else:
                return
            self._launch(session, run, gpu_ids)

    def _has_checkpoint(self, run_id: str) -> bool:
        return self._artifacts.last_checkpoint(run_id).exists()

    def _extra_assignment(self, run: Run) -> dict[str, object]:
        """What this executor's worker program needs beyond the common assignment."""
        return {}

    def _place_datasets(self, session: Session, run: Run) -> dict[str, str] | None:
        """The run's datasets in its folder, as its worker sees them; None leaves the worker to
        fetch them itself (through the API, with its token)."""
        if self._run_data is None:
            return None
        placed = self._run_data.place(session, run, self._artifacts.run_dir(run.id))
        return {name: self._as_seen(run.id, path) for name, path in placed.items()}

    def _launch(self, session: Session, run: Run, gpu_ids: list[str]) -> None:
        try:
            datasets = self._place_datasets(session, run)
        except Exception as exc:  # noqa: BLE001 - a missing chunk or a full disk fails this run only
            log.exception("could not place the datasets of run %s", run.id)
            set_status(session, run, RunStatus.failed,
                       error=f"could not make its datasets available on this node: {type(exc).__name__}: {exc}")
            session.commit()
            self._bus.publish(run.id)
            return
        token, token_hash = new_worker_token()
        ckpt = self._artifacts.last_checkpoint(run.id)
        set_status(session, run, RunStatus.running, worker_token_hash=token_hash, gpu_ids=",".join(gpu_ids))
        session.commit()
        self._bus.publish(run.id)
        assignment = {
            "run_id": run.id,
            "attempt": run.attempt,
            "token": token,
            **self._reach(),
            "gpu_ids": gpu_ids,
            "trainer_kwargs": run.trainer_kwargs,
            "test": run.run_test,
            "resume_from": self._as_seen(run.id, ckpt) if ckpt.exists() else None,
            "checkpoint_every_s": self._settings.checkpoint_every_s,
            "checkpoint_every_n_epochs": run.checkpoint_every_n_epochs,
            **({"datasets": datasets} if datasets is not None else {}),
            **self._extra_assignment(run),
        }
        proc = self._hand_over(assignment, self._artifacts.run_dir(run.id))
        if proc is None:
            set_status(session, run, RunStatus.failed, error="could not start a worker process; see workers.log")
            session.commit()
            self._bus.publish(run.id)
            return
        # The process running the user's code: what a user sees, and what a restart adopts.
        run.worker_pid = Launcher.user_pid(proc)
        try:
            run.worker_started = psutil.Process(run.worker_pid).create_time()
        except psutil.Error:
            run.worker_pid, run.worker_started = proc.pid, psutil.Process(proc.pid).create_time()
        session.commit()
        self._workers[run.id] = _Worker(run.id, run.attempt, gpu_ids, proc, self._watch(proc.pid, run.id))

    def _watch(self, pid: int, run_id: str) -> Watch | None:
        """The limits apply where the sandbox does (not to Ray drivers, not with AIAAS_SANDBOX=off)."""
        if not self._launcher.isolates:
            return None
        return Watch(pid, self._artifacts.run_dir(run_id), self._settings.sandbox_limits)

    def _reach(self) -> dict[str, object]:
        """How a worker finds the API server and its run's files, as it sees them."""
        if self._launcher.isolates:
            # No network in the sandbox: the API's Unix socket, and only its own folder.
            spec = self._spec(Path("/"))
            return {"api_url": "http://aiaas", "api_socket": self._launcher.shared_inside(spec, "api") + "/api.sock",
                    "server_info": None, "artifacts_root": "", "run_dir": self._launcher.folder_inside(spec)}
        return {"api_url": self._settings.advertise_url or self._api_url(),
                "server_info": str(self._settings.data_dir / "server.json"),
                "artifacts_root": str(self._artifacts.root)}

    def _as_seen(self, run_id: str, path: Path) -> str:
        """A path in a run's folder as its worker sees it."""
        if not self._launcher.isolates:
            return str(path)
        inside = self._launcher.folder_inside(self._spec(Path("/")))
        return f"{inside}/{path.relative_to(self._artifacts.run_dir(run_id))}"

    def _hand_over(self, assignment: dict[str, object], folder: Path) -> subprocess.Popen[bytes] | None:
        line = (json.dumps(assignment) + "\n").encode()
        for _ in range(2):
            proc = self._warm.take(folder) or self._spawn(folder, [])
            if proc is None:
                return None
            try:
                assert proc.stdin is not None
                proc.stdin.write(line)
                proc.stdin.close()
                return proc
            except (BrokenPipeError, OSError):
                Launcher.kill(proc.pid)
                proc.wait()
        return None

    def _spec(self, folder: Path, args: list[str] | None = None) -> LaunchSpec:
        shared = {"api": self._settings.api_socket_dir} if self._launcher.isolates else {}
        return LaunchSpec(owner=folder.name, module=self.worker_module, args=args or [], folder=folder,
                          folder_writable=True,
                          shared_ro=shared, limits=self._settings.sandbox_limits, stdin=subprocess.PIPE,
                          stdout=self._log_file)

    def _spawn(self, folder: Path, args: list[str]) -> subprocess.Popen[bytes] | None:
        try:
            return self._launcher.start(self._spec(folder, args))
        except OSError:
            log.exception("could not start a worker with %s", self._settings.worker_python)
            return None
