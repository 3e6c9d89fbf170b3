"""Dataset pieces without a server: path rules, manifests, the node cache's LRU."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

import aiaas
from aiaas_sdk import _dataset_sources, _hashing
from aiaas_sdk._node_cache import NodeCache
from aiaas_sdk.wire_datasets import DatasetManifest, ManifestFile, check_dataset_path


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a/.."])
def test_dataset_paths_that_leave_the_folder_are_invalid(bad):
    with pytest.raises(ValueError):
        check_dataset_path(bad)
    with pytest.raises(ValidationError):
        ManifestFile(path=bad, size=0)


def test_manifest_refuses_duplicates_and_non_digests():
    with pytest.raises(ValidationError, match="twice"):
        DatasetManifest(files=[ManifestFile(path="a", size=0), ManifestFile(path="a", size=0)])
    with pytest.raises(ValidationError, match="SHA-256"):
        ManifestFile(path="a", size=1, chunks=["xyz"])


def test_the_folder_walk_refuses_what_the_path_rules_refuse(tmp_path):
    """The walk checks only what a name from the file system can get wrong (a backslash, the
    length): in a folder's name or a file's, it is refused before anything is sent."""
    (tmp_path / "ok" / "a\\b").mkdir(parents=True)
    (tmp_path / "ok" / "a\\b" / "f").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a relative path"):
        _dataset_sources.collect(tmp_path / "ok", "t")
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / ("d" * 200)).mkdir()
    deep = tmp_path / "long" / ("d" * 200)
    for _ in range(5):  # 6 x 201 characters
        deep = deep / ("d" * 200)
        deep.mkdir()
    (deep / "f").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a relative path"):
        _dataset_sources.collect(tmp_path / "long", "t")
    (tmp_path / "fine" / "x y" / "ü").mkdir(parents=True)
    (tmp_path / "fine" / "x y" / "ü" / "f.bin").write_bytes(b"x")
    assert list(_dataset_sources.collect(tmp_path / "fine", "t")[0]) == ["x y/ü/f.bin"]


def test_hashing_splits_files_into_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(_hashing, "CHUNK_BYTES", 10)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"0123456789" * 2 + b"x")
    (tmp_path / "e").write_bytes(b"")
    files, _ = _dataset_sources.collect(tmp_path, "t")
    table = _hashing.hash_files(files, parallel=2)
    assert table["e"] == (0, []) and table["d/f"][0] == 21
    assert table["d/f"][1] == [hashlib.sha256(b"0123456789").hexdigest()] * 2 + [hashlib.sha256(b"x").hexdigest()]
    pieces = _hashing.pieces_of(table, files, table)
    manifest = DatasetManifest.model_validate(_hashing.manifest_json(table, table, pieces))
    assert [f.path for f in manifest.files] == ["d/f", "e"]
    assert len(pieces) == 2 and manifest.chunk_sizes[hashlib.sha256(b"x").hexdigest()] == 1
    assert pieces[hashlib.sha256(b"x").hexdigest()] == _hashing.Piece(files["d/f"], 20, 1)


def test_data_path_on_a_worker_reads_the_run_mapping(monkeypatch, tmp_path):
    monkeypatch.setenv("AIAAS_DATASETS", f'{{"pets": "{tmp_path}", "pets:2": "{tmp_path}"}}')
    assert aiaas.data_path("pets") == tmp_path == aiaas.data_path("pets:2")
    with pytest.raises(aiaas.NotFound, match=r"datasets=\['cars'\]"):
        aiaas.data_path("cars")


def _manifest(files: dict[str, bytes]) -> tuple[DatasetManifest, dict[str, bytes]]:
    blobs = {hashlib.sha256(b).hexdigest(): b for b in files.values() if b}
    return DatasetManifest(files=[ManifestFile(path=p, size=len(b), chunks=[hashlib.sha256(b).hexdigest()] if b
                                               else []) for p, b in files.items()]), blobs


def test_a_version_the_node_cache_fails_to_build_leaves_no_lock_open(tmp_path):
    cache = NodeCache(tmp_path, max_bytes=1000)
    manifest, _ = _manifest({"x.bin": b"1" * 10})

    def lost(digest):
        raise KeyError(f"chunk {digest} is missing from the store")
        yield b""

    with pytest.raises(KeyError) as failed:
        cache.version("v9" + "0" * 62, manifest, lost)
    assert failed.value is not None  # the traceback, and the frames it holds, are alive here
    held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not [p for p in held if p.startswith(str(tmp_path)) and p.endswith(".lock")], held
    cache.close()


def test_node_cache_shares_files_and_evicts_least_recently_used(tmp_path):
    fetched: list[str] = []

    def fetch_from(blobs):
        def fetch(digest):
            fetched.append(digest)
            yield blobs[digest]
        return fetch

    cache = NodeCache(tmp_path, max_bytes=250)
    m1, b1 = _manifest({"a/x.bin": b"1" * 100, "empty": b""})
    m2, b2 = _manifest({"a/x.bin": b"1" * 100, "y.bin": b"2" * 100})
    v1 = cache.version("v1" + "0" * 62, m1, fetch_from(b1))
    v2 = cache.version("v2" + "0" * 62, m2, fetch_from(b2))
    assert (v1 / "a" / "x.bin").read_bytes() == b"1" * 100 and (v1 / "empty").read_bytes() == b""
    assert len(fetched) == 2  # x.bin travelled once for both versions
    assert os.stat(v1 / "a" / "x.bin").st_ino == os.stat(v2 / "a" / "x.bin").st_ino
    assert cache.version("v1" + "0" * 62, m1, fetch_from({})) == v1  # cached: no fetch at all

    def unparsed():
        raise AssertionError("a cached version's manifest was parsed")

    # Cached: not even its manifest is read, and a handle that built nothing does not measure the cache.
    reader = NodeCache(tmp_path, max_bytes=0)
    assert reader.version("v1" + "0" * 62, unparsed, fetch_from({})) == v1
    assert reader.evict(only_if_grew=True) == []
    reader.close()
    # A third version overflows the cache; what this process holds stays, so a fresh
    # cache (another run) evicts nothing it holds and the oldest free version goes.
    other = NodeCache(tmp_path, max_bytes=250)
    m3, b3 = _manifest({"z.bin": b"3" * 100})
    cache.close()  # the first run ended: its read locks are released
    time.sleep(0.01)
    v3 = other.version("v3" + "0" * 62, m3, fetch_from(b3))
    removed = other.evict()
    other.close()
    assert removed and v3.exists() and other.size() <= 250
    assert not Path(tmp_path / "versions" / removed[0]).exists()


@pytest.fixture
def flushed(monkeypatch) -> list[tuple[str, bool]]:
    """Each os.fsync and syncfs from now, with whether a file of the cache had its final name
    then (each call still flushes)."""
    from aiaas_sdk import _flush

    calls: list[tuple[str, bool]] = []
    real_fsync, real_syncfs = os.fsync, _flush.syncfs

    def published(root: Path) -> bool:
        return any(not p.name.startswith(".") for p in (root / "files").rglob("*") if p.is_file())

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        calls.append((path.name, published(path.parents[2])))
        real_fsync(fd)

    def syncfs(path) -> None:
        calls.append(("syncfs", published(Path(path))))
        real_syncfs(path)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(_flush, "syncfs", syncfs)
    return calls


def _fetch(blobs: dict[str, bytes]):
    def fetch(digest):
        yield blobs[digest]
    return fetch


def test_the_node_cache_flushes_a_versions_files_before_naming_them(tmp_path, flushed):
    """After a power cut a run must find a version's files whole or not at all: each file is on
    disk before its final name (and the version's) exists. A few files: an fsync each, under
    their temporary names; many: one syncfs."""
    cache = NodeCache(tmp_path / "few", max_bytes=10**6)
    manifest, blobs = _manifest({"a.bin": b"1" * 10, "d/b.bin": b"2" * 20, "empty": b""})
    version = cache.version("f1" + "0" * 62, manifest, _fetch(blobs))
    assert (version / "d" / "b.bin").read_bytes() == b"2" * 20
    assert len(flushed) == 3 and all(name.endswith(".tmp") and not named for name, named in flushed), flushed
    cache.close()

    flushed.clear()
    many = NodeCache(tmp_path / "many", max_bytes=10**6)
    manifest, blobs = _manifest({f"f{i}.bin": str(i).encode() * 8 for i in range(40)})
    version = many.version("f2" + "0" * 62, manifest, _fetch(blobs))
    assert (version / "f39.bin").read_bytes() == b"39" * 8
    assert flushed == [("syncfs", False)]
    many.close()


def test_a_file_a_power_cut_left_short_is_fetched_again(tmp_path):
    """A cache written before files were flushed may hold one cut short (empty, on ext4): a
    version that needs it fetches it again instead of linking the short one."""
    cache = NodeCache(tmp_path, max_bytes=10**6)
    manifest, blobs = _manifest({"x.bin": b"7" * 50})
    first = cache.version("s1" + "0" * 62, manifest, _fetch(blobs))
    stored = next(p for p in (tmp_path / "files").rglob("*") if p.is_file())
    os.chmod(stored, 0o644)
    os.truncate(stored, 0)  # what the cut leaves
    assert (first / "x.bin").read_bytes() == b""
    fetched: list[str] = []

    def fetch(digest):
        fetched.append(digest)
        yield blobs[digest]

    again, _ = _manifest({"y/x.bin": b"7" * 50})  # another version with the same file
    version = cache.version("s2" + "0" * 62, again, fetch)
    assert fetched and (version / "y" / "x.bin").read_bytes() == b"7" * 50
    cache.close()


def test_a_failed_build_leaves_no_temporary_files(tmp_path):
    """One corrupted chunk among many: no version, no temporary file; the files fetched whole
    meanwhile are kept (flushed), and the next try fetches only the one that failed."""
    from aiaas_sdk._node_cache import ChunkCorrupted

    cache = NodeCache(tmp_path, max_bytes=10**6)
    manifest, blobs = _manifest({f"f{i}.bin": str(i).encode() * 8 for i in range(20)})
    bad = hashlib.sha256(b"7" * 8).hexdigest()
    blobs[bad] = b"garbage!"
    with pytest.raises(ChunkCorrupted, match="f7.bin arrived corrupted"):
        cache.version("c1" + "0" * 62, manifest, _fetch(blobs))
    left = [p for p in (tmp_path / "files").rglob("*") if p.is_file()]
    assert len(left) == 19 and not [p for p in left if p.name.startswith(".")], left
    assert not list((tmp_path / "versions").iterdir())
    blobs[bad] = b"7" * 8
    fetched: list[str] = []

    def fetch(digest):
        fetched.append(digest)
        yield blobs[digest]

    version = cache.version("c1" + "0" * 62, manifest, fetch)
    assert fetched == [bad] and (version / "f7.bin").read_bytes() == b"7" * 8
    cache.close()
