"""The store on a real PostgreSQL server: the same journey as on SQLite, and a restart.

Needs PostgreSQL on 127.0.0.1:5432 with trust auth (``.ci/run`` starts the
machine's cluster if it is down); each test gets its own database.
"""

from __future__ import annotations

import uuid

import pytest
import torch

import aiaas

from ..conftest import wait_until
from .models import Regressor

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed: pip install -e '.[postgres]'")
ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def _admin():
    try:
        return psycopg.connect(ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({exc}); .ci/run starts one")


@pytest.fixture
def database_url():
    name = f"aiaas_test_{uuid.uuid4().hex[:10]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_train_stream_cancel_and_restart_on_postgres(make_backend, database_url):
    backend = make_backend(AIAAS_DATABASE_URL=database_url)
    client = backend.client()
    torch.manual_seed(0)
    run = client.train(Regressor(), max_epochs=2, name="on-postgres").wait()
    events = list(run.events())
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(run.metrics("train_loss")) == 16 and run.logs()
    slow = client.train(Regressor(step_sleep=0.02), max_epochs=100, name="cancel-me")
    wait_until(lambda: len(slow.metrics()) >= 3, what="first metrics")
    slow.cancel()
    with pytest.raises(aiaas.RunCancelled):
        slow.wait(timeout=60)
    dep = run.deploy("pg")
    x = torch.randn(3, 8)
    y = dep.predict(x)

    backend.stop()
    backend.start()
    client = backend.client()
    again = client.run(run.id)
    assert again.status is aiaas.RunStatus.succeeded and list(again.events()) == events
    assert client.run(slow.id).status is aiaas.RunStatus.cancelled
    assert torch.allclose(client.deployment("pg").wait_ready(timeout=120).predict(x), y)
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql")) as conn:
        assert conn.execute("select version_num from alembic_version").fetchone()[0] == _head_revision()
        assert conn.execute("select count(*) from events where run_id = %s", (run.id,)).fetchone()[0] == len(events)


def _head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from aiaas_backend.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
