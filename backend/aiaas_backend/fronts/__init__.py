"""Several API server processes on one port (``aiaas server --workers N``, ``AIAAS_SERVER_WORKERS``).

The primary process (the one ``server.json`` names) keeps everything stateful: the
executor, the replicas, each deployment's router (queue, batching, stats, rolling updates),
the monitor, the event bus, the rate limit's buckets and the Prometheus registry. N-1
front processes bind the same port with ``SO_REUSEPORT`` and take their share of the
connections: they answer predicts up to the queue and hand the checked work to the
primary's routers over a Unix socket; every other request they proxy to the primary.
docs/serving.md#several-server-processes says what this buys and what it costs.
"""

from .proxy import FromFront
from .supervisor import Fronts

__all__ = ["FromFront", "Fronts"]
