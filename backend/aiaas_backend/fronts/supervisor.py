"""The primary's part in ``--workers N``: the hub for the fronts' predicts and N-1 front processes.

Started once the primary accepts connections and stopped before its own shutdown, so a
front's requests in flight still find the routers. A front that exits (a crash, an out-of-
memory kill) is started again after a pause; it never takes the primary down with it. The
fronts start in sessions of their own (a Ctrl-C in the terminal reaches the primary only,
which stops them) and die with the primary even when it is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from ..config import Settings
from .hub import Hub
from .wire import socket_path

log = logging.getLogger("aiaas.fronts")

RESTART_PAUSE_S = 1.0


class Fronts:
    """N-1 front processes on the primary's port, and the hub that serves them."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        # Proves to the primary that a proxied request came from a front (proxy.FromFront).
        self.secret = secrets.token_urlsafe(32)
        self.folder = settings.data_dir / "fronts"  # the data dir is outside every sandbox
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._hub: Hub | None = None

    async def start(self, state: Any, port: int) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = socket_path(str(self.folder), "predict.sock")
        Path(self.folder / "predict.sock").unlink(missing_ok=True)
        sock.bind(path)
        os.chmod(self.folder / "predict.sock", 0o600)
        self._hub = Hub(state)
        await self._hub.start(sock)
        config = json.dumps({"settings": self.settings.model_dump(mode="json"), "port": port, "secret": self.secret,
                             "fronts_dir": str(self.folder), "parent": os.getpid()}).encode()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep(i, config)) for i in range(1, self.count)]
        log.info("starting %d front process(es) on port %d", self.count - 1, port)

    async def _keep(self, index: int, config: bytes) -> None:
        """Run front ``index``; start it again whenever it exits, until the primary stops."""
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aiaas_backend.fronts.front", stdin=asyncio.subprocess.PIPE,
                start_new_session=True)
            self.processes[index] = process
            assert process.stdin is not None
            process.stdin.write(config)
            process.stdin.close()
            code = await process.wait()
            if self._stopping:
                return
            log.warning("front process %d (pid %d) exited with %s; starting it again", index, process.pid, code)
            await asyncio.sleep(RESTART_PAUSE_S)

    async def stop(self) -> None:
        """Stop the fronts (they finish their requests in flight, through the hub), then the hub."""
        self._stopping = True
        for process in self.processes.values():
            if process.returncode is None:
                process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 8)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._hub is not None:
            await self._hub.stop()
        (self.folder / "predict.sock").unlink(missing_ok=True)


__all__ = ["Fronts"]
