"""aiaas: train PyTorch Lightning modules on a remote backend from a notebook.

    import aiaas
    client = aiaas.connect()          # or aiaas.connect("local")
    run = client.train(MyModule(), datamodule=dm, max_epochs=3)
    run.wait()
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

import aiaas_sdk as _sdk

if TYPE_CHECKING:
    from aiaas_sdk import *  # the public names are the SDK's, listed in aiaas_sdk.__all__

try:
    __version__ = _metadata.version("aiaas")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext aiaas``: registers the ``%aiaas`` magic (``%aiaas?`` for usage) and
    puts ``aiaas`` in the notebook's namespace. Loading twice is harmless."""
    from aiaas_sdk import magics

    magics.load(ipython)
    ipython.push({"aiaas": __import__("aiaas")})  # type: ignore[attr-defined]


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext aiaas``: removes the ``%aiaas`` magic again."""
    from aiaas_sdk import magics

    magics.unload(ipython)


__all__ = [*_sdk.__all__, "__version__", "load_ipython_extension", "unload_ipython_extension"]


if not TYPE_CHECKING:  # type checkers read the import above instead

    def __getattr__(name: str) -> Any:
        # The SDK's names load on first use, as in aiaas_sdk (see its docstring for why).
        if name not in _sdk.__all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_sdk, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
