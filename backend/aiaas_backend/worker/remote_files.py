"""A Ray worker's side of its run's stored files: fetch and send them through the API.

A Ray worker keeps its run's working files in a folder of its own node
(``AIAAS_RAY_WORKER_DIR``, default the node's temporary folder) and reaches the
stored ones -- the shipped code, the last checkpoint, the final weights -- only
through the API with its run token (``routes/worker_files.py``). Sends are
retried: the API takes the same bytes twice without harm.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ..artifacts import Artifacts, RunFolder

_BLOCK = 1024 * 1024
_TRIES = 5


def worker_folder(assignment: dict[str, Any]) -> RunFolder:
    """This run's working folder on this node (created if need be)."""
    root = assignment.get("worker_dir") or os.path.join(tempfile.gettempdir(), "aiaas-ray-runs")
    folder = Path(root) / assignment["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    return RunFolder(folder)


def tidy(folder: Artifacts, run_id: str) -> None:
    """Once the run's end reached the API, empty its node folder but for its output log and
    result: what mattered is in the store (code, checkpoints, final files), and the rest
    (Lightning's own ``checkpoints/``, the user's files) nobody can reach on this node."""
    keep = {folder.output_log(run_id).name, *(p.name for p in folder.run_dir(run_id).glob("result-*.json"))}
    for path in folder.run_dir(run_id).iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class RemoteFiles:
    def __init__(self, api_url: str, run_id: str, token: str, *, kind: str = "worker") -> None:
        # kind "replica": a Ray Serve replica's token, which reads the code and weights only.
        self._base = f"{api_url}/v1/{kind}/runs/{run_id}/files"
        self._headers = {"Authorization": f"Bearer {token}"}
        #: bytes sent so far
        self.sent = 0

    @classmethod
    def of(cls, assignment: dict[str, Any]) -> RemoteFiles | None:
        """The API's files for a worker that must go through it (Ray workers); None otherwise."""
        if not assignment.get("files_via_api"):
            return None
        return cls(assignment["api_url"], assignment["run_id"], assignment["token"])

    def _retrying(self, what: str, call: Any) -> Any:
        delay = 0.5
        for n in range(_TRIES):
            try:
                resp = call()
            except httpx.TransportError as exc:
                error: str = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 500:
                    return resp
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if n + 1 < _TRIES:
                time.sleep(delay)
                delay *= 2
        raise RuntimeError(f"could not {what} through the aiaas API after {_TRIES} tries: {error}")

    def fetch(self, name: str, path: Path) -> bool:
        """Write the run's ``name`` to ``path`` (whole or not at all); False if the run has none."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.part")

        def call() -> httpx.Response:
            with httpx.stream("GET", f"{self._base}/{name}", headers=self._headers,
                              timeout=httpx.Timeout(60.0, connect=10.0)) as resp:
                if resp.status_code == 200:
                    with tmp.open("wb") as out:
                        for data in resp.iter_bytes(_BLOCK):
                            out.write(data)
                else:
                    resp.read()
                return resp

        try:
            resp = self._retrying(f"fetch {name}", call)
            if resp.status_code == 404 and resp.json().get("code") == "no_run_file":
                return False
            if resp.status_code != 200:
                raise RuntimeError(f"fetching {name} through the aiaas API failed: HTTP {resp.status_code}: "
                                   f"{resp.text[:300]}")
            tmp.replace(path)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def send(self, name: str, path: Path) -> int:
        """Store the file at ``path`` as the run's ``name``; returns its size."""
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while data := f.read(_BLOCK):
                digest.update(data)
        size = path.stat().st_size

        def body() -> Any:
            with path.open("rb") as f:
                while data := f.read(_BLOCK):
                    yield data

        def call() -> httpx.Response:
            return httpx.put(f"{self._base}/{name}", content=body(),
                             headers={**self._headers, "X-Content-SHA256": digest.hexdigest(),
                                      "Content-Length": str(size)},
                             timeout=httpx.Timeout(300.0, connect=10.0))

        resp = self._retrying(f"send {name}", call)
        if resp.status_code != 200:
            raise RuntimeError(f"sending {name} through the aiaas API failed: HTTP {resp.status_code}: "
                               f"{resp.text[:300]}")
        self.sent += size
        return size
