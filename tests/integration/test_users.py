"""Two users: neither can see, read, cancel or download the other's runs (404, never 403)."""

from __future__ import annotations

import httpx
import pytest

import aiaas

from .models import Regressor


def test_users_cannot_touch_each_others_runs(backend, tmp_path):
    alice = backend.client(backend.new_key("alice"))
    bob = backend.client(backend.new_key("bob"))
    run = alice.train(Regressor(), max_epochs=1, name="alices").wait()
    pending = alice.train(Regressor(step_sleep=0.05), max_epochs=50, name="alices-long")

    assert run.id not in [r.id for r in bob.runs()]
    # Bob holding Alice's run ids (as if guessed or leaked) still gets nothing.
    as_bob, pending_as_bob = aiaas.Run(bob, run.data), aiaas.Run(bob, pending.data)
    for action in (
        lambda: bob.run(run.id),
        lambda: bob.run(pending.id),
        pending_as_bob.cancel,
        as_bob.metrics,
        as_bob.logs,
        lambda: as_bob.download_checkpoint(tmp_path / "stolen.ckpt"),
    ):
        with pytest.raises(aiaas.NotFound):
            action()
    assert not (tmp_path / "stolen.ckpt").exists()
    # The same answer as for a run that does not exist: existence is not leaked.
    for path in (f"/v1/runs/{run.id}", "/v1/runs/run_000000000000"):
        resp = httpx.get(backend.url + path, headers={"Authorization": f"Bearer {backend.new_key('carol')}"})
        assert resp.status_code == 404 and resp.json()["code"] == "run_not_found"

    assert alice.run(pending.id).status is not aiaas.RunStatus.cancelled
    assert [r.id for r in alice.runs()][:2] == [pending.id, run.id]
    assert len(alice.run(run.id).metrics()) > 0
    pending.cancel()
