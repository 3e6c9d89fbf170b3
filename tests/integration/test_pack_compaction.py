"""Deleting a dataset frees the space of its small files even when a kept chunk shares their pack:
the pack is rewritten with what is kept (a real server, a real directory store; the same check
runs against SeaweedFS in test_other_stores.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx

from aiaas_backend.store import FileStore, Store

from ..conftest import Backend, wait_until

TRAINS = False  # no run here: no warm worker needed


def packs_of(store: Store) -> dict[str, bytes]:
    return {key: store.get_bytes(key) for key in store.list("packs/")}


def check_deleted_chunks_leave_their_pack(backend: Backend, store: Store, tmp_path: Path) -> None:
    """Alice's 30 small files and one that Bob uploads too travel in one pack; once Alice deletes
    her dataset, the pack is rewritten holding only the shared file's chunk, which Bob still reads."""
    alice = backend.client(backend.new_key("alice-packs"))
    bob_key = backend.new_key("bob-packs")
    bob = backend.client(bob_key)
    shared = os.urandom(6000)
    mine = tmp_path / "mine"
    mine.mkdir()
    for i in range(30):
        (mine / f"{i}.bin").write_bytes(os.urandom(6000))
    (mine / "shared.bin").write_bytes(shared)
    before = set(packs_of(store))
    version = alice.upload("mine", mine, progress=False)
    written = {k: v for k, v in packs_of(store).items() if k not in before}
    assert len(written) == 1 and len(next(iter(written.values()))) == 31 * 6000  # one pack, all 31
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "shared.bin").write_bytes(shared)
    bob.upload("theirs", theirs, progress=False)
    assert set(packs_of(store)) == before | set(written)  # Bob's copy is the one already stored

    version.delete()
    # The old pack goes; a new one holds only what Bob keeps.
    after = wait_until(lambda: (lambda now: now if set(written) & set(now) == set() else None)(
        {k: v for k, v in packs_of(store).items() if k not in before}), timeout=30, what="the pack's compaction")
    assert list(after.values()) == [shared]
    digest = hashlib.sha256(shared).hexdigest()
    resp = httpx.get(f"{backend.url}/v1/datasets/theirs/chunks/{digest}",
                     headers={"Authorization": f"Bearer {bob_key}"}, timeout=30)
    assert resp.status_code == 200 and resp.content == shared


def test_a_deleted_datasets_small_files_leave_a_shared_pack(make_backend, tmp_path):
    backend = make_backend(name="compact", AIAAS_METRICS_LOOPBACK="true")
    check_deleted_chunks_leave_their_pack(backend, FileStore(backend.data_dir / "store"), tmp_path)
    scraped = httpx.get(f"{backend.url}/metrics", timeout=30).text
    assert "aiaas_dataset_packs_compacted_total 1.0" in scraped
    assert f"aiaas_dataset_compaction_freed_bytes_total {30 * 6000:.1f}" in scraped


def test_store_compact_rewrites_every_sparse_pack(make_backend, tmp_path):
    """`aiaas store compact` finds sparse packs no deletion handed over (a backend that stopped
    before compacting, a store an older aiaas wrote), while the backend runs."""
    backend = make_backend(name="compact-cli")
    client = backend.client()
    store = FileStore(backend.data_dir / "store")
    folder = tmp_path / "data"
    folder.mkdir()
    kept = os.urandom(5000)
    (folder / "kept.bin").write_bytes(kept)
    for i in range(9):
        (folder / f"{i}.bin").write_bytes(os.urandom(5000))
    v1 = client.upload("d", folder, progress=False)
    (pack, whole), = packs_of(store).items()
    assert len(whole) == 50_000
    for i in range(9):
        (folder / f"{i}.bin").unlink()
    client.upload("d", folder, progress=False)  # version 2: kept.bin alone, nothing sent
    # What a deletion leaves when its compaction never ran: the rows of the deleted chunks gone,
    # the pack as it was. (Deleting version 1 here would hand the pack to the backend's own
    # compactor; instead the pack is put back as it was after that compaction.)
    v1.delete()
    wait_until(lambda: pack not in packs_of(store), timeout=30, what="the backend's compaction")
    (moved, data), = packs_of(store).items()
    assert data == kept
    # Put the sparse pack back under the key the rows now name: the same state, reached without a deletion.
    store.put_bytes(moved, kept + whole.replace(kept, b""))
    out = subprocess.run([sys.executable, "-m", "aiaas_backend", "store", "compact", "--data-dir",
                          str(backend.data_dir)], capture_output=True, text=True, env=backend.env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rewrote 1 pack(s) of 50,000 bytes" in out.stdout and "45,000 bytes freed" in out.stdout
    assert list(packs_of(store).values()) == [kept]
    assert client.dataset("d").files == 1
    out = subprocess.run([sys.executable, "-m", "aiaas_backend", "store", "compact", "--data-dir",
                          str(backend.data_dir)], capture_output=True, text=True, env=backend.env, timeout=120)
    assert "rewrote 0 pack(s)" in out.stdout  # nothing left to do
