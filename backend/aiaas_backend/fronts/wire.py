"""Frames between a front process and the primary over the primary's ``predict.sock``.

Every frame is a 4-byte length then ``request id`` (u32) and one kind byte. Many requests
share the one connection a front keeps, so replies come back in any order, matched by id.

Front to primary:

- ``WORK``: lengths (u16) of the deployment name, its id and the caller's key, those three
  strings, one byte ``T`` (payload: a tensor frame already checked against the input
  signature) or ``J`` (payload: a JSON list of items for the module's hooks), then the payload.
  The key is there for the rate limit's bucket, which lives in the primary (empty: not counted).
- ``CANCEL``: the caller of that request left; drop its work.
- ``TALLY``: a predict the front answered itself (a 400 for a bad frame, a 499): the name,
  the id and the status (u16), so the primary's Prometheus counters see it.

Primary to front: ``TENSOR`` (payload: the output as a tensor frame), ``ITEMS`` (payload:
the JSON list of outputs), ``ERROR`` (payload: JSON ``{"status", "body", "headers"}``, the
HTTP answer as the primary's own error handler gives it) or ``FAILED`` (the model raised: 500).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

LEN = struct.Struct(">I")
HEAD = struct.Struct(">IB")  # request id, kind
NAMES = struct.Struct(">HHH")
STATUS = struct.Struct(">H")

WORK, CANCEL, TALLY = 1, 2, 3
TENSOR, ITEMS, ERROR, FAILED = 1, 2, 3, 4
TENSOR_WORK, ITEMS_WORK = b"T", b"J"


@dataclass(slots=True)
class Work:
    """One predict's validated work, as the primary reads it."""

    name: str
    dep_id: str
    key: str
    is_tensor: bool
    payload: memoryview


def whole_frames(buffer: bytes) -> tuple[list[tuple[int, int, int, int]], int]:
    """The complete frames at the start of ``buffer`` as (request id, kind, payload start, payload
    end) offsets into it (no copies), and where the incomplete rest begins."""
    view, at, end = memoryview(buffer), 0, len(buffer)
    found = []
    while end - at >= LEN.size:
        (n,) = LEN.unpack_from(view, at)
        if end - at - LEN.size < n:
            break
        start = at + LEN.size
        request_id, kind = HEAD.unpack_from(view, start)
        at = start + n
        found.append((request_id, kind, start + HEAD.size, at))
    return found, at


def frame(request_id: int, kind: int, *parts: bytes) -> bytes:
    """One length-prefixed frame; ``parts`` are joined once."""
    body = b"".join((HEAD.pack(request_id, kind), *parts))
    return LEN.pack(len(body)) + body


def work_frame(request_id: int, name: str, dep_id: str, key: str, is_tensor: bool, payload: bytes) -> bytes:
    n, d, k = name.encode(), dep_id.encode(), key.encode()
    return frame(request_id, WORK, NAMES.pack(len(n), len(d), len(k)), n, d, k,
                 TENSOR_WORK if is_tensor else ITEMS_WORK, payload)


def tally_frame(name: str, dep_id: str, status: int) -> bytes:
    n, d = name.encode(), dep_id.encode()
    return frame(0, TALLY, NAMES.pack(len(n), len(d), 0), n, d, STATUS.pack(status))


def read_work(body: memoryview) -> Work:
    """The fields of a WORK frame's body (after the id and kind); the payload is not copied."""
    ln, ld, lk = NAMES.unpack_from(body)
    at = NAMES.size
    name = bytes(body[at:at + ln]).decode()
    dep_id = bytes(body[at + ln:at + ln + ld]).decode()
    key = bytes(body[at + ln + ld:at + ln + ld + lk]).decode()
    at += ln + ld + lk
    return Work(name, dep_id, key, body[at:at + 1] == TENSOR_WORK, body[at + 1:])


def read_tally(body: memoryview) -> tuple[str, str, int]:
    ln, ld, _ = NAMES.unpack_from(body)
    at = NAMES.size
    (status,) = STATUS.unpack_from(body, at + ln + ld)
    return bytes(body[at:at + ln]).decode(), bytes(body[at + ln:at + ln + ld]).decode(), status


def error_frame(request_id: int, status: int, body: bytes, headers: dict[str, str]) -> bytes:
    return frame(request_id, ERROR, json.dumps({"status": status, "body": body.decode(), "headers": headers}).encode())


__all__ = [
    "CANCEL",
    "ERROR",
    "FAILED",
    "HEAD",
    "ITEMS",
    "LEN",
    "TALLY",
    "TENSOR",
    "WORK",
    "Work",
    "error_frame",
    "frame",
    "read_tally",
    "read_work",
    "socket_path",
    "tally_frame",
    "work_frame",
]


def socket_path(folder: str, name: str) -> str:
    """A path to ``folder/name`` that fits AF_UNIX's 108 bytes: through a directory fd that this
    process keeps open when the real path is longer (a deep data dir)."""
    path = os.path.join(folder, name)
    if len(path) < 100:
        return path
    return f"/proc/self/fd/{os.open(folder, os.O_PATH | os.O_DIRECTORY)}/{name}"
