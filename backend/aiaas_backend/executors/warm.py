"""One worker process started ahead of the next run.

A worker spends seconds importing torch and Lightning before it can train. The
warm worker has already done so and waits for its assignment on stdin, so a run
starts at once. It is kept only while a place is free, so its imports never
compete with training for the CPU.

Sandboxed, a process sees only the folder it was started with: the warm worker
starts on a spare folder; when a run is handed to it, the run's files move into
that folder and it takes the run's folder's name (the sandbox's bind mount
follows the directory). The bind mount exists only once the sandbox is built, a moment
after the process starts: the worker marks its folder (:data:`STARTED`) when it runs inside
it, and the folder is handed over only after that (renamed before, the sandbox could not
find its folder and the run failed).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..artifacts import Artifacts
from ..sandbox import Launcher

log = logging.getLogger("aiaas.executor")

# Starts a worker on a folder, with extra arguments for the worker module.
Spawn = Callable[[Path, list[str]], "subprocess.Popen[bytes] | None"]
# The file a sandboxed warm worker creates in its folder once it runs there (worker/__main__.py).
STARTED = ".worker-started"
# How long a run waits for a warm worker's sandbox to be built (milliseconds unless the machine stalls;
# a worker of an older aiaas never marks its folder, and is then replaced by a fresh one).
_BUILD_TIMEOUT_S = 10.0


class WarmWorker:
    """At most one warm worker; :meth:`take` hands it a run's folder, :meth:`ensure` keeps one."""

    def __init__(self, launcher: Launcher, artifacts: Artifacts, spawn: Spawn, *, enabled: bool) -> None:
        self._launcher = launcher
        self._artifacts = artifacts
        self._spawn = spawn
        self._enabled = enabled
        self._proc: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None  # the spare folder a sandboxed warm worker sees
        self._failures = 0
        self._next_try = 0.0

    def clear_leftovers(self) -> None:
        """Spare folders of warm workers from an earlier server process (those workers are gone)."""
        for spare in (self._artifacts.root / "runs").glob(".warm-*"):
            shutil.rmtree(spare, ignore_errors=True)

    def take(self, folder: Path) -> subprocess.Popen[bytes] | None:
        """The warm worker, now owning ``folder``; None when there is none (start a fresh one)."""
        warm, self._proc = self._proc, None
        spare, self._folder = self._folder, None
        if warm is None or warm.poll() is not None:
            if spare is not None:
                shutil.rmtree(spare, ignore_errors=True)
            return None
        if spare is not None and not (self._built(warm, spare) and self._launcher.give_folder(spare, folder)):
            log.warning("could not give the run's folder %s to the warm worker; starting a fresh one", folder)
            Launcher.kill(warm.pid)
            warm.wait()
            shutil.rmtree(spare, ignore_errors=True)
            return None
        self._failures = 0
        return warm

    def ensure(self, has_room: bool) -> None:
        """Keep one warm worker while a run could start (``has_room``); back off after crashes."""
        if not self._enabled:
            return
        if self._proc is not None:
            if self._proc.poll() is None:
                return
            self._failures += 1
            self._next_try = time.monotonic() + min(60.0, 2.0**self._failures)
            log.warning("the warm worker exited with code %s; see workers.log", self._proc.returncode)
            self._proc = None
            self._drop_folder()
        if has_room and time.monotonic() >= self._next_try:
            if self._launcher.isolates:
                spare = self._artifacts.root / "runs" / f".warm-{secrets.token_hex(6)}"
                spare.mkdir(parents=True)
                self._proc, self._folder = self._spawn(spare, ["--started-file", STARTED]), spare
                if self._proc is None:
                    self._drop_folder()
            else:
                self._proc = self._spawn(self._artifacts.root, [])

    @staticmethod
    def _built(warm: subprocess.Popen[bytes], spare: Path) -> bool:
        """Wait until the warm worker runs inside ``spare`` (its sandbox is built); False if it
        exited or took too long."""
        mark = spare / STARTED
        deadline = time.monotonic() + _BUILD_TIMEOUT_S
        while not mark.exists():
            if warm.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        mark.unlink()
        return True

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            Launcher.kill(self._proc.pid)
            self._proc.wait()
        self._drop_folder()

    def _drop_folder(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
