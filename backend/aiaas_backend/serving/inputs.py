"""Checking a predict request's inputs against what the model was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ApiError


def _fmt(shape: tuple[int, ...] | list[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _expected_dtype(signature: dict[str, Any]) -> np.dtype[Any]:
    # numpy has no bfloat16: such a model is fed float32 and casts itself.
    return np.dtype("float32" if signature["dtype"] == "bfloat16" else signature["dtype"])


def check_inputs(array: np.ndarray, signature: dict[str, Any] | None) -> np.ndarray:
    """Return the batch ready for the model, or raise a 400 naming expected versus received."""
    if array.ndim == 0:
        raise ApiError(400, "inputs must be a batch: the first dimension is the batch, e.g. [[...]] for one row",
                       "bad_shape")
    if array.shape[0] == 0:
        raise ApiError(400, "the batch is empty: send at least one row", "empty_batch")
    if signature is None:
        return array
    row = tuple(signature["shape"])
    if tuple(array.shape[1:]) != row:
        expected = _fmt(("batch", *row))
        hint = f"; for one row send shape {_fmt((1, *row))}" if tuple(array.shape) == row else ""
        raise ApiError(400, f"wrong input shape: expected {expected}, received {_fmt(array.shape)}{hint}",
                       "bad_shape")
    want = _expected_dtype(signature)
    if array.dtype == want:
        return array
    if array.dtype.kind == want.kind:
        return array.astype(want)  # float64 for a float32 model, int32 for int64, ...
    raise ApiError(400, f"wrong input dtype: expected {want}, received {array.dtype}", "bad_dtype")


def check_json_inputs(array: np.ndarray, signature: dict[str, Any] | None) -> np.ndarray:
    """JSON has no dtypes: whole numbers arrive as integers; any number is fine for a float model."""
    if signature is not None and array.dtype.kind in "iub" and _expected_dtype(signature).kind == "f":
        array = array.astype(np.float32)
    return check_inputs(array, signature)

