"""Keys with a lifecycle, through the real server: revocation and expiry reach every path
(the predict path caches look-ups) within 2 s, last use is listed, users manage only their
own keys, admins manage anyone's, and the audit log records creation, revocation and use by IP."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

import aiaas

from ..conftest import wait_until
from .models import Regressor

INPUTS = {"inputs": [[0.0] * 8]}


def _cli(backend, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "aiaas_backend", *args, "--data-dir", str(backend.data_dir)],
                         capture_output=True, text=True, env=backend.env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _get(backend, path: str, key: str, **kwargs) -> httpx.Response:
    return httpx.get(backend.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def _predict(backend, name: str, key: str) -> httpx.Response:
    return httpx.post(f"{backend.url}/v1/deployments/{name}/predict", json=INPUTS,
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _seconds_until_refused(request) -> float:
    """Seconds from now until ``request()`` answers 401 (polled; fails after 10 s)."""
    start = time.monotonic()
    wait_until(lambda: request().status_code == 401, timeout=10, interval=0.02, what="a 401")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def alice(backend):
    return backend.client(backend.new_key("alice"))


@pytest.fixture(scope="module")
def deployed(alice):
    run = alice.train(Regressor(), max_epochs=1, name="keys").wait()
    return run.deploy("keys-dep", max_wait_ms=1)


def test_a_revoked_key_is_refused_within_2s_on_the_runs_api_and_the_predict_path(backend, alice, deployed):
    created = alice.create_key(name="to-revoke")
    assert created.key.startswith("aiaas_") and created.name == "to-revoke" and created.active
    shared = deployed.create_key()
    # Warm the predict path's cache for both keys, then revoke them from outside the server
    # (the command line: nothing can tell the server's cache) and through the API.
    for key in (created.key, shared):
        assert _predict(backend, "keys-dep", key).status_code == 200
    assert _get(backend, "/v1/runs", created.key).status_code == 200

    assert f"revoked {created.id}" in _cli(backend, "keys", "revoke", created.id)
    assert _get(backend, "/v1/runs", created.key).status_code == 401
    assert _seconds_until_refused(lambda: _predict(backend, "keys-dep", created.key)) < 2.0
    refused = _get(backend, "/v1/runs", created.key).json()
    assert "was revoked at" in refused["detail"] and "aiaas keys create" in refused["detail"]

    shared_id = next(k.id for k in alice.keys() if k.kind == "deployment" and k.deployment == "keys-dep")
    assert alice.revoke_key(shared_id).revoked_at is not None
    assert _seconds_until_refused(lambda: _predict(backend, "keys-dep", shared)) < 2.0
    assert _get(backend, "/v1/deployments/keys-dep", shared).status_code == 401
    # Everything else still works with the owner's key.
    assert len(deployed.predict([[0.0] * 8])) == 1
    states = {k.id: k.active for k in alice.keys()}
    assert states[created.id] is False and states[shared_id] is False


def test_an_open_event_stream_ends_within_2s_of_its_keys_revocation(backend, alice):
    key = alice.create_key(name="streaming")
    run = alice.train(Regressor(step_sleep=0.05), max_epochs=500, name="streamed")
    opened, ended, lines = threading.Event(), threading.Event(), []

    def read() -> None:
        with httpx.stream("GET", f"{backend.url}/v1/runs/{run.id}/events", timeout=30,
                          headers={"Authorization": f"Bearer {key.key}"}) as resp:
            assert resp.status_code == 200
            opened.set()
            lines.extend(resp.iter_lines())
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    assert opened.wait(30)
    time.sleep(1.5)
    assert not ended.is_set()
    alice.revoke_key(key.id)
    start = time.monotonic()
    assert ended.wait(10)
    assert time.monotonic() - start < 2.0
    assert "event: end" not in lines  # cut off, not finished: the run still trains
    assert alice.run(run.id).status is aiaas.RunStatus.running
    run.cancel()


def test_an_expired_key_stops_working(backend, alice, deployed):
    short = alice.create_key(name="short", expires="3s")
    assert short.expires_at is not None
    assert _get(backend, "/v1/runs", short.key).status_code == 200
    assert _predict(backend, "keys-dep", short.key).status_code == 200
    wait_until(lambda: _get(backend, "/v1/runs", short.key).status_code == 401, timeout=10, what="expiry")
    assert "expired at" in _get(backend, "/v1/runs", short.key).json()["detail"]
    assert _seconds_until_refused(lambda: _predict(backend, "keys-dep", short.key)) < 2.0
    with pytest.raises(aiaas.AuthenticationError, match="expired"):
        backend.client(short.key).runs()
    with pytest.raises(aiaas.InvalidInput, match="like '30d'"):
        alice.create_key(expires="soon")
    # A bad lifetime on the command line is one line naming the forms, no key made.
    bad = subprocess.run([sys.executable, "-m", "aiaas_backend", "keys", "create", "--user", "alice", "--expires",
                          "soon", "--data-dir", str(backend.data_dir)], capture_output=True, text=True, env=backend.env)
    assert bad.returncode == 2 and "like '30d'" in bad.stderr and "Traceback" not in bad.stderr


def test_keys_list_shows_last_use(backend, alice):
    used, unused = alice.create_key(name="used"), alice.create_key(name="unused")
    before = time.time()
    backend.client(used.key).runs()
    listed = {k.id: k for k in alice.keys()}
    assert listed[used.id].last_used_at is not None and listed[used.id].last_used_at.timestamp() >= before - 1
    assert listed[unused.id].last_used_at is None
    assert all(k.user == "alice" for k in listed.values())
    table = _cli(backend, "keys", "list", "--user", "alice")
    line = next(row for row in table.splitlines() if row.startswith(used.id + " "))
    assert "used" in line and "active" in line and line.split()[-1] != "-"
    assert used.key not in table


def test_users_manage_only_their_own_keys_and_admins_anyones(backend, alice):
    bob = backend.client(backend.new_key("bob"))
    alices = alice.create_key(name="alice-laptop")
    assert alices.id not in [k.id for k in bob.keys()]
    with pytest.raises(aiaas.NotFound):
        bob.revoke_key(alices.id)
    for call in (lambda: bob.keys(user="alice"), lambda: bob.keys(all_users=True),
                 lambda: bob.create_key(user="alice"), bob.audit):
        with pytest.raises(aiaas.AuthenticationError, match="only an admin's key") as refused:
            call()
        assert refused.value.status_code == 403 and "--admin" in str(refused.value)
    assert _get(backend, "/v1/runs", alices.key).status_code == 200

    # An admin is made on the command line; its key manages other users' keys.
    admin_key = _cli(backend, "keys", "create", "--user", "root", "--admin").strip().splitlines()[-1]
    admin = backend.client(admin_key)
    assert alices.id in [k.id for k in admin.keys(user="alice")]
    assert {"alice", "bob", "root"} <= {k.user for k in admin.keys(all_users=True)}
    made = admin.create_key(name="for-bob", user="bob")
    assert made.user == "bob" and _get(backend, "/v1/runs", made.key).status_code == 200
    assert admin.revoke_key(alices.id).active is False
    assert _get(backend, "/v1/runs", alices.key).status_code == 401


def test_audit_records_creation_revocation_and_use_by_address(backend, alice):
    key = alice.create_key(name="audited")
    for _ in range(5):
        assert _get(backend, "/v1/runs", key.key).status_code == 200
    # The same key from a second loopback address (the whole 127/8 is this machine).
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
        for _ in range(3):
            assert other.get(backend.url + "/v1/runs", headers={"Authorization": f"Bearer {key.key}"}).status_code \
                == 200
    alice.revoke_key(key.id)

    admin = backend.client()  # the backend's own user "local" is its admin
    entries = [e for e in admin.audit(limit=1000) if e.key_id == key.id]
    actions = sorted((e.action, e.actor, e.ip) for e in entries)
    assert actions == [("create", "user:alice", "127.0.0.1"), ("revoke", "user:alice", "127.0.0.1"),
                       ("use", "key", "127.0.0.1"), ("use", "key", "127.0.0.2")]
    assert all(e.user == "alice" and e.key_prefix == key.prefix for e in entries)
    assert {(e.action, e.actor) for e in admin.audit(limit=1000, user="bob")} >= {("create", "cli")}
    table = _cli(backend, "audit", "--user", "alice", "--limit", "1000")
    assert any(key.id in row and "127.0.0.2" in row and " use " in row for row in table.splitlines())

    # Append-only in the database itself.
    with sqlite3.connect(backend.data_dir / "aiaas.db") as db:
        for statement in ("UPDATE audit_log SET ip = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(statement)


def test_bad_key_requests_are_4xx_naming_the_problem(backend, alice):
    key = alice.create_key(name="mine").key
    headers = {"Authorization": f"Bearer {key}"}
    for key_id in ("ak_99999999999999999999999", "nonsense", "dk_0"):
        resp = httpx.delete(f"{backend.url}/v1/keys/{key_id}", headers=headers, timeout=30)
        assert resp.status_code == 404 and resp.json()["code"] == "key_not_found" and "client.keys()" in \
            resp.json()["detail"]
    for body in ({"expires_in_s": -5}, {"name": "x" * 201}, {"expires_in_s": "30d"}):
        resp = httpx.post(f"{backend.url}/v1/keys", json=body, headers=headers, timeout=30)
        assert resp.status_code == 422, resp.text
    resp = httpx.get(f"{backend.url}/v1/keys", params={"user": "nobody"}, headers=headers, timeout=30)
    assert resp.status_code == 403 and resp.json()["code"] == "admin_only"
    assert _get(backend, "/v1/runs", key).status_code == 200  # nothing above touched the key
