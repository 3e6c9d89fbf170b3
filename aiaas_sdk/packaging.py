"""The payload format that carries user code from a notebook to a worker.

A payload is ``MAGIC + len(manifest) + manifest JSON + cloudpickle bytes``.
The manifest names the Python, torch, Lightning and cloudpickle versions that
produced the pickle and its SHA-256, so the backend can refuse an
incompatible or damaged payload at submit time *without unpickling it*; only
the worker ever calls :func:`unpack`.

Classes and functions defined in ``__main__`` (a notebook) are pickled by
value by cloudpickle itself; the user's own modules -- any imported from
outside the standard library and site-packages, such as a ``models.py``
beside the notebook -- are registered by value too, so they need not exist on
the backend. Installed packages travel by reference and must be installed
there.
"""

from __future__ import annotations

import hashlib
import json
import linecache
import pickle
import struct
import sys
import sysconfig
import types
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import cloudpickle

from . import _pickler
from ._errors import InvalidInput

MAGIC = b"AIAAS-PAYLOAD/1\n"
_LEN = struct.Struct(">I")
_OUR_PACKAGES = {"aiaas", "aiaas_sdk", "aiaas_backend"}


class PayloadError(ValueError):
    """A payload is damaged, truncated, or not a payload at all."""


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(lightning_package: str = "lightning") -> dict[str, str]:
    """Versions of what decides whether a pickle made here can be loaded elsewhere."""
    py = sys.version_info
    env = {
        "python": f"{py.major}.{py.minor}.{py.micro}",
        "torch": _version("torch") or "missing",
        "cloudpickle": cloudpickle.__version__,
        "lightning_package": lightning_package,
    }
    dist = "pytorch-lightning" if lightning_package == "pytorch_lightning" else "lightning"
    env["lightning"] = _version(dist) or "missing"
    return env


def lightning_package_of(obj: Any) -> str:
    """``"lightning"`` or ``"pytorch_lightning"``: which Trainer the object needs."""
    for klass in type(obj).__mro__:
        top = klass.__module__.split(".")[0]
        if top in ("lightning", "pytorch_lightning"):
            return top
    raise InvalidInput(
        f"{type(obj).__name__} is not a LightningModule: subclass "
        "lightning.pytorch.LightningModule (or pytorch_lightning.LightningModule)."
    )


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def incompatibilities(client: dict[str, str], backend: dict[str, str]) -> list[str]:
    """Human-readable reasons why ``backend`` cannot load a pickle made in ``client``.

    Pickled code objects are tied to the Python minor version; torch, Lightning
    and cloudpickle change their pickled internals between minor releases.
    """
    problems = []
    names = {"python": "Python", "torch": "torch", "cloudpickle": "cloudpickle"}
    pkg = client.get("lightning_package", "lightning")
    names["lightning"] = "pytorch_lightning" if pkg == "pytorch_lightning" else "lightning"
    for key, label in names.items():
        theirs, ours = backend.get(key, "missing"), client.get(key, "missing")
        if theirs == "missing":
            problems.append(f"the backend has no {label} installed but this notebook uses {label} {ours}")
        elif _minor(theirs) != _minor(ours):
            problems.append(f"the backend runs {label} {theirs} but this notebook runs {label} {ours}")
    return problems


def _is_user_module(module: types.ModuleType, library_dirs: list[Path]) -> bool:
    top = module.__name__.split(".")[0]
    if top in _OUR_PACKAGES:
        return False
    # Judge by the top-level package: torch.ops and friends have odd __file__ values.
    for candidate in (sys.modules.get(top), module):
        file = getattr(candidate, "__file__", None)
        if not file or not Path(file).is_absolute():
            return False
        if any(Path(file).resolve().is_relative_to(lib) for lib in library_dirs):
            return False
    return True


def _library_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    dirs = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {Path(p).resolve() for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return sorted(dirs)


@contextmanager
def _user_modules_by_value() -> Iterator[list[str]]:
    library_dirs = _library_dirs()
    names = []
    for name, module in sys.modules.copy().items():  # copy() is atomic; other threads import
        if name != "__main__" and isinstance(module, types.ModuleType) and _is_user_module(module, library_dirs):
            cloudpickle.register_pickle_by_value(module)
            names.append(name)
    try:
        yield names
    finally:
        for name in names:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])


def _user_sources(objects: list[Any], modules: list[str]) -> dict[str, list[str]]:
    """Source lines of the code that defines the shipped classes: notebook cells, and the
    user's modules (shipped by value) the classes come from.

    Shipped so remote tracebacks show the user's code: a notebook cell exists
    only in this kernel's linecache, and a module beside the notebook is not on
    the backend (nor visible to a sandboxed worker). Only the classes' own files:
    every local module the kernel imported would make each payload larger.
    """
    sources: dict[str, list[str]] = {}
    by_value = set(modules)
    for obj in objects:
        if obj is None:
            continue
        for klass in type(obj).__mro__:
            if klass.__module__ in by_value:
                file = getattr(sys.modules.get(klass.__module__), "__file__", None)
                if file and file not in sources and (lines := linecache.getlines(file)):
                    sources[file] = lines
            if klass.__module__ != "__main__":
                continue
            for attr in vars(klass).values():
                code = getattr(getattr(attr, "__func__", attr), "__code__", None)
                if code is None or code.co_filename in sources:
                    continue
                lines = linecache.getlines(code.co_filename)
                if lines:
                    sources[code.co_filename] = lines
    return sources


def pack(payload: dict[str, Any], *, lightning_package: str) -> bytes:
    """Pickle ``payload`` (model, datamodule, ...) with its manifest."""
    payload = dict(payload)
    with _user_modules_by_value() as by_value:
        payload["sources"] = _user_sources([payload.get("model"), payload.get("datamodule")], by_value)
        try:
            body = _pickler.dumps(payload, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidInput(
                f"your model or data cannot be shipped to the backend: {exc}. Keep open files, locks, "
                "threads and connections out of the module's attributes (create them in setup() instead)"
            ) from exc
    manifest = environment(lightning_package)
    manifest.update(
        format="1",
        sha256=hashlib.sha256(body).hexdigest(),
        size=str(len(body)),
        by_value_modules=",".join(sorted(by_value)),
    )
    head = json.dumps(manifest, sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(head)) + head + body


def read_manifest(data: bytes) -> dict[str, str]:
    """Validate a payload's framing and hash and return its manifest; never unpickles."""
    start = len(MAGIC) + _LEN.size
    if len(data) < start and MAGIC.startswith(data[: len(MAGIC)]):
        raise PayloadError("the code payload is truncated (it ends before its manifest)")
    if not data.startswith(MAGIC):
        raise PayloadError("the code payload is not an aiaas payload (bad magic); send it with the aiaas SDK")
    (head_len,) = _LEN.unpack(data[len(MAGIC) : start])
    if len(data) < start + head_len:
        raise PayloadError("the code payload is truncated (it ends inside its manifest)")
    try:
        manifest = json.loads(data[start : start + head_len])
    except ValueError as exc:
        raise PayloadError(f"the code payload's manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or "sha256" not in manifest:
        raise PayloadError("the code payload's manifest has no sha256")
    body = memoryview(data)[start + head_len :]
    if str(len(body)) != str(manifest.get("size")):
        raise PayloadError(
            f"the code payload is truncated or padded: expected {manifest.get('size')} bytes of pickle, got {len(body)}"
        )
    if hashlib.sha256(body).hexdigest() != manifest["sha256"]:
        raise PayloadError("the code payload is damaged: its SHA-256 does not match its manifest")
    return {str(k): str(v) for k, v in manifest.items()}


def unpack(data: bytes) -> dict[str, Any]:
    """Check and unpickle a payload. Only the worker calls this."""
    read_manifest(data)
    (head_len,) = _LEN.unpack(data[len(MAGIC) : len(MAGIC) + _LEN.size])
    start = len(MAGIC) + _LEN.size + head_len
    payload = cloudpickle.loads(data[start:])
    for filename, lines in payload.pop("sources", {}).items():
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return payload
