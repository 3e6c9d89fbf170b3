"""The other stores and executors: dataset chunks (and their packs' compaction) and a local run's
final files in a real S3-compatible server (SeaweedFS), datasets on PostgreSQL, a Ray Train
worker reading a dataset through the API."""

from __future__ import annotations

import os

import pytest
import torch

import aiaas

from ..conftest import Backend, wait_until
from .models import Regressor
from .test_datasets import DataReader, _digests, _make_folder, _run_digests


@pytest.fixture(scope="module")
def s3_backend(s3_server, tmp_path_factory):
    backend = Backend(tmp_path_factory.mktemp("on-s3"), env=s3_server.env("s3://aiaas-datasets/team-a")).start()
    yield backend
    backend.close()


def test_s3_store_round_trip(s3_backend, s3_server, tmp_path):
    """The same journey with the chunks in a real S3-compatible server (SeaweedFS)."""
    import boto3

    from ..s3_server import ACCESS_KEY, SECRET_KEY

    backend = s3_backend
    client = backend.client()
    folder = _make_folder(tmp_path / "pets", big_chunks=2.5)
    ds = client.upload("pets", folder, progress=False)
    assert (ds.version, ds.files, ds.sent_chunks) == (1, 5, 6)
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=ACCESS_KEY,
                      aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    def keys(kind: str) -> list[str]:
        listed = s3.list_objects_v2(Bucket="aiaas-datasets", Prefix=f"team-a/{kind}/")
        return [o["Key"] for o in listed.get("Contents", [])]

    # big.bin's two full chunks are blobs; the three small files and its short tail, one pack
    # (they travelled in one request); the empty file has no chunk.
    assert (len(keys("blobs")), len(keys("packs"))) == (2, 1)
    assert not (backend.data_dir / "store").exists()
    run = client.train(DataReader("pets"), datasets=["pets"], max_epochs=1).wait()
    assert _run_digests(run)["files"] == _digests(folder)  # packed chunks read by ranges
    ds.delete()
    assert keys("blobs") == keys("packs") == []


def test_a_local_runs_final_files_reach_the_store_and_come_back(s3_backend, s3_server, tmp_path):
    """Once a local run succeeded its final files are in the store (on S3, the durable copy): a
    backend whose data dir lost them deploys and downloads the run again from there."""
    from aiaas_backend.store.s3 import S3Store

    from ..s3_server import ACCESS_KEY, SECRET_KEY

    backend = s3_backend
    store = S3Store("s3://aiaas-datasets/team-a", endpoint_url=s3_server.endpoint, access_key_id=ACCESS_KEY,
                    secret_access_key=SECRET_KEY)
    run = backend.client().train(Regressor(), max_epochs=1).wait()
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


def test_a_deleted_datasets_small_files_leave_a_shared_pack_on_s3(s3_backend, s3_server, tmp_path):
    from aiaas_backend.store.s3 import S3Store

    from ..s3_server import ACCESS_KEY, SECRET_KEY
    from .test_pack_compaction import check_deleted_chunks_leave_their_pack

    store = S3Store("s3://aiaas-datasets/team-a", endpoint_url=s3_server.endpoint, access_key_id=ACCESS_KEY,
                    secret_access_key=SECRET_KEY)
    check_deleted_chunks_leave_their_pack(s3_backend, store, tmp_path)


@pytest.mark.postgres
def test_datasets_on_postgres(make_backend, tmp_path):
    from .test_postgres import _admin, psycopg  # noqa: F401 - skips when there is no PostgreSQL

    name = f"aiaas_test_{os.urandom(5).hex()}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        backend = make_backend(name="pg", AIAAS_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        client = backend.client()
        folder = _make_folder(tmp_path / "pets", big_chunks=1.5)
        first = client.upload("pets", folder, progress=False)
        (folder / "labels.csv").write_text("changed\n")
        second = client.upload("pets", folder, progress=False)
        assert (first.version, second.version, second.sent_chunks) == (1, 2, 1)
        run = client.train(DataReader("pets"), datasets=["pets:2"], max_epochs=1).wait()
        assert run.datasets == ["pets:2"] and _run_digests(run)["files"] == _digests(folder)
        first.delete()
        assert [d.ref for d in client.datasets()] == ["pets:2"]
        from .test_dataset_chunks import check_chunk_intake

        check_chunk_intake(backend.url, backend.key)
        with pytest.raises(aiaas.BadRequest, match="in use by run") as info:
            run = client.train(Regressor(step_sleep=0.05), datasets=["pets:2"], max_epochs=100)
            second.delete()
        assert info.value.status_code == 409
        run.cancel()
        bob = backend.client(backend.new_key("bob-pg"))
        with pytest.raises(aiaas.NotFound, match="no dataset 'pets"):
            bob.dataset("pets")
        from aiaas_backend.store import FileStore

        from .test_pack_compaction import check_deleted_chunks_leave_their_pack

        check_deleted_chunks_leave_their_pack(backend, FileStore(backend.data_dir / "store"), tmp_path)
        from .test_dataset_sweep import check_an_interrupted_upload_started_again

        check_an_interrupted_upload_started_again(backend, tmp_path)
    finally:
        backend.close()
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.timeout(600)  # a Ray cluster, SeaweedFS and a Ray Train job on a small shared machine
def test_ray_run_reads_a_dataset_from_the_object_store(ray_cluster, s3_server, tmp_path):
    """A Ray Train worker reads a dataset whose chunks live in S3-compatible storage, fetched
    through the API into its node's cache (no shared file system, no store credentials)."""
    backend = Backend(tmp_path / "ray-backend", slots=1, ray_address=ray_cluster.address,
                      env={**s3_server.env("s3://aiaas-ray/data"), "AIAAS_RAY_CPUS_PER_REPLICA": "0.5"})
    backend.start(timeout=120)
    try:
        client = backend.client()
        folder = _make_folder(tmp_path / "pets", big_chunks=1.5)
        client.upload("pets", folder, progress=False)
        run = client.train(DataReader("pets"), datasets=["pets"], max_epochs=1, accelerator="cpu").wait()
        assert run.datasets == ["pets:1"] and _run_digests(run)["files"] == _digests(folder)
    finally:
        backend.close()
