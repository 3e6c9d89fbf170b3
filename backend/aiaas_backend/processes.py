"""Finding a process the backend started, by the pid and start time it recorded."""

from __future__ import annotations

import psutil


def process_alive(pid: int | None, started: float | None) -> psutil.Process | None:
    """The live process with this pid and start time, or None (gone, a zombie, or a new process on a reused pid)."""
    if pid is None or started is None:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None
