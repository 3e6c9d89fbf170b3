"""Length-prefixed frames between the router and a replica over a Unix socket.

A request starts with a 4-byte magic that says its kind:

- ``AIAT``: a tensor frame (``aiaas_sdk.tensor_codec``), the fast path;
- ``AIAJ`` + JSON list: JSON values for the module's ``decode_request``/``encode_response`` hooks;
- ``AIAS`` + JSON ``{"prompt", "max_tokens"}``: start a stream from the module's ``generate``;
- ``AIAC``: stop the stream in progress (ignored when none is).

A reply is one status byte then: a tensor frame (OK to a tensor request), a JSON
list of ``{"ok": value}`` / ``{"error": message}`` per item (OK to a JSON request),
a text piece (PIECE), the end of a stream (END + JSON ``{"finish_reason", "pieces"}``),
or a JSON error ``{"error", "kind"}`` (ERROR) where kind is ``input`` (the model
refused these inputs), ``unsupported`` (the model cannot do what was asked) or ``internal``.
A stream is answered with PIECE frames and then one END or ERROR frame.
"""

from __future__ import annotations

import json
import struct
from typing import Any

LEN = struct.Struct(">I")
OK, ERROR, PIECE, END = b"\x00", b"\x01", b"\x02", b"\x03"
TENSOR, ITEMS, STREAM, CANCEL = b"AIAT", b"AIAJ", b"AIAS", b"AIAC"


def error_reply(message: str, kind: str) -> bytes:
    return ERROR + json.dumps({"error": message, "kind": kind}).encode()


def items_request(values: list[Any]) -> bytes:
    return ITEMS + json.dumps(values).encode()


def stream_request(prompt: str, max_tokens: int) -> bytes:
    return STREAM + json.dumps({"prompt": prompt, "max_tokens": max_tokens}).encode()
