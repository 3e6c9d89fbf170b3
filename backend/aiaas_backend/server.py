"""Runs the API under uvicorn on a socket we bind ourselves (so port 0 works), and on a
Unix socket in the data dir for sandboxed workers, which have no network."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aiaas_sdk import config as sdk_config

from .config import LOOPBACK, Settings
from .fronts import FromFront, Fronts
from .main import create_app
from .models import User
from .security import create_api_key, user_for_key
from .tls import serve_plain, uvicorn_options
from .upload_socket import UploadSocket

log = logging.getLogger("aiaas.server")


LOCAL_KEY_FILE = "local.key"


def _local_key(sessions: sessionmaker[Session], data_dir: Path) -> str | None:
    """The key of this backend's own user ``local``, kept in ``DATA_DIR/local.key`` (owner-only).

    ``aiaas.connect("local")`` reads it from there, so the embedded backend never depends on
    the config file, which may point at another backend. Created on the first start of a
    backend with no users; a data dir from before this file existed adopts the config's key
    when it is one of this backend's.
    """
    path = data_dir / LOCAL_KEY_FILE
    with sessions() as session:
        candidates = [path.read_text().strip() if path.exists() else None, sdk_config.read_config().get("api_key")]
        key = next((k for k in candidates if k and user_for_key(session, k) is not None), None)
        if key is None:
            if session.scalar(select(User).limit(1)) is not None:
                return None  # its users' keys were made with `aiaas keys create`
            # The person who runs a local backend is its operator: its first user is an admin.
            key = create_api_key(session, "local", name=LOCAL_KEY_FILE, admin=True, actor="server")
            log.warning("created an API key for user 'local' in %s", path)
    if candidates[0] != key:
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(key + "\n")
        tmp.replace(path)
    return key


def _share_with_sdk(key: str, url: str) -> None:
    """Point the user's config file at this backend, unless it already points at another one.

    A second local backend leaves the config alone (and says where its key is): overwriting it
    would cut every notebook that uses the first one off from it.
    """
    existing = sdk_config.read_config()
    if existing.get("api_key") in (None, key):
        path = sdk_config.write_config({"url": url, "api_key": key})
        log.info("the aiaas config file %s points at this backend", path)
    else:
        log.info("the aiaas config file %s belongs to another backend (%s); left alone. Connect to this one with "
                 "aiaas.connect(%r, api_key=<the key in %s>)", sdk_config.config_path(),
                 existing.get("url", "no URL"), url, LOCAL_KEY_FILE)


def _unix_socket(folder: Path) -> socket.socket:
    """``folder/api.sock``: the one way out of a sandbox (bound into it read-only; the worker
    still needs its run's token). Its folder holds nothing else and outlives restarts, so
    workers adopted by the next server process reach it at the same place."""
    folder.mkdir(mode=0o755, exist_ok=True)
    path = folder / "api.sock"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # AF_UNIX paths stop at 108 bytes; a deep data dir is reached through the folder's fd.
    fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    try:
        sock.bind(str(path) if len(str(path)) < 100 else f"/proc/self/fd/{fd}/api.sock")
    finally:
        os.close(fd)
    # A root server's sandboxes run under uids of their own: they must be able to connect.
    os.chmod(path, 0o666)
    return sock


async def _warm_routes(app: FastAPI) -> None:
    """Have FastAPI build every router's route state now. It builds a router's on the first
    request that reaches it (0.5 s of the first call to a fresh backend on the dev machine);
    a request no route matches reaches them all. Sent to the router itself, past the
    middleware: nothing counts, logs or limits it."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/.warm-up", "raw_path": b"/.warm-up", "root_path": "",
             "query_string": b"", "headers": [], "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: object) -> None:
        pass

    try:
        await app.router(scope, receive, send)  # type: ignore[arg-type]
    except Exception:  # a cold route is only slower once: never fail the start for it
        log.warning("warming the routes failed", exc_info=True)


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.server_workers > 1:  # the fronts bind the same port (only then: one server keeps it to itself)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    url = f"{'https' if settings.ssl_certfile else 'http'}://{host}:{port}"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, lambda: url)  # migrates the store
    unix = _unix_socket(settings.api_socket_dir)
    uploads = None
    if settings.upload_socket:
        uploads = UploadSocket(settings.data_dir / "upload", app.state.sessions, app.state.store,
                               settings.user_quota_bytes, settings.max_chunk_bytes, app.state.sweeper)
        uploads.start()
        app.state.upload_socket = uploads
    if settings.host in LOOPBACK:
        key = _local_key(app.state.sessions, settings.data_dir)
        if key is not None and settings.write_config:
            _share_with_sdk(key, url)
    fronts = None
    if settings.server_workers > 1:
        fronts = Fronts(settings, settings.server_workers)
        app.add_middleware(FromFront, secret=fronts.secret)
    # What start-up built (FastAPI, SQLAlchemy, pydantic: hundreds of thousands of objects) lives
    # as long as the server: out of the collector's sight, a full collection scans only newer
    # objects (collections were 5% of the server's CPU time taking in a GiB of dataset chunks).
    gc.freeze()
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False, timeout_graceful_shutdown=5,
                                           **uvicorn_options(settings)))

    info = settings.data_dir / "server.json"
    original_startup = server.startup

    warming: list[asyncio.Task[None]] = []  # a reference, so the task is not collected midway

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=[sock] if settings.ssl_certfile else sockets)
        if settings.ssl_certfile:
            await serve_plain(server, unix)
        # Written once we accept connections: readers of server.json can connect at once.
        tmp = info.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "data_dir": str(settings.data_dir)}))
        tmp.replace(info)
        log.info("aiaas backend listening on %s (data in %s)", url, settings.data_dir)
        warming.append(asyncio.get_running_loop().create_task(_warm_routes(app)))
        if fronts is not None:
            await fronts.start(app.state, port)

    original_shutdown = server.shutdown

    def unadvertise() -> None:
        try:
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
                (settings.api_socket_dir / "api.sock").unlink(missing_ok=True)
        except (OSError, ValueError):
            pass

    async def shutdown(sockets: list[socket.socket] | None = None) -> None:
        if fronts is not None:  # first: their requests in flight still need the routers
            await fronts.stop()
        if uploads is not None:
            uploads.stop()
        await original_shutdown(sockets=sockets)
        # Here, not only after run(): uvicorn ends by raising the SIGTERM or SIGINT it caught
        # again, with the default handler, so code after run() never sees a signalled stop.
        unadvertise()

    server.startup = startup  # type: ignore[method-assign]
    server.shutdown = shutdown  # type: ignore[method-assign]
    try:
        server.run(sockets=[sock, unix])
    finally:
        unadvertise()
