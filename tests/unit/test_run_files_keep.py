"""RunFiles.keep: a local run's final files into the store, never what a link points at."""

from __future__ import annotations

import os

from aiaas_backend.artifacts import Artifacts
from aiaas_backend.run_files import RunFiles
from aiaas_backend.store import FileStore


def test_keep_stores_regular_files_and_refuses_links_and_fifos(tmp_path):
    files = RunFiles(FileStore(tmp_path / "store"), Artifacts(tmp_path / "artifacts"))
    good = files.local("good", "weights.pt")
    good.parent.mkdir(parents=True, exist_ok=True)
    good.write_bytes(b"weights")
    assert files.keep("good") == ["weights.pt"]
    with files.store.open("runs/good/weights.pt") as stored:
        assert stored.read() == b"weights"
    assert os.stat(files.store.local_path("runs/good/weights.pt")).st_ino == good.stat().st_ino  # linked, not copied

    secret = tmp_path / "server.db"
    secret.write_bytes(b"the server's database")
    bad = files.local("bad", "weights.pt")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.symlink_to(secret)  # what a hostile run could leave in its folder
    os.mkfifo(files.local("bad", "final.ckpt"))  # would block a reader
    assert files.keep("bad") == []
    assert not files.store.exists("runs/bad/weights.pt") and not files.store.exists("runs/bad/final.ckpt")
