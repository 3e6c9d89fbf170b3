"""Length-prefixed frames between the router and a replica over a Unix socket.

A request is a tensor frame (``aiaas_sdk.tensor_codec``). A reply is one status
byte then a tensor frame (OK) or a JSON error ``{"error", "kind"}`` where
kind is ``input`` (the model refused these inputs) or ``internal``.
"""

from __future__ import annotations

import json
import struct

LEN = struct.Struct(">I")
OK, ERROR = b"\x00", b"\x01"


def error_reply(message: str, kind: str) -> bytes:
    return ERROR + json.dumps({"error": message, "kind": kind}).encode()
