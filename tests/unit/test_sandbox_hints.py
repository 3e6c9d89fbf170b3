"""Which sandbox scratch folder a "no space left" filled (aiaas_backend.sandbox.limits.hint)."""

from __future__ import annotations

import errno

import pytest

from aiaas_backend.sandbox.limits import hint


@pytest.fixture
def sandboxed(monkeypatch):
    monkeypatch.setenv("AIAAS_SANDBOX_LIMITS", "0,0,0,0")  # what a sandboxed process is given


def test_outside_a_sandbox_nothing_is_guessed(monkeypatch):
    monkeypatch.delenv("AIAAS_SANDBOX_LIMITS", raising=False)
    assert hint(OSError(errno.ENOSPC, "No space left on device", "/tmp/x")) is None


@pytest.mark.parametrize("exc, where", [
    (OSError(errno.ENOSPC, "No space left on device", "/tmp/scratch.bin"), "/tmp"),
    (OSError(errno.ENOSPC, "No space left on device", "/dev/shm/x"), "/dev/shm"),
    (RuntimeError("unable to write to file </torch_12_345_0>: No space left on device (28)"), "/dev/shm"),
    (RuntimeError("DataLoader worker (pid 12) is killed by signal: Bus error. It is possible that dataloader's "
                  "workers are out of shared memory. Please try to raise your shared memory limit."), "/dev/shm"),
    (RuntimeError("unable to allocate shared memory(shm) for file </torch_1_2_3>: Success (0)"), "/dev/shm"),
])
def test_a_full_scratch_folder_is_named_with_the_way_out(sandboxed, exc, where):
    said = hint(exc)
    assert said is not None and said.startswith(f"the run filled its private {where} ("), said
    assert "into the run's folder" in said and "AIAAS_SANDBOX_TMP_MB" in said


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device", "/aiaas/run/big.bin"),  # the host's disk, not scratch
    RuntimeError("out of resource: shared memory, Required: 98304, Hardware limit: 65536"),  # a GPU kernel's
    ValueError("bad shape"),
])
def test_other_errors_are_not_blamed_on_scratch(sandboxed, exc):
    assert hint(exc) is None
