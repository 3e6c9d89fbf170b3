"""Sandboxes for user code: see :mod:`.base` for the contract, docs/security.md for what
they isolate. :func:`make_launcher` picks one from the settings."""

from __future__ import annotations

import logging
from pathlib import Path

from .base import LaunchSpec, Launcher, Limits, SandboxUnavailable
from .limits import Watch

__all__ = ["LaunchSpec", "Launcher", "Limits", "SandboxUnavailable", "Watch", "make_launcher"]

log = logging.getLogger("aiaas.sandbox")

OFF_WARNING = ("AIAAS_SANDBOX=off: user code runs unconfined and can read this backend's database, every "
               "user's runs and the config files of the user it runs as; use it only for development on "
               "your own machine")


def make_launcher(mode: str, python: str, hidden: list[Path], tmp_mb: int = 1024, gpus: bool = False) -> Launcher:
    """``bwrap`` (refuse to start without it), ``auto`` (bwrap, or one warning and none: the
    single-user embedded backend) or ``off``."""
    from .off import OffLauncher

    if mode == "off":
        log.warning(OFF_WARNING)
        return OffLauncher(python)
    from .bwrap import BwrapLauncher

    try:
        launcher: Launcher = BwrapLauncher(python, hidden, tmp_mb, gpus)
    except SandboxUnavailable as exc:
        if mode == "auto":
            log.warning("no sandbox for user code (%s): it runs as your own user, which is fine on your own "
                        "machine; install bubblewrap (apt-get install bubblewrap) to confine it", exc)
            return OffLauncher(python)
        raise SandboxUnavailable(
            f"{exc}. This server runs other people's code, so it needs a sandbox: install bubblewrap "
            "(Debian/Ubuntu: apt-get install bubblewrap), or set AIAAS_SANDBOX=off to run without one "
            "(development only)"
        ) from None
    log.info("user code runs sandboxed: %s", launcher.describe())
    return launcher
