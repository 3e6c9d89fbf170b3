"""Dataset chunk intake over real HTTP: batches are all or nothing, PUTs are idempotent under concurrency.

``check_chunk_intake`` also runs against PostgreSQL (test_datasets.py), where the rows go in
through a different dialect's INSERT ... ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import httpx


def _frame(chunks: list[bytes], digests: list[str] | None = None) -> bytes:
    digests = digests or [hashlib.sha256(c).hexdigest() for c in chunks]
    return b"".join(d.encode() + len(c).to_bytes(8, "big") + c for d, c in zip(digests, chunks, strict=True))


def check_chunk_intake(url: str, key: str) -> None:
    """Batches are all-or-nothing, and the same chunk sent many times at once is kept once."""
    auth = {"Authorization": f"Bearer {key}"}

    def used() -> int:
        return httpx.get(f"{url}/v1/datasets", headers=auth).json()["used_bytes"]

    before = used()
    good, bad = os.urandom(1000), os.urandom(2000)
    resp = httpx.post(f"{url}/v1/datasets/chunks", headers=auth,
                      content=_frame([good, bad], [hashlib.sha256(good).hexdigest(), "0" * 64]))
    assert resp.status_code == 400 and resp.json()["code"] == "chunk_hash_mismatch"
    assert used() == before  # the good chunk of a refused batch is not recorded either
    resp = httpx.post(f"{url}/v1/datasets/chunks", headers=auth, content=_frame([good])[:-10])
    assert resp.status_code == 400 and resp.json()["code"] == "bad_batch"
    digest = hashlib.sha256(good).hexdigest()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.put(f"{url}/v1/datasets/chunks/{digest}", content=good,
                                                  headers=auth, timeout=60).status_code, range(16)))
    assert codes == [200] * 16 and used() == before + len(good)


def test_chunk_batches_are_all_or_nothing_and_concurrent_puts_keep_one_copy(backend):
    check_chunk_intake(backend.url, backend.new_key("intake"))
