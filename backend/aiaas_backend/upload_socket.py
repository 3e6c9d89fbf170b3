"""Same-host uploads: a client on this machine hands the server its open files; the server
reads, hashes and stores their chunks itself (docs/datasets.md, "Same-host uploads").

Over HTTP a GiB costs the uploader a read, a SHA-256 and a socket send, and the server a
socket receive, uvicorn's body path and a second SHA-256 of every byte. When the client
runs on the server's machine, it can instead pass the file descriptors of its files over
``<data dir>/upload/upload.sock`` (``SCM_RIGHTS`` on a ``SOCK_SEQPACKET`` Unix socket): the
server reads each file once, hashes each chunk once, and stores the chunks this user lacks
through the same :func:`.chunk_intake.take` as the HTTP route. The reply tells the client
the size and chunk digests of each file, which it then puts in its manifest as usual. A
message with ``"flush": true`` has what it stored flushed to disk before the reply (a
re-upload's files, sent while the client still stats its folder: the commit then finds them
flushed); others are flushed by the commit.

Why this is safe on a shared, multi-user server:

- The server never opens a path on a client's behalf. It only reads descriptors the client
  opened itself and sent: the kernel checked the client's own permissions when it opened
  them, so the server can read nothing the client could not. A descriptor that is not a
  regular file (a pipe, a socket, a device, a directory, an ``O_PATH`` handle) is refused,
  and a file is read up to the size it had when it arrived, never past it.
- The server hashes the bytes it read into its own memory and stores those same bytes: a
  client that rewrites its file meanwhile cannot get bytes stored under a digest they do not
  have (which would poison the chunk for every user, as chunks are stored once).
- Who the client is comes from an API key, not from the socket: the client first asks
  ``POST /v1/datasets/same-host`` (with its key, over HTTP) for a ticket, good for one
  connection within a minute. Every batch checks that key again (one indexed read per
  stored group): a key revoked or expired meanwhile ends the upload at its next batch. The reply also carries an answer the socket gives back
  before the client sends any descriptor, so a socket at that path that is not this
  backend's (a remote backend's path squatted on the client's machine) gets no files.
- Limits: a few connections at once (more are told to use HTTP), a bounded number of
  descriptors per message, two batches in flight per connection; the quota is checked as
  on the HTTP route. A descriptor on a file system that blocks its reads (a hostile FUSE
  mount) holds only its own connection's share of the batch threads (IN_FLIGHT of them).

``AIAAS_UPLOAD_SOCKET=false`` turns it off; the SDK then sends every chunk over HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import resource
import secrets
import socket
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from . import chunk_intake
from .errors import ApiError
from .models import ApiKey, User
from .store import Store

if TYPE_CHECKING:
    from .dataset_sweep import Sweeper

log = logging.getLogger("aiaas.upload_socket")

TICKET_SECONDS = 60.0
MAX_CONNECTIONS = 8
MAX_FDS = 128  # descriptors per message (the kernel allows 253)
IN_FLIGHT = 2  # batches a connection may have in work at once (one per core of a small machine)
GROUP_BYTES = 32 * 1024 * 1024  # chunks stored per transaction: a batch's read buffer
MESSAGE_BYTES = 64 * 1024
MESSAGE_DATA = 64 * 1024 * 1024  # file bytes one message may name (its reply's digests stay few)
IDLE_SECONDS = 300.0


class Tickets:
    """One-connection tickets: ``issue`` for an API key (over HTTP), ``redeem`` once on the socket."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[int, str, float]] = {}

    def issue(self, key_id: int) -> tuple[str, str]:
        ticket, answer = secrets.token_hex(32), secrets.token_hex(32)
        now = time.monotonic()
        with self._lock:
            self._open = {t: v for t, v in self._open.items() if v[2] > now}  # drop the expired
            self._open[ticket] = (key_id, answer, now + TICKET_SECONDS)
        return ticket, answer

    def redeem(self, ticket: str) -> tuple[int, str] | None:
        """(the API key's id, the answer), once."""
        with self._lock:
            found = self._open.pop(ticket, None)
        if found is None or found[2] < time.monotonic():
            return None
        return found[0], found[1]


def _send(conn: socket.socket, lock: threading.Lock, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    with lock:
        conn.sendall(data)


class Arenas:
    """Read buffers for batches, kept between uploads: at most IN_FLIGHT of them (64 MiB), the
    largest. A fresh buffer costs its page faults (zeroing it is most of that): a fresh 32 MiB
    one per batch thread cost as much as hashing the bytes of a 19 MB re-upload."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[memoryview] = []

    def take(self, need: int, chunk_bytes: int) -> memoryview:
        """A buffer of at least ``need`` bytes up to GROUP_BYTES (and never under a chunk)."""
        size = max(chunk_bytes, min(GROUP_BYTES, need))
        with self._lock:
            fits = [a for a in self._free if len(a) >= size]
            if fits:
                arena = min(fits, key=len)
                self._free.remove(arena)
                return arena
        return memoryview(bytearray(size))

    def give(self, arena: memoryview) -> None:
        with self._lock:
            self._free.append(arena)
            self._free.sort(key=len, reverse=True)
            del self._free[IN_FLIGHT:]


def _read_into(fd: int, view: memoryview, at: int) -> None:
    """Fill ``view`` with the file's bytes from ``at``, into our own memory (see the module doc)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], at + got)
        if not n:
            raise ApiError(409, "a file shrank while the backend read it; upload again once it is written",
                           "file_changed")
        got += n


def _connections_the_fd_limit_allows() -> int:
    """Raise this process's open-file limit to its hard limit (a connection may hold IN_FLIGHT x
    MAX_FDS received descriptors, and the usual soft limit is 1024), and how many connections
    fit in it with room for everything else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (soft - 512) // (IN_FLIGHT * MAX_FDS)))


class UploadSocket:
    """The listener: one thread accepting, one per connection, a small pool per connection."""

    def __init__(self, folder: Path, sessions: sessionmaker[Session], store: Store, quota: int | None,
                 max_chunk_bytes: int, sweeper: Sweeper | None = None) -> None:
        self.folder = folder
        self.path = folder / "upload.sock"
        self.tickets = Tickets()
        self._sessions = sessions
        self._store = store
        self._quota = quota
        self._sweeper = sweeper
        self._max_chunk_bytes = max_chunk_bytes
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._sock: socket.socket | None = None
        self._arenas = Arenas()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        connections = _connections_the_fd_limit_allows()
        self._slots = threading.BoundedSemaphore(connections)
        # One pool for every connection's batches, each connection at most IN_FLIGHT at a time
        # (its own semaphore) and waiting for its own before it ends: threads are not started per
        # upload, and a batch stuck in a read holds only its own connection's share.
        self._pool = ThreadPoolExecutor(connections * IN_FLIGHT, thread_name_prefix="upload-socket-batch")
        self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = os.open(self.folder, os.O_PATH | os.O_DIRECTORY)
        try:  # AF_UNIX paths stop at 108 bytes: a deep data dir is reached through the folder's fd
            sock.bind(str(self.path) if len(str(self.path)) < 100 else f"/proc/self/fd/{fd}/upload.sock")
        finally:
            os.close(fd)
        # Any local user may connect (a shared server's notebooks run as their own users); who
        # they are comes from the ticket, what they can hand over from their own permissions.
        os.chmod(self.path, 0o666)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._accept, name="upload-socket", daemon=True).start()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed by stop()
            if not self._slots.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"error": "too many same-host uploads at once; send over HTTP",
                                             "status": 503, "code": "busy"}).encode())
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="upload-socket-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()
        try:
            conn.settimeout(IDLE_SECONDS)
            hello = json.loads(conn.recv(MESSAGE_BYTES) or b"{}")
            redeemed = self.tickets.redeem(str(hello.get("ticket", "")))
            chunk_bytes = hello.get("chunk_bytes")
            if redeemed is None:
                _send(conn, send_lock, {"error": "unknown or expired ticket: ask POST /v1/datasets/same-host for "
                                        "one", "status": 401, "code": "unauthenticated"})
                return
            if not isinstance(chunk_bytes, int) or not 64 * 1024 <= chunk_bytes <= self._max_chunk_bytes:
                _send(conn, send_lock, {"error": f"chunk_bytes must be 64 KiB to {self._max_chunk_bytes} bytes",
                                        "status": 400, "code": "bad_request"})
                return
            key_id, answer = redeemed
            _send(conn, send_lock, {"answer": answer})
            self._batches(conn, send_lock, key_id, chunk_bytes)
        except (OSError, ValueError, AttributeError, TypeError) as exc:  # a closed or garbled connection
            log.info("same-host upload connection ended: %s", exc)
        finally:
            conn.close()
            self._slots.release()

    def _batches(self, conn: socket.socket, send_lock: threading.Lock, key_id: int, chunk_bytes: int) -> None:
        room = threading.BoundedSemaphore(IN_FLIGHT)
        assert self._pool is not None
        futures: list[Future[None]] = []
        try:
            while True:
                room.acquire()  # backpressure: the socket is not read while IN_FLIGHT batches work
                data, fds, flags, _ = socket.recv_fds(conn, MESSAGE_BYTES, MAX_FDS)
                if not data:
                    for fd in fds:
                        os.close(fd)
                    room.release()
                    return
                try:
                    message = json.loads(data)
                    seq, ranges = message["seq"], message["ranges"]
                    # The client asks for its bytes flushed with the batch: a commit follows soon
                    # and then finds them on disk (see chunk_intake.take).
                    durable = message.get("flush") is True
                except (ValueError, KeyError, TypeError):
                    seq = ranges = None
                    durable = False
                if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) or seq is None:
                    for fd in fds:
                        os.close(fd)
                    _send(conn, send_lock, {"seq": seq, "error": f"a message holds one JSON object and at most "
                                            f"{MAX_FDS} descriptors", "status": 400, "code": "bad_request"})
                    room.release()
                    continue

                def work(seq: Any = seq, fds: list[int] = fds, ranges: Any = ranges, durable: bool = durable) -> None:
                    try:
                        reply = self._batch(key_id, fds, ranges, chunk_bytes, durable)
                    except ApiError as exc:
                        reply = {"error": exc.detail, "status": exc.status_code, "code": exc.code}
                    except Exception as exc:  # the client must hear of it, not hang
                        log.exception("same-host upload batch failed")
                        reply = {"error": f"{type(exc).__name__}: {exc}", "status": 500, "code": "internal"}
                    finally:
                        for fd in fds:
                            os.close(fd)
                        room.release()
                    with contextlib.suppress(OSError):
                        _send(conn, send_lock, {"seq": seq, **reply})

                futures = [f for f in futures if not f.done()]
                futures.append(self._pool.submit(work))
        finally:
            wait(futures)  # its batches end (their descriptors closed) before the connection does

    def _batch(self, key_id: int, fds: list[int], ranges: Any, chunk_bytes: int, durable: bool = False
               ) -> dict[str, Any]:
        """Read, hash and store the chunks of each ``[offset, length]`` range of the file behind
        the descriptor beside it; each range's size read and digests."""
        if not (isinstance(ranges, list) and len(ranges) == len(fds)
                and all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and x >= 0 for x in r)
                        and r[0] % chunk_bytes == 0 for r in ranges)
                and sum(r[1] for r in ranges) <= MESSAGE_DATA):
            raise ApiError(400, f"a message names one [offset, length] per descriptor, offsets in whole chunks, "
                           f"at most {MESSAGE_DATA} bytes in all", "bad_request")
        spans: list[tuple[int, int]] = []
        for i, (fd, (offset, length)) in enumerate(zip(fds, ranges, strict=True)):
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ApiError(400, f"descriptor {i} of the batch is not a regular file: only files are uploaded",
                               "not_a_file")
            spans.append((offset, max(0, min(offset + length, st.st_size) - offset)))
        arena = self._arenas.take(sum(size for _offset, size in spans), chunk_bytes)
        try:
            return self._read_and_store(key_id, fds, spans, chunk_bytes, arena, durable)
        finally:
            self._arenas.give(arena)

    def _read_and_store(self, key_id: int, fds: list[int], spans: list[tuple[int, int]], chunk_bytes: int,
                        arena: memoryview, durable: bool = False) -> dict[str, Any]:
        digests: list[list[str]] = [[] for _ in fds]
        stored = stored_bytes = 0
        group: list[tuple[str, list[memoryview]]] = []
        held = 0

        def flush() -> None:
            nonlocal stored, stored_bytes, held
            if not group:
                return
            with self._sessions() as session:
                key = session.get(ApiKey, key_id)
                ended = key.ended() if key is not None else "deleted"
                user = session.get(User, key.user_id) if key is not None and ended is None else None
                if user is None:
                    raise ApiError(401, f"the API key that opened this upload was {ended or 'orphaned'}; upload "
                                   f"again with a working key", "unauthenticated")
                sweeper = self._sweeper
                new = chunk_intake.take(session, user, self._store, self._quota, group, verified=True,
                                        durable=durable, sweep=None if sweeper is None else
                                        partial(sweeper.for_quota, session, user))
            stored += len(new)
            stored_bytes += sum(new.values())
            group.clear()
            held = 0

        for i, fd in enumerate(fds):
            offset, size = spans[i]
            for at in range(offset, offset + size, chunk_bytes):
                want = min(chunk_bytes, offset + size - at)
                if held + want > len(arena):
                    flush()
                view = arena[held:held + want]
                _read_into(fd, view, at)
                # Hashed here, from our own copy: what is stored is what was hashed.
                digest = hashlib.sha256(view).hexdigest()
                digests[i].append(digest)
                group.append((digest, [view]))
                held += want
        flush()
        return {"ranges": [{"size": size, "chunks": d} for (_o, size), d in zip(spans, digests, strict=True)],
                "stored": stored, "stored_bytes": stored_bytes}
