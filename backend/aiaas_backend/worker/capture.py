"""Captures the worker's stdout and stderr at the file-descriptor level.

fd-level, not ``sys.stdout``: Lightning's logging handlers, C extensions and
subprocesses all write to fds 1 and 2 directly.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

_MAX_LINE = 10_000


class OutputCapture:
    def __init__(self, path: Path, on_line: Callable[[str], None]) -> None:
        self._path = path
        self._on_line = on_line
        self._saved: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, args=(read_fd,), name="aiaas-output", daemon=True)
        self._thread.start()

    def _pump(self, read_fd: int) -> None:
        buffer = b""
        with open(self._path, "ab") as out, os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                out.write(chunk)
                out.flush()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._on_line(line.decode(errors="replace").rstrip("\r")[:_MAX_LINE])
            if buffer:
                self._on_line(buffer.decode(errors="replace")[:_MAX_LINE])

    def stop(self) -> None:
        if self._saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        # Restoring fds 1 and 2 closes the pipe's last write ends: the pump sees EOF.
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=10)
