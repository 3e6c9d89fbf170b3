"""``aiaas local status`` and ``aiaas local stop``: see and stop the backend of a data dir.

The embedded backend that ``aiaas.connect("local")`` starts keeps running after the
notebook or script ends (so runs and deployments go on); these are how a user finds
it again and stops it. Stopping is the server's own clean shutdown (SIGTERM): it
stops its replicas and its warm worker; a run still training is refused unless
forced, and a forced stop ends its worker so that the run is requeued from its last
checkpoint when the backend next starts (as after a crash). Nothing in the store is touched.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy import func, select

from aiaas_sdk.wire import RunStatus

from .db import make_engine, session_factory
from .models import Deployment, Run
from .processes import process_alive

_WORKER = "aiaas_backend.worker"
_REPLICA = "aiaas_backend.serving.replica"
_FRONT = "aiaas_backend.fronts.front"  # --workers N: the API server's other processes


@dataclass
class LocalBackendState:
    data_dir: Path
    url: str | None = None
    pid: int | None = None
    started: float | None = None
    # (role, pid, resident MiB) of the server and the processes it started.
    processes: list[tuple[str, int, float]] = field(default_factory=list)
    runs: Counter[str] = field(default_factory=Counter)
    deployments: int = 0
    running_runs: list[tuple[str, str, int | None, float | None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.pid is not None


def _server_process(data_dir: Path) -> tuple[dict[str, object], psutil.Process] | None:
    try:
        info = json.loads((data_dir / "server.json").read_text())
        proc = psutil.Process(int(info["pid"]))
        cmdline = " ".join(proc.cmdline())
    except (OSError, ValueError, KeyError, psutil.Error):
        return None
    # server.json outlives a killed server; its pid may since belong to something else.
    if "aiaas" not in cmdline or "server" not in cmdline or proc.status() == psutil.STATUS_ZOMBIE:
        return None
    return info, proc


def _role(proc: psutil.Process, busy: set[int]) -> str | None:
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    if _REPLICA in cmdline:
        return "replica"
    if _FRONT in cmdline:
        return "server front"
    if _WORKER in cmdline:
        return "worker" if proc.pid in busy else "warm worker"
    return None


def _mib(proc: psutil.Process) -> float:
    try:
        return proc.memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


def inspect(data_dir: Path, database_url: str) -> LocalBackendState:
    """What runs on ``data_dir``'s backend now, read from its process table and store."""
    state = LocalBackendState(data_dir)
    if (data_dir / "aiaas.db").exists() or not database_url.startswith("sqlite"):
        engine = make_engine(database_url)
        try:
            with session_factory(engine)() as session:
                state.runs = Counter(dict(session.execute(select(Run.status, func.count()).group_by(Run.status)).all()))
                state.deployments = session.scalar(select(func.count()).select_from(Deployment)) or 0
                state.running_runs = [
                    (r.id, r.name, r.worker_pid, r.worker_started)
                    for r in session.scalars(select(Run).where(Run.status == RunStatus.running.value))
                ]
        finally:
            engine.dispose()
    found = _server_process(data_dir)
    if found is None:
        return state
    info, server = found
    state.url, state.pid, state.started = str(info["url"]), server.pid, server.create_time()
    state.processes.append(("server", server.pid, _mib(server)))
    busy = {pid for _, _, pid, _ in state.running_runs if pid}
    candidates = {p.pid: p for p in server.children(recursive=True)}
    candidates |= {p.pid: p for p in (process_alive(pid, t) for _, _, pid, t in state.running_runs) if p is not None}
    roles = {pid: role for pid, proc in candidates.items() if (role := _role(proc, busy))}
    for pid, role in roles.items():
        # A sandboxed worker is a small tree (bubblewrap, then Python): list its top process,
        # with the memory of the whole tree.
        if _parent(candidates[pid]) in roles:
            continue
        tree = [candidates[pid], *_descendants(candidates[pid])]
        if role == "warm worker" and any(p.pid in busy for p in tree):
            role = "worker"  # the run's recorded pid is the sandbox's init, inside this tree
        state.processes.append((role, pid, sum(_mib(p) for p in tree)))
    return state


def _parent(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def describe(state: LocalBackendState) -> str:
    """The status report, a few lines a person reads."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(state.runs.items())) or "none"
    if not state.alive:
        return (f"no aiaas backend is running on {state.data_dir}\n"
                f"runs kept there: {counts}; deployments: {state.deployments}\n"
                "aiaas.connect(\"local\") starts it again (queued and interrupted runs resume, deployments come back)")
    uptime = time.time() - (state.started or time.time())
    lines = [f"aiaas backend running at {state.url} (pid {state.pid}, up {_duration(uptime)})",
             f"data dir: {state.data_dir}", f"runs: {counts}; deployments: {state.deployments}"]
    total = sum(mib for _, _, mib in state.processes)
    lines.append(f"processes ({total:.0f} MiB resident in all):")
    lines += [f"  {role:<12} pid {pid:<8} {mib:7.0f} MiB" for role, pid, mib in state.processes]
    lines.append("stop it with: aiaas local stop")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _ended(procs: list[psutil.Process], timeout: float) -> bool:
    """Wait until every process has exited. A zombie counts as ended: the notebook kernel
    that started the embedded backend is its parent and reaps it only later."""
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    running.append(proc)
            except psutil.NoSuchProcess:
                pass
        if not running:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _kill(proc: psutil.Process) -> None:
    try:
        proc.kill()
    except psutil.Error:
        pass


def _busy_tree(procs: list[psutil.Process], busy: set[int]) -> set[int]:
    """The pids among ``procs`` that belong to a busy worker: the worker, what it started, and
    the sandbox (bubblewrap) processes wrapping it. Those outlive the server on purpose, so
    waiting for them to end would only wait out the timeout."""
    tree = set(busy)
    for proc in procs:
        if proc.pid not in busy:
            continue
        try:
            tree |= {p.pid for p in proc.children(recursive=True)} | {p.pid for p in proc.parents()}
        except psutil.Error:
            pass
    return tree


class StopRefused(Exception):
    """The backend still has work that a plain stop would interrupt."""


def stop(state: LocalBackendState, *, force: bool = False, timeout: float = 60.0) -> list[str]:
    """Stop the backend of ``state`` (and what it started); returns what was done, in words."""
    done: list[str] = []
    if state.running_runs and not force:
        names = ", ".join(f"{name} ({run_id})" for run_id, name, _, _ in state.running_runs)
        raise StopRefused(
            f"{len(state.running_runs)} run(s) still training: {names}. Wait for them (run.wait()), cancel them, "
            "or stop anyway with `aiaas local stop --force`: they resume from their last checkpoint when the "
            "backend starts again"
        )
    if state.pid is not None:
        server = psutil.Process(state.pid)
        others = server.children(recursive=True)
        server.send_signal(signal.SIGTERM)
        if _ended([server], timeout):
            done.append(f"stopped the server (pid {state.pid})")
        else:
            server.kill()
            done.append(f"the server (pid {state.pid}) did not stop within {timeout:.0f} s and was killed")
        # The server stops its replicas and warm worker itself; nothing else it started may linger.
        busy = _busy_tree(others, {pid for _, _, pid, _ in state.running_runs})
        leftovers = [p for p in others if p.pid not in busy]
        if not _ended(leftovers, 10):
            for proc in leftovers:
                _kill(proc)
    for run_id, name, pid, started in state.running_runs:
        if (proc := process_alive(pid, started)) is not None:
            # SIGKILL, not SIGTERM: Lightning turns SIGTERM into a failed run, while a worker that
            # vanishes is requeued from its last checkpoint when the backend starts again.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                _kill(proc)
            _ended([proc], 15)
            done.append(f"stopped run {name} ({run_id}): it resumes from its last checkpoint on the next start")
    return done
