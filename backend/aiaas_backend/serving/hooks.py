"""JSON values through a module's own hooks, in the replica: decode -> collate -> predict -> encode.

A module may define any of::

    decode_request(item) -> tensor | dict of tensors     # one JSON value -> one input row
    collate(rows) -> batch                                # default: stack rows of equal shapes
    encode_response(row) -> JSON value                    # one output row -> one JSON value

Without ``decode_request`` an item is numbers (``torch.as_tensor``); without
``encode_response`` a row comes back as nested lists. Each item's answer never
depends on the batch it shared: rows of different shapes are not padded, they
run as separate groups (a module that wants padding defines ``collate``), and a
group that fails is retried item by item, so a hook or model error fails only
the item that caused it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from .frames import ITEMS, OK, error_reply

Row = Any  # a tensor, or a dict / tuple of tensors


def run_model(model: torch.nn.Module, batch: Any) -> Any:
    with torch.inference_mode():
        # LightningModule.predict_step defaults to self(batch): "predict_step if defined, else forward".
        return model.predict_step(batch, 0) if hasattr(model, "predict_step") else model(batch)


def _as_row(value: Any) -> Row:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {k: _as_row(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_as_row(v) for v in value)
    return torch.as_tensor(value)


def _key(row: Row) -> Any:
    """Rows with equal keys stack into one batch."""
    if isinstance(row, torch.Tensor):
        return (tuple(row.shape), row.dtype)
    if isinstance(row, dict):
        return tuple(sorted((k, _key(v)) for k, v in row.items()))
    return tuple(_key(v) for v in row)


def default_collate(rows: list[Row]) -> Any:
    first = rows[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(rows)
    if isinstance(first, dict):
        return {k: default_collate([r[k] for r in rows]) for k in first}
    return tuple(default_collate([r[i] for r in rows]) for i in range(len(first)))


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _rows_of(out: Any, n: int) -> list[Row]:
    """Split a batch output into its ``n`` rows; the first dimension must be the batch."""
    if isinstance(out, torch.Tensor):
        if out.dim() == 0 or out.shape[0] != n:
            raise RuntimeError(f"the model returned shape {tuple(out.shape)} for a batch of {n}: "
                               "its first dimension must be the batch")
        return list(out.detach().cpu())
    if isinstance(out, dict):
        parts = {k: _rows_of(v, n) for k, v in out.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    if isinstance(out, (tuple, list)):
        parts_t = [_rows_of(v, n) for v in out]
        return [tuple(p[i] for p in parts_t) for i in range(n)]
    raise RuntimeError(f"predict_step/forward returned {type(out).__name__}; return a tensor (or a dict or "
                       "tuple of tensors) whose first dimension is the batch")


def _plain(row: Row) -> Any:
    if isinstance(row, torch.Tensor):
        return row.tolist()
    if isinstance(row, dict):
        return {k: _plain(v) for k, v in row.items()}
    return [_plain(v) for v in row]


def _hook(model: Any, name: str) -> Callable[..., Any] | None:
    hook = getattr(model, name, None)
    return hook if callable(hook) else None


def _failure(what: str, exc: BaseException) -> dict[str, str]:
    return {"error": f"{what} raised {type(exc).__name__}: {exc}"}


def answer_items(model: torch.nn.Module, values: list[Any], device: torch.device) -> list[dict[str, Any]]:
    """``{"ok": value}`` or ``{"error": message}`` for each JSON value, in order."""
    decode, encode = _hook(model, "decode_request"), _hook(model, "encode_response")
    collate = _hook(model, "collate")
    results: list[dict[str, Any] | None] = [None] * len(values)
    rows: dict[int, Row] = {}
    for i, value in enumerate(values):
        try:
            rows[i] = _as_row(decode(value) if decode else value)
        except Exception as exc:  # noqa: BLE001 - the item's own failure, reported for it alone
            results[i] = _failure("decode_request" if decode else "reading the item as numbers", exc)

    def run(indices: list[int]) -> None:
        try:
            batch = collate([rows[i] for i in indices]) if collate else default_collate([rows[i] for i in indices])
            outs = _rows_of(run_model(model, _to(batch, device)), len(indices))
        except Exception as exc:  # noqa: BLE001
            if len(indices) > 1:  # find the culprit: each alone, so its neighbours are answered
                for i in indices:
                    run([i])
                return
            results[indices[0]] = _failure("collate" if collate else "the model", exc)
            return
        for i, row in zip(indices, outs):
            try:
                value = encode(row) if encode else _plain(row)
                json.dumps(value)
                results[i] = {"ok": value}
            except Exception as exc:  # noqa: BLE001
                results[i] = _failure("encode_response" if encode else "encoding the output", exc)

    if collate:
        groups = [list(rows)] if rows else []
    else:
        by_key: dict[Any, list[int]] = {}
        for i, row in rows.items():
            by_key.setdefault(_key(row), []).append(i)
        groups = list(by_key.values())
    for indices in groups:
        run(indices)
    return [r if r is not None else {"error": "no answer"} for r in results]


def answer_frame(model: torch.nn.Module, frame: bytes, device: torch.device) -> bytes:
    """The reply to one ``ITEMS`` request frame."""
    try:
        values = json.loads(frame[len(ITEMS):])
    except ValueError as exc:
        return error_reply(f"the items are not valid JSON: {exc}", "input")
    if not isinstance(values, list):
        return error_reply("the items must be a JSON list", "input")
    return OK + json.dumps(answer_items(model, values, device)).encode()
