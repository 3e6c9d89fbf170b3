"""A run handed to the warm worker the moment it started still gets its sandbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aiaas_backend.artifacts import Artifacts
from aiaas_backend.executors.warm import WarmWorker
from aiaas_backend.sandbox import LaunchSpec
from aiaas_backend.sandbox.bwrap import BwrapLauncher


def test_a_run_taken_while_the_warm_sandbox_is_being_built_gets_its_folder(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "artifacts")
    launcher = BwrapLauncher(sys.executable, hidden=[])
    log = (tmp_path / "workers.log").open("wb")

    def spawn(folder: Path, args: list[str]) -> subprocess.Popen[bytes] | None:
        return launcher.start(LaunchSpec(owner=folder.name, module="aiaas_backend.worker", args=args, folder=folder,
                                         folder_writable=True, stdin=subprocess.PIPE, stdout=log))

    warm = WarmWorker(launcher, artifacts, spawn, enabled=True)
    run_dir = artifacts.run_dir("r1")
    (run_dir / "code.bin").write_bytes(b"the run's code")
    warm.ensure(has_room=True)
    proc = warm.take(run_dir)  # at once: bubblewrap is still building the sandbox
    assert proc is not None
    assert proc.stdin is not None
    proc.stdin.close()  # no assignment: once its imports are done the worker exits with 0
    code = proc.wait(timeout=120)
    log.close()
    # Renamed too early, the folder was gone when bubblewrap bound it: "Can't get type of source".
    assert code == 0, (tmp_path / "workers.log").read_text()
    assert (run_dir / "code.bin").read_bytes() == b"the run's code"
    assert not list((artifacts.root / "runs").glob(".warm-*"))
