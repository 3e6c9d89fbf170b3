"""Input drift: training inputs' statistics against a sample of recent predict inputs.

Both sides turn a batch into the same *features*: each row flattened, and, when
a row holds more than :data:`MAX_FEATURES` values (an image), averaged over
that many contiguous blocks, so the statistics stay small whatever the input.

The score per feature is the population stability index (PSI) of the recent
values over the training data's decile bins: ``sum((r - t) * ln(r / t))``. It
is 0 for the same distribution, grows with any change of shape or place, and
has a conventional reading (below 0.1 stable, 0.1-0.2 moderate, above 0.2 a
real shift). The overall score is the largest feature score, so one drifting
feature among many is not averaged away; the minimum sample keeps the noise of
the largest of many features well below 0.2 (docs/monitoring.md).

Pure numpy: the worker computes the training side with it, the API server the rest.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

MAX_FEATURES = 256
TRAIN_ROWS = 10_000  # rows of training input kept for the statistics
BINS = 10
RECENT_ROWS = 2048  # sampled predict rows kept (the most recent)
MIN_SAMPLE = 256
_EPS = 1e-4  # floor of a bin's share, so an empty bin gives a large but finite PSI


def features(batch: np.ndarray) -> np.ndarray | None:
    """``(rows, features)`` float64 for a numeric batch, or None when it is not numeric."""
    if batch.ndim < 1 or batch.shape[0] == 0 or batch.dtype.kind not in "biuf":
        return None
    flat = batch.reshape(batch.shape[0], -1).astype(np.float64, copy=False)
    width = flat.shape[1]
    if width <= MAX_FEATURES:
        return flat
    starts = (np.arange(MAX_FEATURES) * width) // MAX_FEATURES
    sizes = np.diff(np.append(starts, width))
    return np.add.reduceat(flat, starts, axis=1) / sizes


def training_stats(rows: np.ndarray, pooled_from: int) -> dict[str, Any]:
    """Per feature mean, std and decile histogram of the training ``rows`` (already features)."""
    inner = np.quantile(rows, np.linspace(0, 1, BINS + 1)[1:-1], axis=0).T  # (features, BINS - 1)
    fractions = [np.bincount(np.searchsorted(edges, column, side="right"), minlength=BINS) / len(column)
                 for edges, column in zip(inner, rows.T)]
    return {"version": 1, "rows": int(rows.shape[0]), "pooled_from": pooled_from,
            "mean": rows.mean(axis=0).tolist(), "std": rows.std(axis=0).tolist(),
            "edges": inner.tolist(), "fractions": [f.tolist() for f in fractions]}


def check_stats(stats: Any) -> dict[str, Any] | None:
    """``stats`` if it has the shape :func:`training_stats` makes, else None (a worker's report is untrusted)."""
    try:
        n = len(stats["mean"])
        ok = (stats.get("version") == 1 and 0 < n <= MAX_FEATURES and len(stats["std"]) == n
              and len(stats["edges"]) == n and len(stats["fractions"]) == n
              and all(len(e) == BINS - 1 for e in stats["edges"]) and all(len(f) == BINS for f in stats["fractions"])
              and isinstance(stats["pooled_from"], int) and isinstance(stats["rows"], int))
    except (TypeError, KeyError, AttributeError):
        return None
    return stats if ok else None


class TrainingSample:
    """The first :data:`TRAIN_ROWS` training input rows (as features); fed batch by batch."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._rows = 0
        self.pooled_from: int | None = None
        self._failed = False

    @property
    def full(self) -> bool:
        return self._rows >= TRAIN_ROWS or self._failed

    def give_up(self) -> None:
        """Inputs this cannot read: no statistics for this run (drift then says so), never a failed run."""
        self._failed = True

    def add(self, batch: np.ndarray) -> None:
        if self.full:
            return
        part = features(batch)
        if part is None:
            return
        width = math.prod(batch.shape[1:])
        if self.pooled_from not in (None, width):
            return  # rows of another shape (a ragged dataset): keep the first kind only
        self.pooled_from = width
        part = part[: TRAIN_ROWS - self._rows]
        self._parts.append(part)
        self._rows += len(part)

    def stats(self) -> dict[str, Any] | None:
        if self._failed or not self._parts or self.pooled_from is None:
            return None
        rows = np.concatenate(self._parts)
        if not np.isfinite(rows).all():
            return None  # NaN or inf inputs: no meaningful deciles
        return training_stats(rows, self.pooled_from)


class RecentSample:
    """One row in ``every`` of a deployment's inputs, the last :data:`RECENT_ROWS` kept.

    Called on the predict path: a counter and, for the chosen rows only, a copy into
    a ring buffer. Rows of another width than the first one seen restart the sample.
    """

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self._next = 0  # rows to skip before the next one taken
        self._lock = threading.Lock()  # add() runs on the loop, report() in a thread
        self._buffer: np.ndarray | None = None
        self._width = 0
        self._count = 0
        self._pos = 0

    def add(self, batch: np.ndarray) -> None:
        n = batch.shape[0] if batch.ndim else 0
        if n <= self._next:
            self._next -= n
            return
        picked = batch[self._next::self.every]
        self._next = (self._next - n) % self.every
        rows = features(picked)
        if rows is None:
            return
        width = math.prod(batch.shape[1:])  # np.prod costs ~20x more on a shape this small
        rows = rows[-RECENT_ROWS:]
        with self._lock:
            if self._buffer is None or self._width != width or self._buffer.shape[1] != rows.shape[1]:
                self._buffer = np.empty((RECENT_ROWS, rows.shape[1]))
                self._width, self._count, self._pos = width, 0, 0
            if len(rows) == 1:
                self._buffer[self._pos] = rows[0]
            else:
                self._buffer[(self._pos + np.arange(len(rows))) % RECENT_ROWS] = rows
            self._pos = (self._pos + len(rows)) % RECENT_ROWS
            self._count = min(self._count + len(rows), RECENT_ROWS)

    def clear(self) -> None:
        with self._lock:
            self._buffer, self._count, self._pos = None, 0, 0

    def rows(self) -> tuple[np.ndarray, int]:
        """A copy of the sampled rows and the row width they came from."""
        with self._lock:
            if self._buffer is None:
                return np.empty((0, 0)), 0
            return self._buffer[: self._count].copy(), self._width


def psi(edges: np.ndarray, expected: np.ndarray, values: np.ndarray) -> float:
    observed = np.bincount(np.searchsorted(edges, values, side="right"), minlength=BINS) / len(values)
    e, o = np.maximum(expected, _EPS), np.maximum(observed, _EPS)
    return float(np.sum((o - e) * np.log(o / e)))


def report(stats: dict[str, Any] | None, recent: np.ndarray, width: int) -> dict[str, Any]:
    """A :class:`aiaas_sdk.wire_monitoring.DriftReport` as a dict."""
    out: dict[str, Any] = {"reference": stats is not None, "sample_size": int(recent.shape[0]),
                           "min_sample": MIN_SAMPLE, "score": None, "features": [],
                           "pooled_from": stats["pooled_from"] if stats else (width or None), "note": None}
    if stats is None:
        out["note"] = ("the served run recorded no training input statistics (inputs that are not one numeric "
                       "tensor, or a run trained before drift monitoring); retrain to compare")
        return out
    if recent.shape[0] and (width != stats["pooled_from"] or recent.shape[1] != len(stats["mean"])):
        out["note"] = (f"recent rows hold {width} values but the training rows held {stats['pooled_from']}: "
                       "no comparison")
        return out
    if recent.shape[0] < MIN_SAMPLE:
        out["note"] = f"{recent.shape[0]} of the {MIN_SAMPLE} sampled rows needed for a score"
        return out
    scores = []
    for i, (mean, std, edges, fractions) in enumerate(zip(stats["mean"], stats["std"], stats["edges"],
                                                          stats["fractions"])):
        column = recent[:, i]
        score = psi(np.asarray(edges), np.asarray(fractions), column)
        scores.append(score)
        recent_mean = float(column.mean())
        out["features"].append({"index": i, "score": score, "train_mean": mean, "train_std": std,
                                "recent_mean": recent_mean,
                                "shift_std": (recent_mean - mean) / std if std > 0 else 0.0})
    out["score"] = max(scores)
    return out


__all__ = ["MAX_FEATURES", "MIN_SAMPLE", "RecentSample", "TrainingSample", "check_stats", "features", "psi",
           "report", "training_stats"]
