"""The embedded backend of ``aiaas.connect("local")``: its own key, ``aiaas local status|stop``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import aiaas
from aiaas_sdk import config

from ..conftest import wait_until
from .models import Regressor


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "AIAAS_DATA_DIR": str(tmp_path / "data"), "AIAAS_CONFIG": str(tmp_path / "config.toml"),
           **extra}
    env.pop("AIAAS_URL", None)
    return env


def _server_pid(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _processes_of(data_dir: Path) -> list[psutil.Process]:
    """Every live process started for ``data_dir``: its server, workers and replicas."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            text = " ".join(proc.info["cmdline"] or [])
            if "aiaas_backend" in text and (str(data_dir) in text or str(data_dir) in (proc.info["cwd"] or "")):
                found.append(proc)
        except (psutil.Error, ValueError):
            pass
    return found


class Started:
    """Data dirs whose servers a test starts; every one is stopped (by pid) afterwards."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def server(self, env: dict[str, str], data_dir: Path) -> None:
        self.dirs.append(data_dir)
        proc = subprocess.Popen([sys.executable, "-m", "aiaas_backend", "server", "--port", "0", "--data-dir",
                                 str(data_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_until(lambda: _server_pid(data_dir) == proc.pid, timeout=60, what=f"the server of {data_dir}")

    def close(self) -> None:
        for data_dir in self.dirs:
            if (pid := _server_pid(data_dir)) is not None and psutil.pid_exists(pid):
                os.kill(pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=30)
        for data_dir in self.dirs:
            for proc in _processes_of(data_dir):
                proc.kill()


@pytest.fixture
def started() -> Iterator[Started]:
    s = Started()
    yield s
    s.close()


def _aiaas(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiaas_backend", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_connect_local_uses_the_embedded_backends_own_key(tmp_path, started):
    env = _env(tmp_path)
    started.dirs.append(tmp_path / "data")
    # Another backend on this machine claims the (empty) config file, as `aiaas server` always did.
    started.server(env, tmp_path / "other")
    claimed = config.read_config(tmp_path / "config.toml")
    assert claimed["url"].startswith("http://127.0.0.1:") and claimed["api_key"].startswith("aiaas_")

    # A key meant for a remote backend is in the environment too: neither may reach the embedded one.
    script = "import aiaas; c = aiaas.connect('local'); print(c.url, len(c.runs()))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**env, "AIAAS_API_KEY": "aiaas_meant-for-a-remote-backend"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    url, n_runs = out.stdout.strip().splitlines()[-1].split()
    assert url != claimed["url"] and n_runs == "0"
    # Where it was started, the user is told it keeps running and how to see and stop it.
    assert "aiaas local status" in out.stdout and "aiaas local stop" in out.stdout

    # Neither the embedded backend nor a third loopback backend takes the config over.
    started.server(env, tmp_path / "third")
    assert config.read_config(tmp_path / "config.toml") == claimed
    third_key = (tmp_path / "third" / "local.key").read_text().strip()
    assert (tmp_path / "third" / "local.key").stat().st_mode & 0o077 == 0
    third = json.loads((tmp_path / "third" / "server.json").read_text())["url"]
    with aiaas.Client(third, third_key) as client:
        assert client.runs() == []
    with aiaas.Client(claimed["url"], claimed["api_key"]) as client:
        assert client.runs() == []


def test_local_stop_refuses_to_cut_a_run_short_and_a_forced_stop_loses_nothing(tmp_path, monkeypatch, started):
    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIAAS_API_KEY", "aiaas_meant-for-a-remote-backend")
    data_dir = tmp_path / "data"
    started.dirs.append(data_dir)
    client = aiaas.connect("local")
    first_pid = _server_pid(data_dir)
    done = client.train(Regressor(), max_epochs=1, name="done-before").wait(timeout=120)
    # Long enough that it is still training whatever the load; cancelled once it has resumed.
    run = client.train(Regressor(step_sleep=0.1), max_epochs=500, name="interrupted")
    # Past its first epoch it has a checkpoint to resume from.
    wait_until(lambda: any(p.epoch and p.epoch >= 1 for p in run.metrics("train_loss")), timeout=120,
               what="the second epoch")

    status = _aiaas(dict(os.environ), "local", "status")
    assert status.returncode == 0, status.stderr
    assert client.url in status.stdout and "1 running" in status.stdout and "1 succeeded" in status.stdout
    assert "  worker " in status.stdout and "aiaas local stop" in status.stdout

    refused = _aiaas(dict(os.environ), "local", "stop")
    assert refused.returncode == 1 and "interrupted" in refused.stderr and "--force" in refused.stderr
    assert psutil.pid_exists(first_pid)

    forced = _aiaas(dict(os.environ), "local", "stop", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "resumes from its last checkpoint" in forced.stdout
    assert wait_until(lambda: not _processes_of(data_dir), timeout=30, what="every process of the data dir to end")
    assert "no aiaas backend is running" in _aiaas(dict(os.environ), "local", "status").stdout

    # Started again: the finished run is intact and the interrupted one resumes and finishes.
    client.close()
    client = aiaas.connect("local")
    assert _server_pid(data_dir) != first_pid
    assert client.run(done.id).status is aiaas.RunStatus.succeeded
    resumed = client.run(run.id)
    before = max(p.step for p in resumed.metrics("train_loss"))
    wait_until(lambda: max(p.step for p in resumed.metrics("train_loss")) > before + 8, timeout=120,
               what="the resumed run to train on")
    assert resumed.refresh().data.attempt == 2
    # Resumed from its checkpoint, not from the start: step 0 was trained once.
    assert [p.step for p in resumed.metrics("train_loss")].count(0) == 1
    resumed.cancel()
    with pytest.raises(aiaas.RunCancelled):
        resumed.wait(timeout=120)
    client.close()


def test_a_stopped_server_takes_back_its_address(make_backend):
    """After SIGTERM (``aiaas local stop``, systemd) server.json and the workers' socket go, so
    nothing reads a stale address; uvicorn re-raises the signal, so this is not run() returning."""
    backend = make_backend(trains=False)
    info = backend.data_dir / "server.json"
    sockets = list(backend.data_dir.rglob("api.sock"))
    assert info.exists() and sockets
    backend.stop(signal.SIGTERM)
    assert not info.exists()
    assert not any(s.exists() for s in sockets)
