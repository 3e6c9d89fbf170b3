"""The ``aiaas`` command: run the backend, manage API keys, keep the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="aiaas: train Lightning modules from notebooks on this backend.", no_args_is_help=True)
keys = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys, name="keys")
local = typer.Typer(help="See and stop the backend running on this machine (the one aiaas.connect(\"local\") "
                         "starts).", no_args_is_help=True)
app.add_typer(local, name="local")
store_cli = typer.Typer(help="Upkeep of the store that holds datasets, checkpoints and weights.",
                        no_args_is_help=True)
app.add_typer(store_cli, name="store")

DataDir = Annotated[Path | None, typer.Option(help="where the database and artifacts live [default: user data dir]")]


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from .config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        typer.echo(f"error: bad setting {where}: {first['msg']}" if where else f"error: {first['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="address to listen on [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port; 0 picks a free one [default: 8765]")] = None,
    data_dir: DataDir = None,
    executor: Annotated[str | None, typer.Option(help="where runs execute: local or ray [default: local]")] = None,
    slots: Annotated[int | None, typer.Option(help="runs that may train at once (CPU runs locally; any run on "
                                              "Ray) [default: 1]")] = None,
    ray_address: Annotated[str | None, typer.Option(help="with --executor ray: the cluster, 'auto' or the head's "
                                                    "HOST:PORT")] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="serve HTTPS with this PEM certificate (chain); needs "
                                                      "--ssl-keyfile")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="the certificate's PEM private key")] = None,
    workers: Annotated[int | None, typer.Option(help="API server processes sharing the port: predicts use "
                                                "every one, the rest goes to the first [default: 1]")] = None,
) -> None:
    """Run the aiaas backend (API server + executor)."""
    from .sandbox import SandboxUnavailable
    from .server import serve

    try:
        serve(_settings(host=host, port=port, data_dir=data_dir, executor=executor, slots=slots,
                        ray_address=ray_address, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                        server_workers=workers))
    except SandboxUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@keys.command("create")
def keys_create(
    user: Annotated[str | None, typer.Option(help="the user the key belongs to (created if new)")] = None,
    scrape: Annotated[bool, typer.Option("--scrape", help="a scrape-only key: it reads GET /metrics and nothing "
                                         "else (for Prometheus); needs --name")] = False,
    name: Annotated[str | None, typer.Option(help="what the key is for, e.g. 'laptop'; with --scrape: who "
                                             "scrapes, e.g. 'prometheus'")] = None,
    expires: Annotated[str | None, typer.Option(help="the key stops working after this long: 90s, 15m, 12h, "
                                                "30d, 2w [default: never]")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="make USER an admin: their keys list, create and revoke "
                                        "every user's keys and read the audit log")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create an API key for USER, or a scrape-only key; the key is printed once, as the last line."""
    from aiaas_sdk.wire_keys import parse_duration

    from .cli_keys import open_store
    from .keys import expiry
    from .security import create_api_key, create_scrape_key

    if (user is None) == (not scrape) or (scrape and not name) or (scrape and (expires or admin)):
        typer.echo("error: pass --user NAME [--name N] [--expires 30d] [--admin] for a user's key, or "
                   "--scrape --name NAME for a scrape-only key", err=True)
        raise typer.Exit(2)
    try:
        lifetime = parse_duration(expires) if expires is not None else None
    except ValueError as exc:
        typer.echo(f"error: --expires: {exc}", err=True)
        raise typer.Exit(2) from None
    with open_store(data_dir) as session:
        if scrape:
            assert name is not None
            try:
                key = create_scrape_key(session, name)
            except ValueError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            typer.echo(f"created a scrape-only key {name!r} for GET /metrics (store it now: it is not shown again):")
        else:
            assert user is not None
            key = create_api_key(session, user, name=name, expires_at=expiry(lifetime), admin=admin)
            until = f", valid for {expires}" if expires else ""
            role = " (an admin)" if admin else ""
            typer.echo(f"created an API key for user {user!r}{role}{until} (store it now: it is not shown again):")
    typer.echo(key)


@local.command("status")
def local_status(data_dir: DataDir = None) -> None:
    """Show whether the backend of DATA_DIR runs, where, its processes and memory, runs and deployments."""
    from .local_admin import describe, inspect

    settings = _settings(data_dir=data_dir)
    typer.echo(describe(inspect(settings.data_dir, settings.sqlalchemy_url)))


@local.command("stop")
def local_stop(
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="stop even while runs train (they resume from their last "
                                        "checkpoint on the next start)")] = False,
) -> None:
    """Stop the backend of DATA_DIR with its workers and replicas; runs, models and deployments are kept."""
    from .local_admin import StopRefused, inspect, stop

    settings = _settings(data_dir=data_dir)
    state = inspect(settings.data_dir, settings.sqlalchemy_url)
    if not state.alive and not state.running_runs:
        typer.echo(f"no aiaas backend is running on {settings.data_dir}")
        return
    try:
        for line in stop(state, force=force):
            typer.echo(line)
    except StopRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("runs, models and deployments are kept; aiaas.connect(\"local\") starts the backend again")


@store_cli.command("compact")
def store_compact(data_dir: DataDir = None) -> None:
    """Free the space of deleted dataset chunks that share packs with kept ones. A deletion does
    this for the packs it touched; this looks at every pack (after a crash, or a store written
    by an older aiaas). Safe while the backend runs."""
    from .cli_keys import open_store as open_database
    from .pack_compaction import compact
    from .store import open_store

    settings = _settings(data_dir=data_dir)
    store = open_store(settings)
    with open_database(data_dir) as session:
        done = compact(session, store)
    typer.echo(f"rewrote {done.packs} pack(s) of {done.before:,} bytes in {store.url}: {done.freed:,} bytes freed, "
               f"{done.after:,} kept")


def main() -> None:
    app()


# Registers `aiaas keys list|revoke` and `aiaas audit` on the apps above.
from . import cli_keys  # noqa: E402, F401
