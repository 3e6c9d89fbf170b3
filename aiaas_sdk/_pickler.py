"""cloudpickle, keeping the file name of every function it ships by value.

cloudpickle 3.1.2 and newer write ``"<dynamic-code>"`` as the file name of each
code object it pickles (it makes pickles byte-for-byte reproducible). A worker
would then report a user's exception as ``File "<dynamic-code>", line 40``, and
the shipped source lines could not be matched to the code. We put the real
name back; the payload's hash is taken after pickling, so nothing relies on
the bytes being reproducible.
"""

from __future__ import annotations

import io
import types
from collections import ChainMap
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _impl

_PLACEHOLDER = "<dynamic-code>"
_code_reduce = getattr(_impl, "_code_reduce", None)


def _code_keeping_filename(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    make, args = _code_reduce(code)  # type: ignore[misc]
    if code.co_filename == _PLACEHOLDER or _PLACEHOLDER not in args:
        return make, args
    at = args.index(_PLACEHOLDER)
    return make, (*args[:at], code.co_filename, *args[at + 1:])


class _Pickler(cloudpickle.Pickler):
    if _code_reduce is not None:  # a cloudpickle without it keeps file names by itself
        dispatch_table = ChainMap({types.CodeType: _code_keeping_filename}, cloudpickle.Pickler.dispatch_table)


def dumps(obj: Any, protocol: int = 5) -> bytes:
    """Like :func:`cloudpickle.dumps`, with the functions' file names kept."""
    with io.BytesIO() as file:
        _Pickler(file, protocol=protocol).dump(obj)
        return file.getvalue()
