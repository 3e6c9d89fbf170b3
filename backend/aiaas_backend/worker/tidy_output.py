"""What a run's log shows: the user's output and the library messages that matter.

The log tail in the dashboard is a few lines; left alone, Lightning and friends fill
it with advertising tips, a model-summary table cut mid-box, and warnings that name
files deep inside the backend's site-packages, repeated. Here:

- each warning is shown once, as ``Category: message``; a warning raised from the
  user's own code keeps its file and line (that is where they can fix it), one from
  an installed library does not (the backend's paths mean nothing to the user);
- Lightning's "Tip:" lines, which advertise other products, are dropped;
- the summary table is replaced by one line (see :func:`summary_line`); a user who
  asks for ``enable_model_summary=True`` gets Lightning's table in the Logs view.
"""

from __future__ import annotations

import logging
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Any, TextIO

_LIBRARY_DIRS = tuple(
    {str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("stdlib", "purelib", "platlib")}
    | {str(Path(p).resolve()) for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    | {str(Path(__file__).resolve().parents[1])}
)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric", "")


def _from_a_library(filename: str) -> bool:
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True
    return path.startswith(_LIBRARY_DIRS) or filename.startswith("<")


class _OnceWarnings:
    def __init__(self) -> None:
        self._seen: set[tuple[type[Warning], str]] = set()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        text = str(message).strip()
        if (category, text) in self._seen:
            return
        self._seen.add((category, text))
        where = "" if _from_a_library(filename) else f' (File "{filename}", line {lineno})'
        (file or sys.stderr).write(f"{category.__name__}: {text}{where}\n")


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith("💡 Tip")


def install() -> None:
    """Tidy this worker process's warnings and Lightning's log messages (call once, early)."""
    warnings.showwarning = _OnceWarnings()
    no_tips = _NoTips()
    for name in _LIGHTNING_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(no_tips)
        logging.getLogger(name).addFilter(no_tips)


def summary_line(module: Any) -> str:
    """``Digits: 4.7 K parameters (4.7 K trainable, 19 KB)``: the model summary in one line."""
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in params)
    return f"{type(module).__name__}: {_count(total)} parameters ({_count(trainable)} trainable, {_bytes(size)})"


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
