"""``aiaas keys list``, ``aiaas keys revoke`` and ``aiaas audit``: the operator's view of keys.

These read the store directly (like ``aiaas keys create``), so they work with the server
stopped, and act as the operator: every user's keys, recorded as "cli" in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from .cli import DataDir, _settings, app, keys


@contextmanager
def open_store(data_dir: Path | None) -> Iterator[Session]:
    """A session on DATA_DIR's store, migrated to the newest schema."""
    from .db import make_engine, migrate, session_factory

    settings = _settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"


@keys.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option(help="only this user's keys [default: every user's]")] = None,
    data_dir: DataDir = None,
) -> None:
    """List API keys and deployment keys (never their secrets): state, expiry, last use."""
    from .keys import list_keys
    from .models import User

    with open_store(data_dir) as session:
        whose = None
        if user is not None:
            whose = session.scalar(select(User).where(User.name == user))
            if whose is None:
                typer.echo(f"error: no user {user!r}; `aiaas keys list` shows every user's keys", err=True)
                raise typer.Exit(2)
        rows = list_keys(session, whose)
        admins = set(session.scalars(select(User.name).where(User.is_admin)))
    typer.echo(f"{'ID':<8} {'PREFIX':<13} {'USER':<16} {'NAME':<16} {'STATE':<8} {'CREATED':<17} {'EXPIRES':<17} "
               "LAST USED")
    for k in rows:
        state = "active" if k.active else "revoked" if k.revoked_at else "expired"
        who = k.user + ("*" if k.user in admins else "")
        name = k.name or (f"-> {k.deployment}" if k.deployment else "-")
        typer.echo(f"{k.id:<8} {k.prefix:<13} {who:<16} {name:<16} {state:<8} {_when(k.created_at):<17} "
                   f"{_when(k.expires_at):<17} {_when(k.last_used_at)}")
    if admins:
        typer.echo("(* an admin)")


@keys.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's ID (ak_3, dk_7) or prefix, as `aiaas keys list` shows")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: it stops working everywhere within 2 s (a running server needs no restart)."""
    from .keys import find, revoke

    with open_store(data_dir) as session:
        key = find(session, key_id)
        if key is None:
            typer.echo(f"error: no key {key_id!r} (or that prefix is ambiguous): use an ID from `aiaas keys list`",
                       err=True)
            raise typer.Exit(2)
        public = revoke(session, key, "cli")
    typer.echo(f"revoked {public.id} ({public.prefix}..., user {public.user!r})")


@app.command("audit")
def audit(
    limit: Annotated[int, typer.Option(min=1, help="how many entries, newest first")] = 50,
    user: Annotated[str | None, typer.Option(help="only this user's keys")] = None,
    data_dir: DataDir = None,
) -> None:
    """Show the audit log: keys created, revoked, and used from a new address."""
    from .audit import entries
    from .models import User

    with open_store(data_dir) as session:
        user_id = None
        if user is not None:
            user_id = session.scalar(select(User.id).where(User.name == user))
            if user_id is None:
                typer.echo(f"error: no user {user!r}", err=True)
                raise typer.Exit(2)
        rows = entries(session, limit, user_id)
    typer.echo(f"{'WHEN (UTC)':<20} {'ACTION':<7} {'KEY':<8} {'PREFIX':<13} {'USER':<16} {'BY':<18} IP")
    for e in rows:
        typer.echo(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.action:<7} {e.key_id:<8} {e.key_prefix:<13} {e.user or '-':<16} "
                   f"{e.actor:<18} {e.ip or '-'}")
