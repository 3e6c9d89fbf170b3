"""The environment the workers run in, as the payload manifest describes one."""

from __future__ import annotations

import json
import subprocess
import sys

from aiaas_sdk import packaging

_PACKAGES = ("lightning", "pytorch_lightning")
_PROBE = (
    "import json; from aiaas_sdk import packaging; "
    f"print(json.dumps({{p: packaging.environment(p) for p in {_PACKAGES!r}}}))"
)


def probe(worker_python: str) -> dict[str, dict[str, str]]:
    """Versions per Lightning package, asked of the worker's interpreter (no torch import)."""
    if worker_python == sys.executable:
        return {p: packaging.environment(p) for p in _PACKAGES}
    out = subprocess.run([worker_python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)
