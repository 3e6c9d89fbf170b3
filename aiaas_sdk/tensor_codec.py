"""Tensors on the wire: a compact binary frame, and JSON for curl users.

Binary (``application/x-aiaas-tensor``)::

    b"AIAT" | uint32 big-endian header length | JSON header {"dtype", "shape"} | C-order bytes

The SDK sends arrays as binary automatically; ``{"inputs": [[...], ...]}`` JSON
works too and is answered in kind. Neither side ever unpickles anything.
"""

from __future__ import annotations

import json
import struct
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
    header = json.dumps({"dtype": str(array.dtype), "shape": list(array.shape)}).encode()
    return MAGIC + _LEN.pack(len(header)) + header + array.tobytes()


def decode(data: bytes) -> np.ndarray:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
        raise CodecError("the body is not an aiaas tensor frame (bad magic or truncated)")
    (n,) = _LEN.unpack(data[len(MAGIC) : len(MAGIC) + _LEN.size])
    start = len(MAGIC) + _LEN.size
    try:
        header = json.loads(data[start : start + n])
        dtype, shape = str(header["dtype"]), [int(d) for d in header["shape"]]
    except (ValueError, KeyError, TypeError):
        raise CodecError("the tensor frame's header is not valid JSON with dtype and shape") from None
    if dtype not in DTYPES:
        raise CodecError(f"dtype {dtype!r} is not supported; send one of {sorted(DTYPES)}")
    if any(d < 0 for d in shape):
        raise CodecError(f"shape {shape} has a negative dimension")
    body = memoryview(data)[start + n :]
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(body) != expected:
        raise CodecError(f"the tensor frame holds {len(body)} bytes but dtype {dtype} and shape {shape} need {expected}")
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
