"""A run's files in the artifact store: what Ray workers send and fetch through the API.

A Ray worker may run on a node that does not see the API's data dir. It reaches
its run's files only through the API, with its run token
(``routes/worker_files.py``): it fetches the shipped code and the last resumable
checkpoint, and sends checkpoints and final weights. The API keeps each one in
the store under ``runs/<run id>/<name>`` (durable, on S3 when the store is there)
and places the same file in the run's folder on its own machine, where
everything that runs beside the API -- the checkpoint download, local serving,
the executor's "resume from" check -- already reads it. On the default store
both are one file (a hard link), so nothing is stored twice.

Local workers write the run's folder directly (they run on the API's machine); once one has
ended with success, the executor puts the run's final files into the store the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from .artifacts import FINAL_FILES, Artifacts, open_regular
from .store import Store

CODE = "code.bin"
LAST_CHECKPOINT = "resume/last.ckpt"
# What a worker may fetch, and what it may send (never its code: that is the user's submission).
READABLE = frozenset({CODE, LAST_CHECKPOINT})
# What a Ray Serve replica may fetch.
SERVED = frozenset({CODE, FINAL_FILES["weights"]})
WRITABLE = frozenset({LAST_CHECKPOINT, *FINAL_FILES.values()})


def store_key(run_id: str, name: str) -> str:
    return f"runs/{run_id}/{name}"


class RunFiles:
    def __init__(self, store: Store, artifacts: Artifacts) -> None:
        self.store = store
        self.artifacts = artifacts

    def local(self, run_id: str, name: str) -> Path:
        """Where ``name`` lives in the run's folder on this machine (it may not exist)."""
        return self.artifacts.run_dir(run_id) / name

    def spool(self, run_id: str, name: str) -> Path:
        """A fresh temporary file beside ``name``'s place, for an upload to arrive in."""
        path = self.local(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.{os.urandom(8).hex()}.upload")

    def accept(self, run_id: str, name: str, spooled: Path) -> int:
        """Keep an upload that arrived whole in ``spooled``: into the store first (a file is in
        the run's folder only once it is durable), then into its place in the folder."""
        size = self.store.put_file(store_key(run_id, name), spooled)
        os.replace(spooled, self.local(run_id, name))
        return size

    def keep(self, run_id: str) -> list[str]:
        """Put a local run's final files into the store, as a Ray run's arrive there, once its
        worker is gone: the store is then the durable copy, and a data dir that lost the folder
        gets them back through :meth:`find`. On the default store a hard link (nothing copied)."""
        kept = []
        for name in FINAL_FILES.values():
            path = self.local(run_id, name)
            try:
                # The worker wrote the folder: a link it left (to the database, say) is never
                # followed. It has exited, so nothing can swap the file after this check.
                os.close(open_regular(path))
            except OSError:
                continue
            self.store.put_file(store_key(run_id, name), path)
            kept.append(name)
        return kept

    def find(self, run_id: str, name: str) -> Path | None:
        """The run's ``name`` on this machine, brought back from the store if the folder lost
        it (a data dir moved or cleaned); None if there is none. The code is in the folder only."""
        path = self.local(run_id, name)
        if path.is_file():
            return path
        if name == CODE:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.store.get_file(store_key(run_id, name), path)
        except KeyError:
            return None
        return path


class ReplicaTokens:
    """Tokens with which Ray Serve replicas, on any node, fetch one run's code and weights.

    A replica's token is an HMAC of its run's id under a key kept in the data dir, so it
    needs no row and stays valid across server restarts (Serve applications outlive the
    server, and a replica Serve replaces later fetches again). It reads that run's code and
    weights and nothing else.
    """

    PREFIX = "aiaasr_"

    def __init__(self, key_file: Path) -> None:
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            self._key = key_file.read_bytes()
        else:
            self._key = os.urandom(32)
            with os.fdopen(fd, "wb") as f:
                f.write(self._key)

    def token(self, run_id: str) -> str:
        return self.PREFIX + hmac.new(self._key, run_id.encode(), hashlib.sha256).hexdigest()

    def valid(self, run_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(run_id), token)
