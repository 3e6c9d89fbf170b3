"""The hostile set against serving replicas: a model whose load path and forward try the
doors of tests/integration/hostile.py, deployed through the real server with the sandbox on.
Each door holds, the replica answers (or fails to load with a message), and the server and
another user's deployment carry on. Replicas decode only tensor frames (no user
``decode_request``), so user code runs in exactly two places: loading and forward."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch

import aiaas

from ..conftest import Backend
from .hostile import SERVED_PROBES, LoadEscaper, Marked, ServedProber

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed "
                                "(apt-get install bubblewrap; .ci/run installs it)")

ALICE_SECRET = "alice-served-secret-51c2"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("FAKE-SSH-PRIVATE-KEY\n")
    (home / ".config" / "aiaas").mkdir(parents=True)
    (home / ".config" / "aiaas" / "config.toml").write_text('api_key = "aiaas_fake_user_key"\n')
    return home


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Iterator[Backend]:
    b = Backend(tmp_path_factory.mktemp("served"), slots=1,
                env={"HOME": str(home), "SECRET_TOKEN": "server-only"}).start()
    yield b
    b.close()


@pytest.fixture(scope="module")
def honest(backend: Backend):  # type: ignore[no-untyped-def]
    """Alice's deployment, serving beside the hostile ones."""
    alice = backend.client(backend.new_key("alice"))
    run = alice.train(Marked(ALICE_SECRET), max_epochs=1, name="alice").wait(timeout=300)
    dep = run.deploy("honest", replicas=1)
    dep.wait_ready(timeout=300)
    return run, dep


def _replica_pid(run_id: str) -> int:
    for proc in psutil.process_iter(["cmdline"]):
        command = proc.info["cmdline"] or []
        if "aiaas_backend.serving.replica" in command and run_id in command and not command[0].endswith("bwrap"):
            return proc.pid
    raise LookupError(f"no replica process for {run_id}")


def _healthy(backend: Backend, honest) -> None:  # type: ignore[no-untyped-def]
    assert backend.proc is not None and backend.proc.poll() is None
    x = torch.ones(2, 8)
    run, dep = honest
    assert tuple(dep.predict(x).shape) == (2, 1)
    assert dep.refresh().data.status == "ready"


def test_hostile_replica_is_confined_at_load_and_in_forward(backend, home, honest):
    mallory = backend.client(backend.new_key("mallory"))
    alice_run, alice_dep = honest
    other_replica = _replica_pid(alice_run.id)
    data = backend.data_dir
    targets = {
        "database": str(data / "aiaas.db"),
        "other_checkpoint": str(data / "artifacts" / "runs" / alice_run.id / "final.ckpt"),
        "runs": str(data / "artifacts" / "runs"),
        "config": str(home / ".config" / "aiaas" / "config.toml"),
        "ssh_key": str(home / ".ssh" / "id_rsa"),
        "home": str(home),
        "data_dir": str(data),
        "server_pid": backend.proc.pid,
        "other_replica_pid": other_replica,
        "api_port": backend.port,
    }
    assert Path(targets["other_checkpoint"]).exists()
    run = mallory.train(ServedProber(targets), max_epochs=1, name="served-prober").wait(timeout=300)
    dep = run.deploy("prober", replicas=1)
    try:
        dep.wait_ready(timeout=300)
        held = dep.predict(torch.randn(3, 8))
        verdicts = dict(zip(SERVED_PROBES, held[0].tolist(), strict=True))
        assert tuple(held.shape) == (3, len(SERVED_PROBES))
        assert all(v == 1.0 for v in verdicts.values()), {k: v for k, v in verdicts.items() if v != 1.0}
        # At load too: every door named, none leaked (the replica's output is in replicas.log).
        log = (data / "replicas.log").read_text(errors="replace")
        at_load = log[log.index("PROBES at load"):]
        named = {line.split(":")[0].removeprefix("PROBE ") for line in at_load.splitlines() if line.startswith("PROBE ")}
        assert named == set(SERVED_PROBES), at_load[:3000]
        assert "LEAKED" not in log, [line for line in log.splitlines() if "LEAKED" in line]
        for secret in (ALICE_SECRET, "FAKE-SSH-PRIVATE-KEY", "aiaas_fake", "server-only"):
            assert secret not in log
    finally:
        dep.delete()
    assert not (data / "pwned").exists()
    assert not (data / "artifacts" / "runs" / run.id / "pwned").exists()
    assert psutil.pid_exists(other_replica) and _replica_pid(alice_run.id) == other_replica
    _healthy(backend, honest)


def test_a_model_that_needs_an_escape_to_load_fails_with_a_message(backend, honest):
    mallory = backend.client(backend.new_key("mallory2"))
    run = mallory.train(LoadEscaper(str(backend.data_dir / "aiaas.db")), max_epochs=1, name="escaper").wait(
        timeout=300)
    with pytest.raises(aiaas.AiaasError, match="failed to start") as failed:
        run.deploy("escaper", replicas=1)
    assert "replica exited with code" in str(failed.value) and run.id in str(failed.value), failed.value
    dep = mallory.deployment("escaper")
    try:
        assert dep.data.status == "failed" and "exited with code" in (dep.data.error or "")
        with pytest.raises(aiaas.AiaasError):
            dep.predict(torch.ones(1, 8))
    finally:
        dep.delete()
    log = (backend.data_dir / "replicas.log").read_text(errors="replace")
    assert "No such file or directory" in log or "Permission denied" in log
    _healthy(backend, honest)
