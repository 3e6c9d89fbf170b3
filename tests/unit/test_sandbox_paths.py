"""What a sandbox shows of the host: the Python environment, exactly; never the data dir."""

from __future__ import annotations

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
