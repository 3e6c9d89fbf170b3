"""Deployment monitoring beyond Prometheus: an event log, SLO alerts, input drift, webhooks.

- ``events.py``: the ordered, persisted log of a deployment (also served as SSE).
- ``alerts.py``: rules on a sliding window of the router's figures.
- ``drift.py``: training input statistics against a sample of recent inputs (pure numpy).
- ``webhook.py``: signed, retried deliveries of alert events.
- ``monitor.py``: :class:`Monitor` ties them to one app (the loop, the samples).

Nothing is imported here: the worker imports ``drift`` alone, without the server's modules.
"""
