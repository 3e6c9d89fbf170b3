"""aiaas: train PyTorch Lightning modules on a remote backend from a notebook.

    import aiaas
    client = aiaas.connect()          # or aiaas.connect("local")
    run = client.train(MyModule(), datamodule=dm, max_epochs=3)
    run.wait()
"""

from importlib import metadata as _metadata

from aiaas_sdk import *  # noqa: F403 - the public names are the SDK's, listed in aiaas_sdk.__all__
from aiaas_sdk import __all__ as _sdk_names

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


__all__ = [*_sdk_names, "__version__", "load_ipython_extension", "unload_ipython_extension"]
