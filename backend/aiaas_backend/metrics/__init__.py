"""Prometheus metrics for the whole backend, built on ``prometheus_client``.

The room's contract with the rest of the backend is small:

- :class:`Metrics` (``instruments.py``) owns one registry per app and the
  instruments fed on the hot path (predict outcomes and latency).
- :class:`HttpMetrics` (``middleware.py``) times every API request by its
  route template and counts open event streams.
- ``collectors.py`` reads figures that already exist elsewhere (the store's
  runs, each deployment's router) at scrape time, so they cost nothing
  between scrapes.
- ``routes.py`` serves ``GET /metrics`` to scrape-only keys (or loopback,
  when configured).

Each API server process has its own registry (no multiprocess mode): see
docs/monitoring.md for why.
"""

from .instruments import Metrics
from .middleware import HttpMetrics
from .routes import router

__all__ = ["HttpMetrics", "Metrics", "router"]
