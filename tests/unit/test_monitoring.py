"""Drift statistics and scores, alert windows and transitions, webhook signatures: the pure parts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from types import SimpleNamespace

import numpy as np
import pytest

from aiaas_backend.monitoring import alerts, drift
from aiaas_backend.monitoring.webhook import sign
from aiaas_backend.serving.router import Stats


def _stats(rows: np.ndarray) -> dict:
    sample = drift.TrainingSample()
    sample.add(rows)
    stats = sample.stats()
    assert drift.check_stats(stats) is stats
    return stats


def test_wide_rows_are_pooled_to_a_bounded_number_of_features():
    images = np.arange(2 * 3 * 28 * 28, dtype=np.float32).reshape(2, 3, 28, 28)
    f = drift.features(images)
    assert f.shape == (2, drift.MAX_FEATURES)
    assert np.isclose(f[0].mean(), images[0].mean(), rtol=1e-2)  # blocks of near-equal size
    assert drift.features(np.array(["a", "b"])) is None
    assert drift.features(np.ones((3, 4), dtype=np.int64)).shape == (3, 4)


def test_recent_sample_keeps_one_row_in_n_across_requests():
    sample = drift.RecentSample(every=4)
    for start in range(0, 100, 7):  # requests of 7 rows
        rows = np.arange(start, min(start + 7, 100), dtype=np.float32)[:, None]
        sample.add(rows)
    kept, width = sample.rows()
    assert width == 1 and kept[:, 0].tolist() == list(range(0, 100, 4))


def test_unshifted_inputs_score_low_and_shifted_ones_high():
    rng = np.random.default_rng(0)
    stats = _stats(rng.normal(size=(5000, 8)))
    same = drift.report(stats, drift.features(rng.normal(size=(2048, 8))), 8)
    assert same["score"] < 0.05 and len(same["features"]) == 8
    moved = rng.normal(size=(2048, 8))
    moved[:, 3] += 2.0  # one feature moves by two standard deviations
    report = drift.report(stats, drift.features(moved), 8)
    assert report["score"] > 1.0
    worst = max(report["features"], key=lambda f: f["score"])
    assert worst["index"] == 3 and 1.8 < worst["shift_std"] < 2.2


def test_a_report_says_why_there_is_no_score():
    rng = np.random.default_rng(1)
    assert drift.report(None, np.empty((0, 0)), 0)["note"].startswith("the served run recorded no training")
    stats = _stats(rng.normal(size=(500, 4)))
    few = drift.report(stats, rng.normal(size=(10, 4)), 4)
    assert few["score"] is None and "10 of the 256" in few["note"]
    other = drift.report(stats, rng.normal(size=(300, 6)), 6)
    assert other["score"] is None and "6 values" in other["note"]


def test_worker_reports_of_the_wrong_shape_are_refused():
    assert drift.check_stats({"version": 1, "mean": [1.0]}) is None
    assert drift.check_stats("nonsense") is None
    assert drift.check_stats(None) is None


def _router(stats: Stats, queued: int = 0) -> SimpleNamespace:
    return SimpleNamespace(stats=stats, queue=SimpleNamespace(qsize=lambda: queued))


def test_latency_rule_breaches_in_the_window_and_resolves_when_requests_stop():
    import time

    stats = Stats()
    window = alerts.Window()
    now = time.perf_counter()
    for i in range(50):
        stats.latencies_ms.append(100.0 if i % 10 == 0 else 5.0)
        stats.finished.append(now)
        stats.requests += 1
    values = alerts.figures(_router(stats), 100, window, 30.0, None)
    assert values["p99_ms"] == 100.0 and values["error_rate"] is None  # one snapshot: no rate yet
    raised, resolved = alerts.transitions({"p99_ms": 50.0}, {}, values)
    assert raised == ["p99_ms"] and resolved == []
    # Later, with nothing in the window: no figure, so the firing rule resolves.
    time.sleep(0.02)
    values = alerts.figures(_router(stats), 100, window, 0.001, None)
    assert values["p99_ms"] is None
    assert alerts.transitions({"p99_ms": 50.0}, {"p99_ms": {}}, values) == ([], ["p99_ms"])
    # A rule removed while firing resolves too.
    assert alerts.transitions({}, {"drift": {}}, {"drift": 3.0}) == ([], ["drift"])


def test_error_rate_and_queue_saturation_come_from_the_window():
    stats, window = Stats(), alerts.Window()
    alerts.figures(_router(stats, queued=0), 10, window, 30.0, None, now=100.0)
    stats.requests, stats.errors = 40, 4
    values = alerts.figures(_router(stats, queued=10), 10, window, 30.0, None, now=101.0)
    assert values["error_rate"] == pytest.approx(0.1)
    assert values["queue_saturation"] == pytest.approx(0.5)  # mean of 0 and 1
    values = alerts.figures(_router(stats, queued=10), 10, window, 30.0, None, now=200.0)
    assert values["error_rate"] is None and values["queue_saturation"] == 1.0  # the old snapshots left the window


def test_the_signature_is_hmac_sha256_of_the_body():
    body = b'{"kind":"alert_raised"}'
    assert sign("s3cret-s3cret-s3cret", body) == "sha256=" + hmac.new(
        b"s3cret-s3cret-s3cret", body, hashlib.sha256).hexdigest()


def test_a_full_sender_drops_instead_of_blocking(monkeypatch):
    from aiaas_backend.monitoring import webhook

    monkeypatch.setattr(webhook, "MAX_PENDING", 2)

    async def go() -> int:
        sender = webhook.WebhookSender(attempts=1, timeout_s=0.1)
        # Port 9 on loopback: nothing listens, so each delivery fails fast after the test.
        for _ in range(5):
            sender.send("http://127.0.0.1:9/", "k" * 16, {"kind": "alert_raised"})
        pending = sender.pending
        await sender.close()
        return pending

    assert asyncio.run(go()) == 2


def test_training_inputs_it_cannot_use_give_no_statistics_rather_than_wrong_ones():
    sample = drift.TrainingSample()
    sample.add(np.array([[1.0, np.nan], [2.0, 3.0]]))
    assert sample.stats() is None
    sample = drift.TrainingSample()
    sample.add(np.ones((4, 2)))
    sample.give_up()
    assert sample.full and sample.stats() is None
    sample = drift.TrainingSample()
    sample.add(np.ones((drift.TRAIN_ROWS + 5, 2), dtype=np.int64))  # more than it keeps
    assert sample.full and sample.stats()["rows"] == drift.TRAIN_ROWS


def test_recent_sample_keeps_only_the_latest_rows():
    sample = drift.RecentSample(every=1)
    for start in range(0, 3000, 100):
        sample.add(np.arange(start, start + 100, dtype=np.float64)[:, None])
    kept, _ = sample.rows()
    assert sorted(kept[:, 0].tolist()) == list(range(3000 - drift.RECENT_ROWS, 3000))


def test_window_percentiles_match_dep_stats_definition_and_the_window_is_a_suffix():
    import random
    import time

    stats = Stats()
    now = time.perf_counter()
    values = [random.Random(i).random() * 100 for i in range(3000)]
    for i, ms in enumerate(values):
        stats.latencies_ms.append(ms)
        stats.finished.append(now - 60 + i * 0.02)  # the last 2,500 finished within the last 50 s
    recent = stats.recent_latencies(50.0)
    assert 2490 <= len(recent) <= 2500 and list(recent) == values[-len(recent):]
    ordered = sorted(recent)
    expected = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.99, 0.95)]
    assert alerts._percentiles(recent, (0.99, 0.95)) == expected
    assert alerts._percentiles(recent[:4], (0.99,)) == [None]  # fewer than MIN_REQUESTS
