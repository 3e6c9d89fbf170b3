"""What the processes the backend starts by the hundred import before any user code.

Every training worker, serving replica and optimize job is a fresh interpreter, so each
module they import for nothing is paid again at every start (and a test run starts
hundreds). These tests import the entry points in a clean interpreter, one after another
(an interpreter costs seconds of torch and Lightning imports), and name what must stay
out: the SDK's HTTP client stack and the API server's web and database stack.
"""

from __future__ import annotations

import json
import subprocess
import sys

# The SDK's client side and the API server's stack: none is needed to train or to serve.
CLIENT = ("aiaas_sdk._client", "aiaas_sdk._async_client", "aiaas_sdk._connect", "httpx_aiohttp", "aiohttp", "ipywidgets", "IPython")
SERVER = ("fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "typer", "pydantic_settings",
          "prometheus_client", "aiaas_backend.main", "aiaas_backend.db", "aiaas_backend.config")


def loaded_after_each(steps: list[tuple[str, tuple[str, ...]]]) -> list[list[str]]:
    """Runs each statement in turn in one fresh interpreter; after each, which of its
    modules are loaded."""
    code = ["import json, sys", "found = []"]
    for statement, modules in steps:
        code += [statement, f"found.append([m for m in {list(modules)!r} if m in sys.modules])"]
    code.append("print(json.dumps(found))")
    out = subprocess.run([sys.executable, "-c", "\n".join(code)], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_wire_parts_of_the_sdk_load_without_its_client():
    steps = [
        ("import aiaas_sdk.tensor_codec", (*CLIENT, "httpx")),
        ("import aiaas_sdk.packaging", (*CLIENT, "httpx")),
        ("from aiaas_sdk import wire, wire_datasets, wire_monitoring", (*CLIENT, "httpx")),
        ("import aiaas; aiaas.RunStatus, aiaas.RunFailed", (*CLIENT, "httpx")),
        # ...and the client loads on first use of a name that needs it.
        ("aiaas.Client", ("aiaas_sdk._client", "httpx")),
    ]
    assert loaded_after_each(steps) == [[], [], [], [], ["aiaas_sdk._client", "httpx"]]


def test_replicas_optimize_jobs_and_workers_load_neither_the_client_nor_the_server():
    steps = [
        # A replica talks to its router over a Unix socket: not even httpx.
        ("import aiaas_backend.serving.replica", (*CLIENT, *SERVER, "httpx")),
        ("import aiaas_backend.serving.optimize, aiaas_backend.artifacts", (*CLIENT, *SERVER, "httpx")),
        # A worker reports to the API over httpx; nothing more.
        ("import aiaas_backend.worker.train", (*CLIENT, *SERVER)),
    ]
    assert loaded_after_each(steps) == [[], [], []]
