"""A throwaway Ray cluster on this machine for tests and benchmarks: `ray start --head --block`.

Its processes are found and stopped through the process tree of the `ray start`
we launched, never by name, so another Ray on the machine is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

# No usage reports, no dashboard: nothing reaches out, and less for 2 cores to run. No token
# authentication either: once any local Ray has written ~/.ray/auth_token, `ray start` turns it
# on while drivers without RAY_AUTH_MODE stay off, and no driver could connect.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    def __init__(self, num_cpus: int = 4) -> None:
        self.num_cpus = num_cpus
        # Short: Ray's Unix socket paths live under it.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="aiaas-ray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._tree: dict[int, psutil.Process] = {}

    def start(self, timeout: float = 180.0) -> RayHead:
        env = {**os.environ, **RAY_ENV}
        self.log = open(self.temp_dir / "head.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
             "--node-ip-address", "127.0.0.1", "--port", str(self.port), "--num-cpus", str(self.num_cpus),
             "--num-gpus", "0", "--object-store-memory", str(300 * 1024**2), "--include-dashboard=false", "--disable-usage-stats",
             "--temp-dir", str(self.temp_dir), "--ray-client-server-port", str(_free_port())],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start failed: {(self.temp_dir / 'head.log').read_text()[-3000:]}")
            if self.resources(timeout=30) is not None:
                return self
            time.sleep(0.5)
        raise TimeoutError("the Ray head did not come up")

    @classmethod
    def start_fresh(cls, num_cpus: int = 4, timeout: float = 180.0, attempts: int = 2) -> RayHead:
        """A started cluster; a fresh one again if one fails to come up, ``attempts`` in all.

        On a loaded 2-core machine the raylet can give up waiting for its own agents, and
        `ray start` for the raylet (fixed ~15 s and 30 s in Ray): that is start-up noise,
        not the product.
        """
        for attempt in range(attempts):
            head = cls(num_cpus=num_cpus)
            try:
                return head.start(timeout)
            except (RuntimeError, TimeoutError):
                head.stop()
                if attempt + 1 == attempts:
                    raise
        raise ValueError("attempts must be at least 1")

    def resources(self, timeout: float = 60.0) -> dict[str, dict[str, float]] | None:
        """``{"total": ..., "available": ...}`` as a fresh driver sees them, or None if unreachable."""
        code = ("import json, logging, ray; ray.init(address=%r, log_to_driver=False, logging_level=logging.ERROR); "
                "print(json.dumps({'total': ray.cluster_resources(), 'available': ray.available_resources()}))"
                % self.address)
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                                 env={**os.environ, **RAY_ENV})
        except subprocess.TimeoutExpired:
            return None
        if out.returncode != 0:
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: the `ray start` and its descendants (workers included)."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self._tree.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass
        return [p for p in self._tree.values() if p.is_running()]

    def _session(self) -> list[psutil.Process]:
        """Processes still in the session `ray start` opened: those of a start that failed
        outlive it (reparented), but keep its session id."""
        found = []
        for p in psutil.process_iter():
            try:
                if self.proc is not None and os.getsid(p.pid) == self.proc.pid:
                    found.append(p)
            except (OSError, psutil.Error):
                pass
        return found

    def stop(self) -> None:
        """Stop every process of the cluster; again is a no-op. A throwaway cluster needs no
        graceful shutdown: `ray start --block` alone takes tens of seconds to wind down."""
        if self.proc is None or self.log.closed:
            return
        procs = list({p.pid: p for p in [*self.processes(), *self._session()]}.values())
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)
        self.proc.wait(timeout=10)  # reaped
        self.log.close()
