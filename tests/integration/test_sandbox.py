"""User code cannot reach what is not its own: hostile modules run through the real server
with the sandbox on (bubblewrap; CI installs it). See docs/security.md."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

import aiaas

from ..conftest import Backend
from ..conftest import wait_until
from .models import LargeCheckpoint
from .hostile import (DiskFiller, ForkBomb, Marked, MemoryHog, PeekingModel, Prober, SharedMemoryLoader, Sleeper,
                      Steady, TmpFiller)

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed "
                                "(apt-get install bubblewrap; .ci/run installs it)")

ALICE_SECRET = "alice-secret-7f3a9c"
PROBES = {"read_database", "read_other_checkpoint", "list_other_runs", "read_config", "read_ssh_key", "list_home",
          "write_data_dir", "write_root", "walk_up", "signal_server", "signal_other_worker", "connect_postgres",
          "connect_api_tcp", "environment"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home directory with what an attacker wants: an SSH key and the user's aiaas config."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("FAKE-SSH-PRIVATE-KEY\n")
    (home / ".config" / "aiaas").mkdir(parents=True)
    (home / ".config" / "aiaas" / "config.toml").write_text('api_key = "aiaas_fake_user_key"\n')
    return home


def _start(path: Path, home: Path, **env: str) -> Backend:
    return Backend(path, slots=2, env={"HOME": str(home), "SECRET_TOKEN": "server-only", **env}).start()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Iterator[Backend]:
    b = _start(tmp_path_factory.mktemp("sandboxed"), home)
    yield b
    b.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Iterator[Backend]:
    """Low limits; the process limit leaves room for torch's threads on a machine of any size."""
    b = _start(tmp_path_factory.mktemp("limited"), home, AIAAS_SANDBOX_MEMORY_MB="1500",
               AIAAS_SANDBOX_PROCESSES=str(2 * (os.cpu_count() or 1) + 64), AIAAS_SANDBOX_DISK_MB="48")
    yield b
    b.close()


def _failure(client: aiaas.Client, module, **kwargs) -> str:
    run = client.train(module, max_epochs=1, **kwargs)
    with pytest.raises(aiaas.RunFailed):
        run.wait(timeout=240)
    return client.run(run.id).error or ""


def _healthy(backend: Backend) -> None:
    assert backend.proc is not None and backend.proc.poll() is None
    assert httpx.get(backend.url + "/healthz").status_code == 200


def test_hostile_module_sees_nothing_but_its_own_folder(backend, home):
    alice = backend.client(backend.new_key("alice"))
    mallory = backend.client(backend.new_key("mallory"))
    theirs = alice.train(Marked(ALICE_SECRET), max_epochs=1, name="alice").wait(timeout=240)
    steady = alice.train(Steady(), max_epochs=1, name="steady")  # runs beside the hostile one (2 slots)
    wait_until(lambda: steady.metrics("loss"), timeout=120, what="alice's steady run to train")
    data = backend.data_dir
    targets = {
        "database": str(data / "aiaas.db"),
        "other_checkpoint": str(data / "artifacts" / "runs" / theirs.id / "final.ckpt"),
        "runs": str(data / "artifacts" / "runs"),
        "config": str(home / ".config" / "aiaas" / "config.toml"),
        "ssh_key": str(home / ".ssh" / "id_rsa"),
        "home": str(home),
        "data_dir": str(data),
        "server_pid": backend.proc.pid,
        "other_worker_pid": steady.refresh().data.worker_pid,
        "api_port": backend.port,
    }
    assert Path(targets["other_checkpoint"]).exists() and Path(targets["database"]).exists()
    run = mallory.train(Prober(targets), max_epochs=1, name="prober").wait(timeout=240)

    logs = run.logs()
    verdicts = {line.split(":")[0].removeprefix("PROBE "): line for line in logs.splitlines()
                if line.startswith("PROBE ")}
    assert set(verdicts) == PROBES, logs
    leaked = [line for line in verdicts.values() if "LEAKED" in line]
    assert not leaked, leaked
    # Nothing of anyone else's in the run's logs, on the server or on disk.
    on_disk = (data / "artifacts" / "runs" / run.id / "output.log").read_text()
    for text in (logs, on_disk):
        assert ALICE_SECRET not in text and "FAKE-SSH-PRIVATE-KEY" not in text and "aiaas_fake" not in text
        assert "server-only" not in text
    assert not (data / "pwned").exists()
    assert (data / "artifacts" / "runs" / run.id / "mine.txt").read_text() == "ok"  # its own folder works
    # The server and the other user's run are untouched.
    _healthy(backend)
    assert alice.run(theirs.id).status is aiaas.RunStatus.succeeded
    assert ALICE_SECRET in alice.run(theirs.id).logs()
    assert steady.refresh().status is aiaas.RunStatus.running  # still training
    steady.cancel()


def test_a_link_left_in_the_run_folder_is_not_served(backend):
    """A worker could leave final.ckpt as a link to the database; the download refuses it."""
    client = backend.client()
    run = client.train(Marked("linker"), max_epochs=1, name="linker").wait(timeout=240)
    final = backend.data_dir / "artifacts" / "runs" / run.id / "final.ckpt"
    final.unlink()
    final.symlink_to(backend.data_dir / "aiaas.db")
    response = httpx.get(f"{backend.url}/v1/runs/{run.id}/checkpoint",
                         headers={"Authorization": f"Bearer {backend.key}"})
    assert response.status_code == 404 and b"SQLite" not in response.content


def test_replica_cannot_read_the_database(backend):
    client = backend.client()
    database = str(backend.data_dir / "aiaas.db")
    run = client.train(PeekingModel(database), max_epochs=1, name="peeking").wait(timeout=240)
    dep = run.deploy("peeking", replicas=1)
    try:
        y = dep.predict(torch.randn(3, 8))  # the forward's open() failed; it answered normally
        assert tuple(y.shape) == (3, 1)
    finally:
        dep.delete()
    _healthy(backend)


def test_fork_bomb_is_bounded_by_the_process_limit(limited):
    error = _failure(limited.client(), ForkBomb())
    assert "processes limit" in error and "AIAAS_SANDBOX_PROCESSES" in error, error
    _healthy(limited)


def test_allocation_past_the_memory_limit_fails_naming_it(limited):
    error = _failure(limited.client(), MemoryHog(3000))
    assert "memory limit (1500 MiB" in error and "AIAAS_SANDBOX_MEMORY_MB" in error, error
    _healthy(limited)


def test_filling_the_disk_past_the_quota_fails_naming_it(limited):
    client = limited.client()
    error = _failure(client, DiskFiller())
    assert "disk limit (48 MiB" in error and "AIAAS_SANDBOX_DISK_MB" in error, error
    # Other runs carry on.
    assert client.train(Marked("after"), max_epochs=1).wait(timeout=240).status is aiaas.RunStatus.succeeded
    _healthy(limited)


def test_wall_time_limit_ends_the_run_naming_it(tmp_path, home):
    b = _start(tmp_path / "wall", home, AIAAS_SANDBOX_WALL_S="8")
    try:
        error = _failure(b.client(), Sleeper())
        assert "wall limit (8 s" in error and "AIAAS_SANDBOX_WALL_S" in error, error
        _healthy(b)
    finally:
        b.close()


def test_checkpoint_larger_than_the_sandbox_tmp_is_saved_and_filling_tmp_is_named(tmp_path, home):
    # Lightning stages a checkpoint in the temp dir, which in the sandbox is a memory-backed /tmp
    # of AIAAS_SANDBOX_TMP_MB: a larger checkpoint failed the run (ENOSPC) until the worker
    # saved beside the destination (worker/checkpoint_io.py).
    b = _start(tmp_path / "tmp", home, AIAAS_SANDBOX_TMP_MB="8")
    try:
        run = b.client().train(LargeCheckpoint(), max_epochs=1).wait(timeout=240)
        assert run.status is aiaas.RunStatus.succeeded, run.error
        listed = next(line for line in run.logs().splitlines() if line.startswith("CHECKPOINT_FOLDER"))
        assert listed == "CHECKPOINT_FOLDER ['epoch=0-step=2.ckpt']", listed  # whole, and no temporary left
        saved = torch.load(run.download_checkpoint(tmp_path / "last.ckpt"), weights_only=False)
        assert saved["state_dict"]["net.weight"].shape == (2048, 1024)
        assert (tmp_path / "last.ckpt").stat().st_size > 16 * 1024 * 1024  # twice the size of /tmp
        # What does fill the scratch space fails naming it, the way out and the setting.
        for module, where in ((TmpFiller(), "/tmp"), (SharedMemoryLoader(), "/dev/shm")):
            error = _failure(b.client(), module)
            assert f"filled its private {where} (8 MiB, memory-backed)" in error, error
            assert "AIAAS_SANDBOX_TMP_MB" in error and "into the run's folder" in error, error
        _healthy(b)
    finally:
        b.close()


def test_server_refuses_to_start_without_bubblewrap_naming_both_fixes(tmp_path):
    # A PATH without bwrap: the interpreter's own folder only.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "AIAAS_CONFIG": str(tmp_path / "c.toml")}
    env.pop("AIAAS_SANDBOX", None)
    out = subprocess.run([sys.executable, "-m", "aiaas_backend", "server", "--port", "0", "--data-dir",
                          str(tmp_path / "data")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "apt-get install bubblewrap" in out.stderr and "AIAAS_SANDBOX=off" in out.stderr
