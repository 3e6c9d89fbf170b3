"""Tensors on the wire: a compact binary frame, and JSON for curl users.

Binary (``application/x-aiaas-tensor``)::

    b"AIAT" | uint32 big-endian header length | JSON header {"dtype", "shape"} | C-order bytes

The SDK sends arrays as binary automatically; ``{"inputs": [[...], ...]}`` JSON
works too and is answered in kind. Neither side ever unpickles anything.
"""

from __future__ import annotations

import json
import struct
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from ._errors import InvalidInput

CONTENT_TYPE = "application/x-aiaas-tensor"
MAGIC = b"AIAT"
_LEN = struct.Struct(">I")
# What may cross the wire: numbers and booleans, nothing that needs pickling.
DTYPES = {"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"}

Kind = Literal["torch", "numpy", "list"]


class CodecError(InvalidInput):
    """A body that is not a valid tensor frame or JSON tensor (in the SDK: inputs that are
    not numbers). The backend answers it with a 400; the SDK raises it before sending."""


def encode(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    return MAGIC + _header(str(array.dtype), array.shape) + array.tobytes()


# A deployment sees few distinct (dtype, shape) pairs: the header's JSON and checks are done once
# per pair, not per request (they were most of a small frame's encode and decode time).
@lru_cache(maxsize=1024)
def _header(dtype: str, shape: tuple[int, ...]) -> bytes:
    header = json.dumps({"dtype": dtype, "shape": list(shape)}).encode()
    return _LEN.pack(len(header)) + header


@lru_cache(maxsize=1024)
def _parse_header(header: bytes) -> tuple[str, tuple[int, ...], int]:
    """dtype, shape and the body's size in bytes; raises CodecError (errors are not cached)."""
    try:
        parsed = json.loads(header)
        dtype, shape = str(parsed["dtype"]), tuple(int(d) for d in parsed["shape"])
    except (ValueError, KeyError, TypeError):
        raise CodecError("the tensor frame's header is not valid JSON with dtype and shape") from None
    if dtype not in DTYPES:
        raise CodecError(f"dtype {dtype!r} is not supported; send one of {sorted(DTYPES)}")
    if any(d < 0 for d in shape):
        raise CodecError(f"shape {list(shape)} has a negative dimension")
    return dtype, shape, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def decode(data: bytes) -> np.ndarray:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
        raise CodecError("the body is not an aiaas tensor frame (bad magic or truncated)")
    (n,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    dtype, shape, expected = _parse_header(bytes(data[start : start + n]))
    body = memoryview(data)[start + n :]
    if len(body) != expected:
        raise CodecError(f"the tensor frame holds {len(body)} bytes but dtype {dtype} and shape {list(shape)} "
                         f"need {expected}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def from_json(value: Any) -> np.ndarray:
    """``{"inputs": nested lists}`` -> an array; refuses ragged or non-numeric data."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nesting
        raise CodecError(f"inputs must be a rectangular nested list of numbers ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise CodecError("inputs must be numbers (or booleans): got non-numeric values")
    return array


def split_input(x: Any) -> tuple[np.ndarray, Kind]:
    """Any of tensor / ndarray / nested list -> (ndarray, what to give back)."""
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        return x.detach().cpu().numpy(), "torch"
    if isinstance(x, np.ndarray):
        return x, "numpy"
    return from_json(x), "list"


def join_output(array: np.ndarray, kind: Kind) -> Any:
    if kind == "torch":
        import torch

        return torch.from_numpy(np.array(array))
    if kind == "numpy":
        return array
    return array.tolist()
