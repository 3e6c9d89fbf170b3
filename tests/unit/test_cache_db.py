"""The SDK's cache database connections are kept between uploads of a process (closing one costs
SQLite's checkpoint), one per upload at a time, never shared with a forked child."""

from __future__ import annotations

import os

import pytest

from aiaas_sdk._hashing import cache_db


def test_a_connection_is_kept_for_the_next_upload_and_not_shared_by_two_at_once(tmp_path):
    path = tmp_path / "cache.sqlite"
    with cache_db(path) as first:
        first.execute("CREATE TABLE t (x)")
        with cache_db(path) as second:
            assert second is not first  # two uploads at once: one connection each
    with cache_db(path) as again:
        assert again in (first, second)
        again.execute("INSERT INTO t VALUES (1)")
        again.commit()


def test_a_connection_an_upload_failed_with_is_closed_not_kept(tmp_path):
    path = tmp_path / "cache.sqlite"
    with pytest.raises(RuntimeError), cache_db(path) as broken:
        broken.execute("CREATE TABLE t (x)")
        broken.execute("BEGIN")
        broken.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("the upload failed")
    with cache_db(path) as fresh:
        assert fresh is not broken
        assert fresh.execute("SELECT count(*) FROM t").fetchone() == (0,)  # its open transaction went


def test_only_the_last_data_dirs_connections_are_kept(tmp_path):
    with cache_db(tmp_path / "a.sqlite") as a:
        pass
    with cache_db(tmp_path / "b.sqlite"):
        pass
    with cache_db(tmp_path / "a.sqlite") as a_again:
        assert a_again is not a
    with pytest.raises(Exception, match="closed"):
        a.execute("SELECT 1")


def test_a_forked_child_opens_its_own(tmp_path):
    path = tmp_path / "cache.sqlite"
    with cache_db(path) as parents:
        parents.execute("CREATE TABLE t (x)")
    pid = os.fork()
    if pid == 0:  # the child: never the parent's connection, and it must not close it either
        ok = False
        try:
            with cache_db(path) as mine:
                ok = mine is not parents and mine.execute("SELECT count(*) FROM t").fetchone() == (0,)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with cache_db(path) as again:
        assert again is parents and again.execute("SELECT count(*) FROM t").fetchone() == (0,)
