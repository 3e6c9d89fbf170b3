"""Before a run starts: its datasets, materialised in the node cache, for ``aiaas.data_path``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from aiaas_sdk._node_cache import NodeCache
from aiaas_sdk.wire_datasets import WorkerDatasets

# What aiaas.data_path reads: {"pets": "/cache/versions/...", "pets:2": "..."}.
ENV = "AIAAS_DATASETS"
# Caches stay referenced for the process's life: they hold the read locks that keep
# this run's versions from being evicted under it.
_OPEN: list[NodeCache] = []


def materialise(assignment: dict[str, Any]) -> dict[str, str]:
    """Put the run's dataset versions in this node's cache and tell ``aiaas.data_path`` where.

    The local executor places them in the run's folder itself (a sandboxed worker sees no
    cache) and lists them in the assignment; a Ray worker fetches them through the API."""
    if "datasets" in assignment:
        placed: dict[str, str] = assignment["datasets"]
        os.environ[ENV] = json.dumps(placed)
        for name, path in placed.items():
            if ":" in name:
                print(f"aiaas: dataset {name} ready at {path}", flush=True)
        return placed
    run_id = assignment["run_id"]
    headers = {"Authorization": f"Bearer {assignment['token']}"}
    with httpx.Client(base_url=assignment["api_url"], headers=headers, timeout=httpx.Timeout(60.0, connect=10.0),
                      limits=httpx.Limits(max_connections=16)) as http:
        resp = http.get(f"/v1/worker/runs/{run_id}/datasets")
        resp.raise_for_status()
        info = WorkerDatasets.model_validate_json(resp.content)
        if not info.datasets:
            return {}
        cache = NodeCache(Path(info.cache_dir), info.cache_bytes)
        _OPEN.append(cache)

        def fetch(digest: str) -> Iterator[bytes]:
            with http.stream("GET", f"/v1/worker/runs/{run_id}/chunks/{digest}") as chunk:
                chunk.raise_for_status()
                yield from chunk.iter_bytes(1024 * 1024)

        paths: dict[str, str] = {}
        for d in info.datasets:
            started = time.perf_counter()
            path = str(cache.version(d.digest, d.manifest, fetch))
            paths[d.name] = paths[f"{d.name}:{d.version}"] = path
            print(f"aiaas: dataset {d.name}:{d.version} ({len(d.manifest.files)} files) ready in "
                  f"{time.perf_counter() - started:.3f} s at {path}", flush=True)
        cache.evict(only_if_grew=True)
    os.environ[ENV] = json.dumps(paths)
    return paths
