"""Getting written files onto the disk: a few by ``fsync`` each, many by one ``syncfs``.

An ``fsync`` costs a journal commit per file (thousands for a folder of small files); Linux's
``syncfs`` flushes the whole file system in one, but also flushes whatever else is waiting on it.
The backend's store and the node cache (a dataset version a run reads) both publish files only
once their bytes are on disk, so that a power cut can lose a file, never leave a short one
under its final name.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Collection
from pathlib import Path

# Up to this many files, each is flushed by an fsync; more, and one syncfs flushes them.
FEW_SYNCS = 16


def fsync_path(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path | str) -> None:
    """Flush the file system that holds ``path`` (Linux's syncfs); elsewhere a sync of every one."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "syncfs"):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def flush_files(paths: Collection[Path], root: Path) -> None:
    """Flush the bytes of ``paths`` (files on the file system of ``root``): an fsync each when
    they are few, else one syncfs of ``root``'s file system. Their names are not flushed."""
    if len(paths) <= FEW_SYNCS:
        for path in paths:
            fsync_path(path)
    elif paths:
        syncfs(root)
