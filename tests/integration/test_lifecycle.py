"""Cancel, crashed workers and server restarts: each run ends as described, nothing is lost."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

import aiaas

from ..conftest import wait_until
from .models import Regressor

SLOW = dict(max_epochs=1000, name="slow")  # stopped by the test, not by finishing


def _metrics_started(run: aiaas.Run, n: int = 3):
    return lambda: len(run.metrics("train_loss")) >= n


def test_cancel_mid_run_stops_it_and_keeps_its_metrics(make_backend):
    backend = make_backend()
    client = backend.client()
    run = client.train(Regressor(step_sleep=0.01), **SLOW)
    wait_until(_metrics_started(run), what="first metrics")
    pid = run.refresh().data.worker_pid
    run.cancel()
    run = client.run(run.id)
    with pytest.raises(aiaas.RunCancelled):
        run.wait(timeout=60)
    assert run.status is aiaas.RunStatus.cancelled
    assert len(run.metrics("train_loss")) >= 3
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
               what="the worker to exit")
    # A queued run is cancelled at once, without ever starting.
    blocker = client.train(Regressor(step_sleep=0.01), **SLOW)
    queued = client.train(Regressor(), max_epochs=1, name="queued")
    assert queued.cancel().data.status is aiaas.RunStatus.cancelled
    assert queued.data.started_at is None
    blocker.cancel()
    # Cancelling an ended run changes nothing.
    assert client.run(run.id).cancel().data.status is aiaas.RunStatus.cancelled


def test_worker_killed_by_sigkill_fails_the_run_with_the_reason(make_backend):
    backend = make_backend()
    client = backend.client()
    run = client.train(Regressor(step_sleep=0.01), **SLOW)
    wait_until(_metrics_started(run), what="first metrics")
    before = len(run.metrics())
    os.kill(run.refresh().data.worker_pid, signal.SIGKILL)
    with pytest.raises(aiaas.RunFailed) as failed:
        run.wait(timeout=60)
    assert "killed by SIGKILL" in str(failed.value)
    assert len(run.metrics()) >= before
    # The backend keeps serving and the next run trains.
    assert client.train(Regressor(), max_epochs=1).wait().status is aiaas.RunStatus.succeeded


def test_server_restart_mid_queue_loses_nothing(make_backend):
    backend = make_backend(slots=1)
    client = backend.client()
    running = client.train(Regressor(step_sleep=0.02), max_epochs=6, name="running")
    queued = [client.train(Regressor(), max_epochs=2, name=f"queued-{i}") for i in range(2)]
    wait_until(_metrics_started(running), what="first metrics")
    assert [q.status for q in queued] == [aiaas.RunStatus.queued] * 2
    worker_pid = running.refresh().data.worker_pid

    backend.stop()  # graceful: the busy worker keeps training meanwhile
    assert psutil.pid_exists(worker_pid)
    backend.start()
    client = backend.client()
    for run in [running, *queued]:
        assert client.run(run.id).wait(timeout=120).status is aiaas.RunStatus.succeeded
    running = client.run(running.id)
    assert running.data.attempt == 1  # adopted, not restarted
    steps = [p.step for p in running.metrics("train_loss")]
    assert steps == list(range(48))  # 8 steps x 6 epochs: none lost while the server was down, none twice


def test_server_and_worker_killed_requeues_from_last_checkpoint(make_backend):
    backend = make_backend(slots=1)
    client = backend.client()
    run = client.train(Regressor(step_sleep=0.03), max_epochs=5, name="resumed")
    # Wait for the first epoch's checkpoint.
    wait_until(lambda: any(p.epoch and p.epoch >= 1 for p in run.metrics("train_loss")), timeout=60,
               what="epoch 1")
    worker_pid = run.refresh().data.worker_pid
    backend.stop(signal.SIGKILL)
    os.kill(worker_pid, signal.SIGKILL)

    backend.start()
    client = backend.client()
    run = client.run(run.id).wait(timeout=120)
    assert run.data.attempt == 2
    first_steps_of_attempt_2 = [p.step for p in run.metrics("train_loss")]
    # Resumed from a checkpoint: the second attempt did not start again at step 0.
    assert first_steps_of_attempt_2.count(0) == 1
    assert first_steps_of_attempt_2[-1] == 39
    # The resumption loads the checkpoint deliberately: Lightning's message, not its weights_only notice.
    logs = run.logs()
    assert "Restoring states from the checkpoint" in logs and "weights_only" not in logs
