"""A run's dataset versions, placed in its own folder before its local worker starts.

The executor, not the worker, fills the node cache here: a sandboxed worker sees
neither the cache nor the store, and it cannot be given new mounts after it started
(the warm worker starts before its run is known). The versions appear in the run's
folder as ``datasets/<name>``, read-only and owned by the server:

- hard links into the cache when the server runs as root (each sandbox runs as a uid
  of its own, which can neither change nor chmod those files) or without a sandbox:
  placing a version costs one link per file, whatever its size;
- copies when an unprivileged server sandboxes: its sandboxes share the server's uid,
  and a link would let a run chmod and change the cache that other runs read.

The Ray executor does not use this: its workers run on other nodes and fetch their
versions through the API with the run's token (``worker/datasets.py``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session

from aiaas_sdk._node_cache import NodeCache
from aiaas_sdk.wire_datasets import DatasetManifest

from .. import chunk_packs
from ..config import Settings
from ..datasets import chunk_digests, run_versions
from ..models import Run
from ..sandbox.base import SERVER_OWNED
from ..store import Store


def _link_tree(source: Path, target: Path, copy: bool) -> None:
    for root, dirs, files in os.walk(source):
        here = target / Path(root).relative_to(source)
        here.mkdir(exist_ok=True)
        for name in files:
            src, dst = os.path.join(root, name), here / name
            if copy:
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o444)
                continue
            try:
                os.link(src, dst)
            except OSError:  # another file system (AIAAS_DATASET_CACHE_DIR elsewhere)
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o444)
    for root, dirs, _files in os.walk(target):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
    os.chmod(target, 0o555)


class RunData:
    """Puts runs' dataset versions in their folders (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store, *, copy: bool) -> None:
        self._settings = settings
        self._store = store
        self._copy = copy

    def release(self, run_dir: Path) -> None:
        """Take a finished run's datasets out of its folder (the run's own files stay)."""
        folder = run_dir / SERVER_OWNED
        if not folder.exists():
            return
        for root, dirs, _files in os.walk(folder):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        os.chmod(folder, 0o755)
        shutil.rmtree(folder, ignore_errors=True)

    def place(self, session: Session, run: Run, run_dir: Path) -> dict[str, Path]:
        """Build the run's versions in the node cache and place them under ``run_dir``;
        returns ``{"pets": folder, "pets:2": folder}`` (empty when the run names none)."""
        versions = run_versions(session, run)
        folder = run_dir / SERVER_OWNED
        self.release(run_dir)  # a requeued run: placed again, from the same versions
        if not versions:
            return {}
        folder.mkdir(parents=True)
        cache = NodeCache(self._settings.cache_dir, self._settings.dataset_cache_bytes)
        # Where the packed chunks are, in one query at the first fetch (a cached version fetches
        # nothing and parses no manifest). The node cache fetches from its threads while this
        # one waits for them, so the session is not used by two threads at once.
        packed: dict[str, chunk_packs.Location] | None = None
        lock = threading.Lock()

        def fetch(digest: str) -> Iterator[bytes]:
            nonlocal packed
            with lock:
                if packed is None:
                    packed = chunk_packs.locations(
                        session, set().union(*(chunk_digests(v.manifest) for _d, v in versions)))
            return chunk_packs.read(self._store, digest, packed.get(digest), lambda: relocate(digest))

        def relocate(digest: str) -> chunk_packs.Location | None:
            # A compaction moved it since the lookup above (minutes ago, for a large dataset).
            with lock:
                return chunk_packs.locations(session, [digest]).get(digest)

        placed: dict[str, Path] = {}
        try:
            for dataset, version in versions:
                source = cache.version(version.digest,
                                       lambda v=version: DatasetManifest.model_validate(v.manifest), fetch)
                target = folder / dataset.name
                _link_tree(source, target, self._copy)
                placed[dataset.name] = placed[f"{dataset.name}:{version.version}"] = target
            cache.evict(only_if_grew=True)
        finally:
            cache.close()  # the run holds links or copies: eviction cannot take its files away
        os.chmod(folder, 0o555)
        return placed
