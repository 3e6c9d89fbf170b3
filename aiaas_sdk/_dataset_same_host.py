"""Same-host uploads: when the backend runs on this machine, hand it the files to read.

Over HTTP every byte of an upload is read and hashed here, sent through the loopback, and
received and hashed again by the server. When the backend's upload socket is reachable
(``POST /v1/datasets/same-host`` names it), the SDK instead opens each file itself and
passes the open descriptors to the server (``SCM_RIGHTS`` over a Unix socket); the server
reads, hashes and stores the chunks it lacks and answers each file's size and chunk digests,
which go into the manifest as if hashed here. The server never opens a path for us and
reads nothing we could not; see the backend's ``upload_socket.py`` for the security model.

Any failure to reach the socket (another machine, an older backend, the socket turned off,
busy) falls back to HTTP; an error the server reports about the data is raised as the
HTTP route's would be.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from ._errors import AiaasError, error_from_response
from ._hashing import CHUNK_BYTES, HashCache, Piece
from .wire_datasets import SameHostUploadPublic

if TYPE_CHECKING:
    from ._client import Client
    from ._ops import Op

MAX_FDS = 128  # descriptors per message (the server's limit)
# A message's file ranges hold at most this much (a multiple of CHUNK_BYTES: a range is whole chunks).
BATCH_BYTES = 8 * CHUNK_BYTES
IN_FLIGHT = 2  # messages the server works on at once
MESSAGE_BYTES = 256 * 1024  # a reply: the digests of up to 128 ranges' chunks (at most 8 + 128)


def open_ticket() -> Op[SameHostUploadPublic]:
    from ._ops import Call

    resp = yield Call("POST", "/v1/datasets/same-host", idempotent=False)
    assert resp is not None
    return SameHostUploadPublic.model_validate_json(resp.content)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        if len(path) < 100:
            sock.connect(path)
        else:  # AF_UNIX paths stop at 108 bytes: reach a deep one through its folder's descriptor
            folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
            try:
                sock.connect(f"/proc/self/fd/{folder}/{os.path.basename(path)}")
            finally:
                os.close(folder)
    except OSError:
        sock.close()
        raise
    return sock


def _error(reply: dict[str, Any]) -> AiaasError:
    """The SDK error the HTTP route would have raised for the same answer."""
    body = {"detail": reply.get("error", "the same-host upload failed"), "code": reply.get("code")}
    return error_from_response(httpx.Response(int(reply.get("status") or 500), json=body))


class SameHost:
    """One connection to the backend's upload socket, for one upload."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.stored_chunks = 0
        self.stored_bytes = 0

    @classmethod
    def open(cls, client: Client) -> SameHost | None:
        """Connect, or None when the backend's socket is not reachable from here (use HTTP)."""
        if not hasattr(socket, "SOCK_SEQPACKET") or not hasattr(socket, "send_fds"):
            return None  # not Linux
        try:
            grant = client._drive(open_ticket())
        except AiaasError:
            return None  # an older backend, or the socket is off
        if not os.path.exists(grant.socket):
            return None  # the backend is on another machine
        try:
            sock = _connect(grant.socket)
        except OSError:
            return None
        try:
            sock.settimeout(client._timeout if isinstance(client._timeout, int | float) else 300)
            sock.sendall(json.dumps({"ticket": grant.ticket, "chunk_bytes": CHUNK_BYTES}).encode())
            hello = json.loads(sock.recv(MESSAGE_BYTES) or b"{}")
            # Only the backend that issued the ticket knows the answer: a socket at that path that
            # is not its own (squatted on this machine) is sent no file.
            if not (isinstance(hello.get("answer"), str) and hmac.compare_digest(hello["answer"], grant.answer)):
                sock.close()
                return None
            sock.settimeout(None)  # a batch of large files takes as long as the disk does
        except (OSError, ValueError):
            sock.close()
            return None
        return cls(sock)

    def close(self) -> None:
        self._sock.close()

    def read(self, items: list[tuple[str, str]], done: Callable[[int], None], flush: bool = False
             ) -> list[tuple[int, list[str]]]:
        """Size and chunk digests of each ``(path, stamp)``, read, hashed and stored by the backend;
        ``done(bytes)`` after each batch. A file whose stamp changed meanwhile is refused.
        ``flush``: the backend flushes what it stored before answering (a commit follows soon,
        which then waits for no disk; a first upload's GiB is flushed once, at its commit)."""
        ranges = [(items[i][0], offset, length) for i, offset, length in _ranges(items)]
        owner = [i for i, _offset, _length in _ranges(items)]

        def check(k: int, fd: int, size: int, _digests: list[str]) -> bool:
            # The file we opened is the one we listed, unchanged while the backend read it.
            stamp = items[owner[k]][1]
            return HashCache.stamp(os.fstat(fd)) == stamp and size == ranges[k][2]

        out: list[tuple[int, list[str]]] = [(int(stamp.split(":")[0]), []) for _path, stamp in items]
        for k, (_size, digests) in enumerate(self._exchange(ranges, check, done, flush)):
            out[owner[k]][1].extend(digests)
        return out

    def send(self, pieces: list[tuple[str, Piece]], done: Callable[[int], None]) -> None:
        """Have the backend read and store these chunks (``(digest, where)``: what the manifest
        names but the backend lacks); a chunk whose bytes no longer hash to its digest is refused."""
        ranges = [(piece.path, piece.offset, piece.size) for _digest, piece in pieces]

        def check(k: int, _fd: int, size: int, digests: list[str]) -> bool:
            return size == pieces[k][1].size and digests == [pieces[k][0]]

        self._exchange(ranges, check, done)

    def _exchange(self, ranges: list[tuple[str, int, int]], check: Callable[[int, int, int, list[str]], bool],
                  done: Callable[[int], None], flush: bool = False) -> list[tuple[int, list[str]]]:
        """Send ``(path, offset, length)`` ranges in messages, IN_FLIGHT at a time; their sizes and
        digests as the backend read them, each passed through ``check`` while its file is open."""
        results: list[tuple[int, list[str]] | None] = [None] * len(ranges)
        batches = _batches(ranges)
        waiting: dict[int, tuple[int, list[int]]] = {}  # seq -> (first range, fds)
        sent = 0
        try:
            while sent < len(batches) or waiting:
                while sent < len(batches) and len(waiting) < IN_FLIGHT:
                    first, count = batches[sent]
                    fds: list[int] = []
                    try:
                        for path, _offset, _length in ranges[first:first + count]:
                            fds.append(os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
                        message = {"seq": sent, "ranges": [[o, n] for _p, o, n in ranges[first:first + count]],
                                   **({"flush": True} if flush else {})}
                        socket.send_fds(self._sock, [json.dumps(message).encode()], fds)
                    except BaseException:
                        for fd in fds:
                            os.close(fd)
                        raise
                    waiting[sent] = (first, fds)
                    sent += 1
                reply = json.loads(self._sock.recv(MESSAGE_BYTES) or b"{}")
                if reply.get("seq") not in waiting:
                    raise AiaasError(f"the backend's upload socket answered out of turn: {str(reply)[:200]}")
                first, fds = waiting.pop(reply["seq"])
                try:
                    if "error" in reply:
                        raise _error(reply)
                    for k, (fd, entry) in enumerate(zip(fds, reply["ranges"], strict=True)):
                        if not check(first + k, fd, entry["size"], entry["chunks"]):
                            raise OSError(f"{ranges[first + k][0]} changed while uploading; upload again once it "
                                          "is written")
                        results[first + k] = (entry["size"], entry["chunks"])
                finally:
                    for fd in fds:
                        os.close(fd)
                self.stored_chunks += reply["stored"]
                self.stored_bytes += reply["stored_bytes"]
                done(sum(length for _p, _o, length in ranges[first:first + len(fds)]))
        finally:
            for _first, fds in waiting.values():
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        return [r for r in results if r is not None]


class Near:
    """An upload's same-host connection, opened on first need (at most one try per upload), or
    ahead of it: :meth:`start` opens it on a thread while the caller goes on (its ticket's round
    trip and the socket's greeting overlap the ``stat`` of the rest of the folder)."""

    def __init__(self, client: Client, enabled: bool) -> None:
        self.client, self.tried, self.conn = client, not enabled, None
        self._opening: threading.Thread | None = None

    def _open(self) -> None:
        self.conn = SameHost.open(self.client)

    def start(self) -> None:
        if not self.tried:
            self.tried = True
            self._opening = threading.Thread(target=self._open, name="aiaas-same-host", daemon=True)
            self._opening.start()

    def get(self) -> SameHost | None:
        if not self.tried:
            self.tried = True
            self._open()
        if self._opening is not None:
            self._opening.join()
        return self.conn

    def close(self) -> None:
        if self._opening is not None:
            self._opening.join()
        if self.conn is not None:
            self.conn.close()


def _ranges(items: list[tuple[str, str]]) -> list[tuple[int, int, int]]:
    """``(item, offset, length)``: each file in parts of at most BATCH_BYTES (whole chunks), so
    that a reply names a bounded number of digests however large the file."""
    out = []
    for i, (_path, stamp) in enumerate(items):
        size = int(stamp.split(":")[0])
        out += [(i, offset, min(BATCH_BYTES, size - offset)) for offset in range(0, size, BATCH_BYTES)] or [(i, 0, 0)]
    return out


def _batches(ranges: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """``(first range, count)`` of each message: up to MAX_FDS ranges and BATCH_BYTES."""
    out: list[tuple[int, int]] = []
    first = size = 0
    for i, (_path, _offset, length) in enumerate(ranges):
        if i > first and (i - first >= MAX_FDS or size + length > BATCH_BYTES):
            out.append((first, i - first))
            first, size = i, 0
        size += length
    if first < len(ranges):
        out.append((first, len(ranges) - first))
    return out
