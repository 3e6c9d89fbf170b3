"""The Ray executor and Ray Serve runtime on a real local Ray cluster (CPU only).

The SDK calls are the ones a notebook makes against the local executor; only
the backend differs. test_train.py runs its whole module against both executors.
"""

from __future__ import annotations

import signal

import psutil
import pytest
import torch

import aiaas

from ..conftest import Backend, wait_until
from .models import PLRegressor, Regressor


@pytest.fixture(scope="module")
def backend(ray_cluster, tmp_path_factory):
    # Ray workers work in a folder of their node, not in the server's data dir (the run's files
    # travel through the API: test_ray_store.py).
    worker_dir = tmp_path_factory.mktemp("ray-node-local")
    b = Backend(tmp_path_factory.mktemp("ray-backend"), slots=1, ray_address=ray_cluster.address,
                # A checkpoint at the first epoch end after this interval: here, every epoch.
                env={"AIAAS_RAY_CPUS_PER_REPLICA": "0.5", "AIAAS_CHECKPOINT_EVERY_S": "0.5",
                     "AIAAS_RAY_WORKER_DIR": str(worker_dir)})
    b.worker_dir = worker_dir
    b.start(timeout=120)
    yield b
    b.close()


def _train_workers(backend: Backend, run_id: str, actor: str = "RayTrainWorker") -> list[psutil.Process]:
    """The run's Ray Train workers (or its warm rank): Ray actors working in the run's node-local folder."""
    run_dir = backend.worker_dir / run_id
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if proc.info["cwd"] == str(run_dir) and actor in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_two_worker_ddp_run_streams_metrics_and_serves_on_ray_serve(client, tmp_path):
    torch.manual_seed(0)
    run = client.train(Regressor(), max_epochs=2, accelerator="cpu", devices=2, name="ddp")
    live = list(run.events())  # followed live until the run ends
    assert [e.seq for e in live] == list(range(1, len(live) + 1))
    assert [e.data["status"] for e in live if e.kind == "status"] == ["queued", "running", "succeeded"]
    steps = [e.data["step"] for e in live if e.kind == "metric" and e.data["name"] == "train_loss"]
    # 128 rows, batches of 16, split over 2 ranks: 4 steps an epoch; rank 0 reports each one.
    assert steps == list(range(8))
    run.wait()
    assert "training on 2 Ray Train workers with Lightning's DDP" in run.logs()
    assert {"train_loss", "val_loss"} <= set(run.final_metrics)

    local = Regressor.load_from_checkpoint(run.download_checkpoint(tmp_path / "final.ckpt")).eval()
    dep = run.deploy("ddp", replicas=1, max_batch_size=8, autoscale=dict(min_replicas=1, max_replicas=2))
    try:
        assert dep.data.autoscale.max_replicas == 2
        x = torch.randn(20, 8)
        with torch.inference_mode():
            expected = local(x)
        assert torch.allclose(dep.predict(x), expected, atol=1e-6)
        rows = [dep.predict(x[i : i + 1]) for i in range(3)]
        assert torch.allclose(torch.cat(rows), expected[:3], atol=1e-6)
        with pytest.raises(aiaas.BadRequest, match=r"expected \(batch, 8\), received \(2, 3\)"):
            dep.predict(torch.zeros(2, 3))
        stats = dep.stats()
        # The bad request was refused by the API before it reached the router.
        assert stats.requests == 4 and stats.errors == 0 and stats.ready_replicas >= 1
    finally:
        dep.delete()


def test_cancel_stops_the_ray_job_and_frees_its_resources(client, ray_cluster):
    before = wait_until(ray_cluster.resources, timeout=120, what="the cluster's resources")["available"]["CPU"]
    run = client.train(Regressor(step_sleep=0.2), max_epochs=200, accelerator="cpu", devices=2, name="to-cancel")
    wait_until(lambda: len(run.metrics("train_loss")) >= 2, timeout=240, interval=0.5, what="training to start")
    run.cancel()
    with pytest.raises(aiaas.RunCancelled):
        run.wait(timeout=120)
    assert run.status is aiaas.RunStatus.cancelled
    wait_until(lambda: (now := ray_cluster.resources()) is not None and now["available"]["CPU"] == before,
               timeout=120, interval=1.0, what="the run's Ray workers to give their CPUs back")


@pytest.mark.parametrize("module", [Regressor, PLRegressor], ids=["lightning.pytorch", "pytorch_lightning"])
def test_a_killed_worker_is_retried_from_the_last_checkpoint(client, backend, module):
    """Both Lightning packages train with DDP on Ray Train and resume from its checkpoint."""
    run = client.train(module(step_sleep=0.4), max_epochs=5, accelerator="cpu", devices=2, name="killed")
    workers = wait_until(lambda: len(found := _train_workers(backend, run.id)) == 2 and found, timeout=240,
                         interval=0.5, what="the run's two Ray workers")
    # Checkpointed at each epoch's end (the backend's interval), sent to the store through the API
    # in the background: kill a worker once the third epoch runs, when at least the first epoch's
    # checkpoint is surely stored.
    wait_until(lambda: any(p.epoch == 2 for p in run.metrics("train_loss")), timeout=240, interval=0.2,
               what="the third epoch")
    workers[-1].send_signal(signal.SIGKILL)
    workers[-1].wait(timeout=10)  # it really died (psutil raises if it did not)
    assert client.run(run.id).status is aiaas.RunStatus.running
    run.wait(timeout=300)
    logs = run.logs()
    assert "resuming from its last checkpoint" in logs
    steps = [p.step for p in run.metrics("train_loss")]
    # The new group started from the checkpoint, not from step 0, and finished every step.
    assert steps.count(0) == 1 and set(steps) == set(range(20)), steps
    assert run.data.attempt == 1  # Ray Train retried inside the run; aiaas did not requeue it
    assert "training on 2 Ray Train workers with Lightning's DDP" in logs
    assert run.data.environment["lightning_package"] == ("pytorch_lightning" if module is PLRegressor else "lightning")


def test_a_one_worker_run_trains_on_the_warm_rank_and_a_killed_rank_resumes(client, backend):
    """A 1-worker CPU run skips Ray Train's per-run processes: the warm driver's rank trains it."""
    run = client.train(Regressor(step_sleep=0.2), max_epochs=3, accelerator="cpu", devices=1, name="warm")
    rank = wait_until(lambda: (found := _train_workers(backend, run.id, "WarmRank")) and found[0], timeout=240,
                      interval=0.2, what="the run's warm rank")
    # Checkpointed at each epoch's end (the backend's interval), in the background: kill the rank
    # in the second epoch, once the first epoch's checkpoint is surely written.
    wait_until(lambda: any(p.epoch == 1 and p.step >= 10 for p in run.metrics("train_loss")), timeout=240,
               interval=0.2, what="the second epoch")
    rank.send_signal(signal.SIGKILL)
    rank.wait(timeout=10)
    run.wait(timeout=300)
    logs = run.logs()
    assert "training on 1 Ray worker (a warm one" in logs
    assert "Ray restarted the run's worker; resuming from its last checkpoint" in logs
    steps = [p.step for p in run.metrics("train_loss")]
    # 128 rows in batches of 16: 8 steps an epoch. The new rank resumed, not from step 0.
    assert steps.count(0) == 1 and set(steps) == set(range(24)), steps
    assert run.data.attempt == 1  # the driver replaced the rank inside the run; aiaas did not requeue it
