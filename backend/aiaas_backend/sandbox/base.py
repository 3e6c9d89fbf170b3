"""The contract for starting user code: one launcher turns "run this Python command for this
run or deployment, with this folder, these read-only paths and these limits" into a process.

The local executor (workers, including the warm one) and the local serving runtime (replicas)
start every process that unpickles user code through a :class:`Launcher`; nothing else in
them knows how the isolation is built. Implementations: :mod:`.bwrap` (bubblewrap: its own
filesystem view, no network, limits) and :mod:`.off` (a plain process, for development).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil



# The entry of a run's folder that the server keeps for itself: the run's datasets, placed
# read-only by the executor (executors/run_data.py). Never given to the sandbox's uid.
SERVER_OWNED = "datasets"


class SandboxUnavailable(RuntimeError):
    """The configured sandbox cannot be built on this machine; the message names the fixes."""


@dataclass(frozen=True)
class Limits:
    """What one run (or replica) may use; ``0`` means no limit."""

    memory_mb: int = 0  # memory of all its processes together (proportional set size)
    processes: int = 0  # processes and threads (the kernel counts both)
    disk_mb: int = 0  # bytes in its own folder
    wall_s: float = 0.0  # seconds from start to end

    def as_env(self) -> str:
        return f"{self.memory_mb},{self.processes},{self.disk_mb},{self.wall_s:g}"

    @classmethod
    def from_env(cls, value: str | None) -> Limits | None:
        if not value:
            return None
        memory, processes, disk, wall = value.split(",")
        return cls(int(memory), int(processes), int(disk), float(wall))


@dataclass
class LaunchSpec:
    """One process to start: ``python -m module args...`` for ``owner`` (a run or deployment id)."""

    owner: str
    module: str
    args: list[str]
    folder: Path  # the run's folder on the host
    folder_writable: bool  # a worker writes its folder; a replica only reads it
    read_only: list[Path] = field(default_factory=list)  # more host paths to see read-only (datasets)
    # More host folders, by the name the process sees them under (Launcher.shared_inside):
    # read-only ones (the API server's socket folder: connecting needs no write access)
    # and read-write ones given to this process alone (a replica's socket folder).
    shared_ro: dict[str, Path] = field(default_factory=dict)
    shared_rw: dict[str, Path] = field(default_factory=dict)
    # A replica is useless without the server that routes to it; a worker outlives it.
    die_with_parent: bool = False
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    stdin: int | IO[bytes] | None = None
    stdout: int | IO[bytes] | None = None


class Launcher(ABC):
    name: str
    #: whether user code is confined (False: it can do whatever this server's user can)
    isolates: bool

    def __init__(self, python: str) -> None:
        self.python = python

    @abstractmethod
    def start(self, spec: LaunchSpec) -> subprocess.Popen[bytes]:
        """Start the process; raises OSError when it cannot be started."""

    @abstractmethod
    def folder_inside(self, spec: LaunchSpec) -> str:
        """Where the process sees ``spec.folder``."""

    @abstractmethod
    def shared_inside(self, spec: LaunchSpec, name: str) -> str:
        """Where the process sees ``spec.shared_ro[name]`` or ``spec.shared_rw[name]``."""

    def describe(self) -> str:
        """One line for the server log: what this launcher isolates."""
        return self.name

    # -- shared helpers -------------------------------------------------------
    @staticmethod
    def user_pid(proc: subprocess.Popen[bytes]) -> int:
        """The process that stands for the user's code: the pid to show, to adopt after a
        restart, and whose death ends everything the code started (a sandbox's first process;
        without a sandbox, the process itself)."""
        return int(getattr(proc, "user_pid", proc.pid))

    @staticmethod
    def kill(pid: int) -> None:
        """Kill a launched process and everything it started (its whole sandbox)."""
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def give_folder(self, spare: Path, folder: Path) -> bool:
        """Make ``spare`` (the folder a warm process was started with) become ``folder``:
        ``folder``'s files move into ``spare``, then ``spare`` takes ``folder``'s name. A bind
        mount follows the directory across the rename, so the process sees the run's files.
        Returns False (and leaves ``folder`` as it was) if that is not possible."""
        moved: list[str] = []
        try:
            for entry in os.listdir(folder):
                os.rename(folder / entry, spare / entry)
                moved.append(entry)
            self.own_like(spare, spare)
            os.rename(spare, folder)  # replaces the now empty folder in one step
            return True
        except OSError:
            for entry in moved:
                try:
                    os.rename(spare / entry, folder / entry)
                except OSError:
                    pass
            return False

    def own_like(self, tree: Path, like: Path) -> None:
        """Give everything in ``tree`` the owner of ``like`` (only a root server changes owners),
        except the server's own read-only entries (:data:`SERVER_OWNED`)."""
        if os.geteuid() != 0:
            return
        st = like.stat()
        for root, dirs, files in os.walk(tree):
            if Path(root) == tree and SERVER_OWNED in dirs:
                dirs.remove(SERVER_OWNED)  # neither the folder nor what is in it changes owner
            for name in (*dirs, *files):
                try:
                    os.chown(os.path.join(root, name), st.st_uid, st.st_gid, follow_symlinks=False)
                except OSError:
                    pass


def folder_bytes(folder: Path) -> int:
    """Bytes under ``folder``, without following links (the disk limit's measure); the
    datasets the server placed there are not the run's writing and do not count."""
    total = 0
    for root, dirs, files in os.walk(folder):
        if Path(root) == folder and SERVER_OWNED in dirs:
            dirs.remove(SERVER_OWNED)
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def which(program: str) -> str | None:
    return shutil.which(program)
