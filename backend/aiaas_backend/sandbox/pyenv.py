"""Which host paths the worker's Python needs to see, read-only, inside a sandbox.

Exactly these, no more: the interpreter's prefixes (``sys.prefix`` and ``sys.base_prefix``:
a virtualenv and the Python it was made from), and for every import path outside them --
an editable install adds its checkout's folders -- only the packages and modules in it,
not the folder itself: a checkout (or the home directory it lives in) holds other things,
perhaps even the data dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .base import SandboxUnavailable

_PROBE = (
    "import json, sys; print(json.dumps({'prefixes': sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, "
    "sys.base_exec_prefix}), 'path': sys.path[1:], 'executable': sys.executable}))"
)


def probe(python: str) -> dict[str, object]:
    if python == sys.executable:
        return {"prefixes": sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}),
                "path": sys.path[1:], "executable": sys.executable}
    out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _importable(entry: Path) -> list[Path]:
    """The packages and modules an import path folder offers (what ``import`` can reach)."""
    found = []
    for child in sorted(entry.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and (child / "__init__.py").exists():
            found.append(child)
        elif child.is_file() and child.suffix in (".py", ".so", ".pyd", ".pth"):
            found.append(child)
    return found


def python_paths(python: str, hidden: list[Path]) -> list[Path]:
    """Host paths to bind read-only for ``python``; none may contain a path in ``hidden``
    (the data dir, the config folder): that is refused with the fix named."""
    info = probe(python)
    prefixes = [Path(p) for p in info["prefixes"]]  # type: ignore[union-attr]
    binds: list[Path] = []
    for prefix in prefixes:
        binds.append(prefix)
        real = Path(os.path.realpath(prefix))
        if real != prefix:
            binds.append(real)
    for raw in info["path"]:  # type: ignore[union-attr]
        if not raw:
            continue
        entry = Path(raw)
        if not entry.exists() or any(_within(entry, b) or _within(Path(os.path.realpath(entry)), b) for b in binds):
            continue
        binds.extend([entry] if entry.is_file() else _importable(entry))
    executable = Path(os.path.realpath(str(info["executable"])))
    if not any(_within(executable, b) for b in binds):
        binds.append(executable)
    for path in binds:
        for secret in hidden:
            if _within(secret, path):
                raise SandboxUnavailable(
                    f"{secret} is inside {path}, which the sandbox shows to user code (the worker's Python "
                    f"needs it): move {secret} out of it (AIAAS_DATA_DIR, AIAAS_CONFIG), or run the worker "
                    "with another Python (AIAAS_WORKER_PYTHON)"
                )
    return binds
