"""The commit's manifest builder (backend manifests.py) against the plain definitions it replaces:
the digest of the canonical JSON and the row's json.dumps, for awkward paths too."""

from __future__ import annotations

import hashlib
import json
import random

from aiaas_backend import datasets as ds
from aiaas_backend import manifests
from aiaas_backend.db import encode_json


def _files(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    odd = ['quo"te', "back\\slash", "ünïcödé/日本", "tab\there", "emoji😀", "ctl\x01", "sp ace/x, {y}: z"]
    out = []
    for i in range(n):
        path = f"d{i % 7}/{odd[i % len(odd)]}-{i:05d}.bin" if i % 3 == 0 else f"d{i % 7}/f{i:05d}.bin"
        chunks = [hashlib.sha256(f"{seed}-{i}-{k}".encode()).hexdigest() for k in range(rng.choice([0, 1, 1, 3]))]
        out.append({"path": path, "size": rng.randint(0, 10**10) if chunks else 0, "chunks": chunks})
    rng.shuffle(out)
    return out


def _plain(files: list[dict]) -> tuple[str, str]:
    """What the commit did before: digest of the canonical form, and the row's JSON text."""
    ordered = sorted(files, key=lambda f: f["path"])
    return ds.manifest_digest({"files": ordered}), json.dumps({"files": ordered})


def test_whole_manifest_has_the_plain_digest_and_row_text():
    for seed in range(3):
        files = _files(500, seed)
        built = manifests.whole(files)
        row = built.row()
        digest, text = _plain(files)
        assert built.digest == digest
        assert encode_json(row) == text  # the row is written as the same bytes json.dumps gives
        assert json.loads(encode_json(row)) == dict(row) == {"files": sorted(files, key=lambda f: f["path"])}
        assert built.bytes == sum(f["size"] for f in files)
    assert manifests.whole([]).digest == ds.manifest_digest({"files": []})


def test_a_change_applied_equals_the_whole_manifest_built_from_scratch():
    rng = random.Random(7)
    files = _files(800, 1)
    base = manifests.whole(files)
    by_path = {f["path"]: f for f in files}
    removed = rng.sample(sorted(by_path), 40)
    changed = [{**by_path[p], "size": by_path[p]["size"] + 1} for p in rng.sample(sorted(set(by_path) - set(removed)), 30)]
    added = _files(25, 9)
    for f in added:
        f["path"] = "new/" + f["path"]
    result = manifests.apply(base, changed + added, removed)
    expected = {**{p: f for p, f in by_path.items() if p not in removed}, **{f["path"]: f for f in changed + added}}
    digest, text = _plain(list(expected.values()))
    assert result.digest == digest and encode_json(result.row()) == text
    assert base.digest == _plain(files)[0]  # the base is untouched
    # Only replacing files (no path added or gone) keeps the base's order, and is still right.
    replaced = manifests.apply(base, changed, [])
    assert replaced.digest == _plain(list({**by_path, **{f["path"]: f for f in changed}}.values()))[0]
    # A change that changes nothing has the base's digest.
    assert manifests.apply(base, [by_path[p] for p in sorted(by_path)[:10]], []).digest == base.digest


def test_the_cache_is_by_digest_and_bounded(monkeypatch):
    monkeypatch.setattr(manifests, "CACHE_FILES", 1000)
    monkeypatch.setattr(manifests, "_cache", type(manifests._cache)())
    a, b, c = (manifests.whole(_files(400, seed)) for seed in (11, 12, 13))
    for m in (a, b, c):
        manifests.remember(m)
    assert manifests.cached(a.digest) is None  # the oldest went past 1,000 files
    assert manifests.cached(b.digest) is b and manifests.cached(c.digest) is c
    manifests.remember(manifests.whole(_files(1001, 14)))  # larger than the whole cache: not kept
    assert manifests.cached(c.digest) is c


def test_encode_json_encodes_plain_values_as_before():
    value = {"a": [1, "ü", None], "b": {"c": True}}
    assert encode_json(value) == json.dumps(value)
