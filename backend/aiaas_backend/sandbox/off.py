"""No sandbox (``AIAAS_SANDBOX=off``): user code runs as a plain process of the server's user
and can read everything that user can -- the database, other runs, keys. For development on
one's own machine only; the server says so when it starts."""

from __future__ import annotations

import os
import subprocess

from .base import LaunchSpec, Launcher


class OffLauncher(Launcher):
    name = "off"
    isolates = False

    def describe(self) -> str:
        return "off: user code runs unconfined, as this server's user"

    def folder_inside(self, spec: LaunchSpec) -> str:
        return str(spec.folder)

    def shared_inside(self, spec: LaunchSpec, name: str) -> str:
        return str({**spec.shared_ro, **spec.shared_rw}[name])

    def start(self, spec: LaunchSpec) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        return subprocess.Popen(
            [self.python, "-m", spec.module, *spec.args], stdin=spec.stdin, stdout=spec.stdout,
            stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=spec.folder,
        )
