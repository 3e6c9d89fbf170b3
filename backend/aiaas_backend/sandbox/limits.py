"""Watching a launched process against its :class:`~.base.Limits`, and naming the limit a
run hit.

The kernel enforces what it can per process inside the sandbox (processes, private memory,
file size); what only makes sense for the whole run -- memory summed over its processes,
bytes in its folder, wall time -- the executor checks here a few times a second and ends the
run with a message that names the limit and the setting.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import psutil

from .base import Limits, folder_bytes

SETTINGS = {
    "memory": "AIAAS_SANDBOX_MEMORY_MB",
    "processes": "AIAAS_SANDBOX_PROCESSES",
    "disk": "AIAAS_SANDBOX_DISK_MB",
    "wall": "AIAAS_SANDBOX_WALL_S",
}


def message(limit: str, value: str) -> str:
    return f"the run went over its {limit} limit ({value}; the backend's {SETTINGS[limit]} setting)"


def _tree_memory(pid: int) -> int:
    """Proportional set size summed over the process tree: pages a fork shares with its parent
    count once (resident sizes would count them once per process)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.Error, AttributeError):
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
    return total


class Watch:
    """One launched process and its limits; :meth:`check` says which one it broke, if any."""

    def __init__(self, pid: int, folder: Path, limits: Limits, disk_every_s: float = 1.0) -> None:
        self.pid = pid
        self.folder = folder
        self.limits = limits
        self.started = time.monotonic()
        self._disk_every_s = disk_every_s
        self._next_disk = 0.0

    def check(self) -> str | None:
        limits = self.limits
        if limits.wall_s and time.monotonic() - self.started > limits.wall_s:
            return message("wall", f"{limits.wall_s:g} s")
        if limits.memory_mb and _tree_memory(self.pid) > limits.memory_mb * 1024 * 1024:
            return message("memory", f"{limits.memory_mb} MiB")
        now = time.monotonic()
        if limits.disk_mb and now >= self._next_disk:
            self._next_disk = now + self._disk_every_s
            if folder_bytes(self.folder) > limits.disk_mb * 1024 * 1024:
                return message("disk", f"{limits.disk_mb} MiB in its folder")
        return None


def hint(exc: BaseException) -> str | None:
    """Inside a sandbox: which limit an exception from user code most likely hit, in words."""
    limits = Limits.from_env(os.environ.get("AIAAS_SANDBOX_LIMITS"))
    if limits is None:
        return None
    text = str(exc)
    if limits.memory_mb and (isinstance(exc, MemoryError) or "can't allocate memory" in text
                             or "Cannot allocate memory" in text):
        return message("memory", f"{limits.memory_mb} MiB")
    if isinstance(exc, OSError):
        if exc.errno == errno.EAGAIN and limits.processes:
            return message("processes", f"{limits.processes} processes and threads")
        if exc.errno == errno.EFBIG and limits.disk_mb:
            return message("disk", f"{limits.disk_mb} MiB in its folder")
    if "Resource temporarily unavailable" in text and limits.processes:
        return message("processes", f"{limits.processes} processes and threads")
    return _scratch_hint(exc, text)


# A sandbox's private scratch folders: memory-backed, AIAAS_SANDBOX_TMP_MB each (bwrap.py).
SCRATCH = ("/tmp", "/dev/shm")


def _scratch_hint(exc: BaseException, text: str) -> str | None:
    """Which scratch folder a "no space left" most likely filled: the one the error names, /dev/shm
    for a DataLoader worker's shared memory, else whichever is full now; None for another disk."""
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    # torch's words for /dev/shm running out (a DataLoader's workers hand batches back through it);
    # not "shared memory" alone, which a GPU kernel's resources are called too.
    shared = any(words in text for words in ("</torch_", "shared memory (shm)", "shared memory(shm)",
                                             "workers are out of shared memory", "/dev/shm"))
    if not (full or shared or "No space left on device" in text):
        return None
    named = str(getattr(exc, "filename", None) or "")
    if named:
        where = next((d for d in SCRATCH if named == d or named.startswith(d + "/")), None)
    elif shared:
        where = "/dev/shm"
    else:
        where = next((d for d in SCRATCH if _nearly_full(d)), None)
    if where is None:
        return None
    try:
        st = os.statvfs(where)
        size = f"{st.f_blocks * st.f_frsize // (1024 * 1024)} MiB, "
    except OSError:
        size = ""
    return (f"the run filled its private {where} ({size}memory-backed): write large files into the run's folder "
            f"(the working directory), or raise the backend's AIAAS_SANDBOX_TMP_MB setting")


def _nearly_full(folder: str) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_blocks > 0 and st.f_bavail < st.f_blocks * 0.05
