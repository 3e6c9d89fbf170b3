"""Ray workers that do not share the API's data dir: their run's files go through the API into the store.

The backend keeps its store on a real S3-compatible server (SeaweedFS) and tells its
Ray workers to work in a folder of their own (``AIAAS_RAY_WORKER_DIR``) that is not
its data dir; the driver gives them no path into that dir. Everything a worker needs
or leaves -- the code, checkpoints, final weights -- must travel through the API.
"""

from __future__ import annotations

import io
import signal
import uuid

import psutil
import pytest
import torch
from aiaas_backend.store.s3 import S3Store

from ..conftest import Backend, wait_until
from ..s3_server import ACCESS_KEY, SECRET_KEY
from .hostile import FileThief
from .models import Regressor


@pytest.fixture(scope="module")
def setup(ray_cluster, s3_server, tmp_path_factory):
    prefix = f"s3://aiaas-runs/{uuid.uuid4().hex[:8]}"
    worker_dir = tmp_path_factory.mktemp("ray-node-local")
    data_dir = tmp_path_factory.mktemp("ray-store-backend")
    env = {**s3_server.env(prefix), "AIAAS_RAY_WORKER_DIR": str(worker_dir),
           # A checkpoint at the first epoch end after this interval: here, every epoch.
           "AIAAS_CHECKPOINT_EVERY_S": "0.5", "AIAAS_RAY_CPUS_PER_REPLICA": "0.5"}
    backend = Backend(data_dir, slots=1, env=env, ray_address=ray_cluster.address)
    backend.start(timeout=120)
    store = S3Store(prefix, endpoint_url=s3_server.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    yield backend, store, worker_dir, env
    backend.close()


def _rank(worker_dir, run_id):
    """The run's warm rank: the Ray actor working in the run's folder of the node-local dir."""
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if proc.info["cwd"] == str(worker_dir / run_id) and "WarmRank" in " ".join(proc.info["cmdline"] or []):
                return proc
        except psutil.Error:
            pass
    return None


def test_a_ray_run_stores_checkpoints_and_weights_through_the_api_and_resumes_from_them(setup, tmp_path):
    backend, store, worker_dir, _env = setup
    client = backend.client()
    run = client.train(Regressor(step_sleep=0.2), max_epochs=3, accelerator="cpu", devices=1, name="stored")
    rank = wait_until(lambda: _rank(worker_dir, run.id), timeout=240, interval=0.2, what="the run's warm rank")
    key = f"runs/{run.id}/resume/last.ckpt"
    # The first epoch's checkpoint reached the S3 store through the API: then kill the rank.
    wait_until(lambda: store.exists(key), timeout=240, interval=0.2, what="a checkpoint in the store")
    first = torch.load(io.BytesIO(store.get_bytes(key)), weights_only=False)
    assert first["epoch"] == 0
    rank.send_signal(signal.SIGKILL)
    rank.wait(timeout=10)
    run.wait(timeout=300)

    logs = run.logs()
    assert "resuming from its last checkpoint (fetched from the store through the API)" in logs
    assert "final checkpoint and weights stored through the API" in logs
    steps = [p.step for p in run.metrics("train_loss")]
    # 8 steps an epoch: the replacement rank started from the stored checkpoint, not from step 0.
    assert steps.count(0) == 1 and set(steps) == set(range(24)), steps
    assert run.data.attempt == 1
    # The rank worked in the node-local folder (its output is there); once the run's end reached
    # the API, the folder was emptied but for its output and result.
    node_folder = worker_dir / run.id
    assert "final checkpoint and weights stored" in (node_folder / "output.log").read_text()
    assert sorted(p.name for p in node_folder.iterdir()) == ["output.log", "result-1.json"]

    # The final files are in the store, and the API's copies are the same bytes.
    weights = store.get_bytes(f"runs/{run.id}/weights.pt")
    assert weights == run.download_checkpoint(tmp_path / "w.pt", kind="weights").read_bytes()
    final = store.get_bytes(f"runs/{run.id}/final.ckpt")
    assert final == run.download_checkpoint(tmp_path / "final.ckpt").read_bytes()
    assert torch.load(io.BytesIO(store.get_bytes(key)), weights_only=False)["epoch"] == 2  # the last epoch's checkpoint


def test_a_run_token_reaches_only_its_own_runs_files(setup):
    backend, store, _worker_dir, _env = setup
    client = backend.client()
    victim = client.train(Regressor(), max_epochs=1, accelerator="cpu", devices=1, name="victim").wait()
    before = store.get_bytes(f"runs/{victim.id}/weights.pt")
    thief = client.train(FileThief(victim.id), max_epochs=1, accelerator="cpu", devices=1, name="thief").wait()
    probes = {line.split(":", 1)[0][len("PROBE "):]: line.split(":", 1)[1].split()[0]
              for line in thief.logs().splitlines() if line.startswith("PROBE ")}
    assert probes == {
        "own_code": "200",             # the token works for its own run
        "other_code": "401",           # ... and for no other
        "other_checkpoint": "401",
        "other_weights_write": "401",
        "own_code_write": "404",       # a worker sends checkpoints and weights, never code
        "own_bad_digest": "400",       # bytes that do not match their digest replace nothing
        "own_other_file": "404",       # only the run's stored files, not its folder
    }, probes
    assert store.get_bytes(f"runs/{victim.id}/weights.pt") == before
    assert store.exists(f"runs/{thief.id}/weights.pt")


def test_local_serving_deploys_a_ray_runs_weights_from_the_store(setup, tmp_path):
    """The Ray backend stops; a local one on the same data dir and store serves the run, its
    weights brought back from S3 (the run's folder lost them)."""
    backend, store, _worker_dir, env = setup
    client = backend.client()
    torch.manual_seed(0)
    run = client.train(Regressor(), max_epochs=2, accelerator="cpu", devices=1, name="to-serve").wait()
    reference = Regressor.load_from_checkpoint(run.download_checkpoint(tmp_path / "final.ckpt")).eval()
    backend.stop()
    folder = backend.data_dir / "artifacts" / "runs" / run.id
    for name in ("weights.pt", "final.ckpt"):
        (folder / name).unlink()

    local = Backend(backend.data_dir, slots=1, env={k: v for k, v in env.items() if k.startswith("AIAAS_S")})
    local.start(timeout=120)
    try:
        dep = local.client().run(run.id).deploy("from-store", replicas=1)
        x = torch.randn(16, 8)
        with torch.inference_mode():
            expected = reference(x)
        assert torch.allclose(dep.predict(x), expected, atol=1e-6)
        assert (folder / "weights.pt").read_bytes() == store.get_bytes(f"runs/{run.id}/weights.pt")
        dep.delete()
    finally:
        local.close()

