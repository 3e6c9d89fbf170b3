"""A local run's final files go into the store once it succeeded (on S3, the durable copy): a
backend whose data dir lost them deploys and downloads the run again from the store."""

from __future__ import annotations

import os
import uuid

import torch
from aiaas_backend.store.s3 import S3Store

from ..conftest import wait_until
from ..s3_server import ACCESS_KEY, SECRET_KEY
from .models import Regressor


def test_a_local_runs_final_files_reach_the_store_and_come_back(make_backend, s3_server, tmp_path):
    prefix = f"s3://aiaas-local-runs/{uuid.uuid4().hex[:8]}"
    backend = make_backend(name="local-on-s3", **s3_server.env(prefix))
    store = S3Store(prefix, endpoint_url=s3_server.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    client = backend.client()
    model = Regressor()
    run = client.train(model, max_epochs=1).wait()
    names = ("weights.pt", "final.ckpt")
    wait_until(lambda: all(store.exists(f"runs/{run.id}/{n}") for n in names), timeout=30,
               what="the run's final files in the S3 store")
    folder = backend.data_dir / "artifacts" / "runs" / run.id
    want = {n: (folder / n).read_bytes() for n in names}
    for n in names:
        with store.open(f"runs/{run.id}/{n}") as stored:
            assert stored.read() == want[n]
        os.unlink(folder / n)  # the data dir lost them (a disk replaced, a server moved)

    got = run.download_checkpoint(tmp_path / "final.ckpt")
    assert got.read_bytes() == want["final.ckpt"]
    dep = run.deploy("from-the-store")
    try:
        x = torch.randn(3, 8)
        assert dep.predict(x).shape == (3, 1)
        assert (folder / "weights.pt").read_bytes() == want["weights.pt"]  # brought back from the store
    finally:
        dep.delete()
