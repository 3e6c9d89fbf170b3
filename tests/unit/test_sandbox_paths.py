"""What a sandbox shows of the host: the Python environment, exactly; never the data dir."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aiaas_backend.sandbox import Limits, SandboxUnavailable
from aiaas_backend.sandbox.limits import hint
from aiaas_backend.sandbox.pyenv import python_paths


def test_binds_the_prefixes_and_only_packages_of_other_import_paths():
    paths = python_paths(sys.executable, hidden=[])
    assert Path(sys.prefix) in paths and Path(sys.base_prefix) in paths
    import aiaas_backend

    package = Path(aiaas_backend.__file__).parent
    assert any(package == p or package.is_relative_to(p) for p in paths)
    # An editable install's checkout is not shown whole: only its packages.
    checkout = package.parents[1]
    if not any(checkout.is_relative_to(Path(p)) for p in (sys.prefix, sys.base_prefix)):
        assert checkout not in paths and package.parent not in paths


def test_refuses_a_data_dir_inside_the_python_environment():
    with pytest.raises(SandboxUnavailable, match="move .* out of it"):
        python_paths(sys.executable, hidden=[Path(sys.prefix) / "aiaas-data"])


def test_limit_hints_name_the_limit_and_its_setting(monkeypatch):
    monkeypatch.setenv("AIAAS_SANDBOX_LIMITS", Limits(1500, 64, 48, 0).as_env())
    assert "memory limit (1500 MiB" in hint(MemoryError())
    assert "AIAAS_SANDBOX_PROCESSES" in hint(BlockingIOError(11, "Resource temporarily unavailable"))
    assert "disk limit (48 MiB" in hint(OSError(27, "File too large"))
    assert hint(ValueError("boom")) is None
    monkeypatch.delenv("AIAAS_SANDBOX_LIMITS")
    assert hint(MemoryError()) is None


def test_a_warm_process_folder_takes_the_runs_files_and_name(tmp_path):
    """The warm worker's spare folder becomes the run's folder: same directory (a bind mount
    follows it), the run's files inside, the run's name outside."""
    from aiaas_backend.sandbox.off import OffLauncher

    run_dir, spare = tmp_path / "runs" / "r1", tmp_path / "runs" / ".warm-x"
    (run_dir / "resume").mkdir(parents=True)
    (run_dir / "code.bin").write_bytes(b"code")
    (run_dir / "resume" / "last.ckpt").write_bytes(b"ckpt")
    spare.mkdir()
    inode = spare.stat().st_ino
    assert OffLauncher(sys.executable).give_folder(spare, run_dir)
    assert not spare.exists() and run_dir.stat().st_ino == inode
    assert (run_dir / "code.bin").read_bytes() == b"code" and (run_dir / "resume" / "last.ckpt").exists()


def test_a_failed_hand_over_leaves_the_run_folder_as_it_was(tmp_path):
    from aiaas_backend.sandbox.off import OffLauncher

    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    (run_dir / "code.bin").write_bytes(b"code")
    assert not OffLauncher(sys.executable).give_folder(tmp_path / "gone", run_dir)
    assert (run_dir / "code.bin").read_bytes() == b"code"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (.ci/run installs it)")
def test_a_host_path_under_tmp_stays_visible_beside_the_private_tmp(tmp_path):
    """A virtualenv or checkout under /tmp (CI's clone can be there) is bound above the
    sandbox's private /tmp, not hidden by it."""
    from aiaas_backend.sandbox.base import LaunchSpec
    from aiaas_backend.sandbox.bwrap import BwrapLauncher

    assert tmp_path.is_relative_to("/tmp")
    shown = tmp_path / "env"
    shown.mkdir()
    (shown / "marker.json").write_text('{"seen": true}')
    folder = tmp_path / "run"
    folder.mkdir()
    spec = LaunchSpec(owner="r1", module="json.tool", args=[str(shown / "marker.json")], folder=folder,
                      folder_writable=True, read_only=[shown], stdout=subprocess.PIPE)
    proc = BwrapLauncher(sys.executable, hidden=[]).start(spec)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b'"seen": true' in out, out
