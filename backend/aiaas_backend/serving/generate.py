"""A module's generator method served as a stream, in the replica.

The module defines ``generate(prompt: str, max_tokens: int = ...)`` that yields
text pieces. The replica sends each piece as soon as it is yielded, and before
asking the generator for the next one it looks (without waiting) for a CANCEL
frame from its router: a caller that went away stops the generation within
one step. A module may set ``max_new_tokens`` (the largest ``max_tokens`` it
accepts, default 4096); a generator that refuses its arguments (a prompt over
its context, say) raises before its first piece and the caller gets a 400.
"""

from __future__ import annotations

import inspect
import json
import select
import socket
from collections.abc import Callable
from typing import Any

import torch

from .frames import END, LEN, PIECE, error_reply

DEFAULT_MAX_NEW_TOKENS = 4096


def _send(conn: socket.socket, reply: bytes) -> None:
    conn.sendall(LEN.pack(len(reply)) + reply)


def _cancelled(conn: socket.socket, read_frame: Callable[[], bytes | None]) -> bool:
    """True when the router asked to stop (a CANCEL frame, or the connection closed)."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    read_frame()  # the only frame a router sends mid-stream is CANCEL
    return True


def refusal(model: Any, request: dict[str, Any]) -> tuple[str, str] | None:
    """(message, kind) when this stream cannot start, checked before the generator runs."""
    method = getattr(model, "generate", None)
    if not inspect.isgeneratorfunction(getattr(method, "__func__", method)):
        return (f"the model ({type(model).__name__}) has no generator method `generate(prompt, max_tokens=...)` "
                "that yields text pieces, so it cannot stream; add one to the module and deploy a run of it, "
                "or call dep.predict() instead", "unsupported")
    prompt, max_tokens = request.get("prompt"), request.get("max_tokens")
    if not isinstance(prompt, str):
        return f"prompt must be a string, got {type(prompt).__name__}", "input"
    limit = int(getattr(model, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limit:
        return f"max_tokens must be a whole number from 1 to {limit} (this model's max_new_tokens), got {max_tokens!r}", "input"
    return None


def run_stream(conn: socket.socket, model: Any, body: bytes, read_frame: Callable[[], bytes | None]) -> None:
    """Answer one STREAM request: PIECE frames, then END or ERROR."""
    try:
        request = json.loads(body)
    except ValueError as exc:
        _send(conn, error_reply(f"the stream request is not valid JSON: {exc}", "input"))
        return
    if (refused := refusal(model, request)) is not None:
        _send(conn, error_reply(*refused))
        return
    max_tokens = request["max_tokens"]
    pieces = 0
    with torch.inference_mode():
        generator = model.generate(request["prompt"], max_tokens=max_tokens)
        try:
            while pieces < max_tokens:
                try:
                    piece = next(generator)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - before the first piece: the model refused the request
                    kind = "internal" if pieces else "input"
                    _send(conn, error_reply(f"generate raised {type(exc).__name__}: {exc}", kind))
                    return
                if not isinstance(piece, str):
                    _send(conn, error_reply(f"generate must yield str pieces; it yielded {type(piece).__name__}",
                                            "internal"))
                    return
                pieces += 1
                _send(conn, PIECE + piece.encode())
                if _cancelled(conn, read_frame):
                    _send(conn, END + json.dumps({"finish_reason": "cancelled", "pieces": pieces}).encode())
                    return
        finally:
            generator.close()
    reason = "length" if pieces >= max_tokens else "stop"
    _send(conn, END + json.dumps({"finish_reason": reason, "pieces": pieces}).encode())
