"""The monitor: deployment events, the alert loop, drift samples and webhook deliveries, per app.

Store work (events, rules) runs in the thread pool; router figures are read on
the event loop that owns the routers. The predict path only calls
:meth:`Monitor.sample`, which costs a counter for most requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aiaas_sdk.wire_monitoring import AlertRules
from aiaas_sdk.wire_monitoring import DeploymentEvent as EventPublic

from ..event_bus import EventBus
from ..models import Deployment, Run, Webhook
from . import alerts, drift, events
from .webhook import WebhookSender

log = logging.getLogger("aiaas.monitoring")

ALERT_KINDS = ("alert_raised", "alert_resolved")
DRIFT_EVERY_S = 5.0  # a drift score moves slowly; recomputing it every tick would waste the loop's thread pool


class Monitor:
    def __init__(self, sessions: Callable[[], Session], bus: EventBus, serving: Any, *, sample_every: int = 8,
                 interval_s: float = 1.0, webhooks: WebhookSender | None = None) -> None:
        self._sessions = sessions
        self._bus = bus
        self._serving = serving
        self.sample_every = sample_every
        self.interval_s = interval_s
        self.webhooks = webhooks or WebhookSender()
        self._samples: dict[str, drift.RecentSample] = {}
        self._windows: dict[str, alerts.Window] = {}
        self._values: dict[str, dict[str, float | None]] = {}
        self._drift: dict[str, tuple[float, float | None]] = {}  # deployment -> (monotonic time, score)
        self._stats: dict[str, dict[str, Any] | None] = {}  # run -> training input statistics
        self._sample_run: dict[str, str] = {}  # deployment -> the run its sample is compared with
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    # -- the predict path -------------------------------------------------------
    def sample(self, deployment_id: str, array: np.ndarray) -> None:
        """Offer a request's inputs to the deployment's drift sample (one row in ``sample_every`` is kept)."""
        if self.sample_every <= 0:
            return
        sample = self._samples.get(deployment_id)
        if sample is None:
            sample = self._samples[deployment_id] = drift.RecentSample(self.sample_every)
        sample.add(array)

    # -- events -----------------------------------------------------------------
    def record(self, deployment_id: str, kind: str, message: str, data: dict[str, Any] | None = None
               ) -> EventPublic | None:
        """Store an event (sync: call in a thread) and wake its stream readers."""
        with self._sessions() as session:
            event = events.append(session, deployment_id, kind, message, data)
            session.commit()
        if event is not None:
            self._bus.publish(deployment_id)
        return event

    async def emit(self, deployment_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        await run_in_threadpool(self.record, deployment_id, kind, message, data)

    def emit_soon(self, deployment_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """:meth:`emit` from code on the loop that must not wait (serving's replica replacement)."""
        task = asyncio.get_running_loop().create_task(self.emit(deployment_id, kind, message, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- drift ------------------------------------------------------------------
    def training_stats(self, run_id: str) -> dict[str, Any] | None:
        if run_id not in self._stats:
            with self._sessions() as session:
                run = session.get(Run, run_id)
                self._stats[run_id] = drift.check_stats(run.input_stats) if run is not None else None
        return self._stats[run_id]

    def drift_report(self, deployment_id: str, run_id: str) -> dict[str, Any]:
        """A DriftReport as a dict (sync: call in a thread)."""
        sample = self._samples.get(deployment_id)
        if sample is not None and self._sample_run.setdefault(deployment_id, run_id) != run_id:
            sample.clear()  # a new model version: compare its inputs only from now on
            self._sample_run[deployment_id] = run_id
        rows, width = sample.rows() if sample else (np.empty((0, 0)), 0)
        return drift.report(self.training_stats(run_id), rows, width)

    async def _drift_score(self, deployment_id: str, run_id: str) -> float | None:
        now = time.monotonic()
        cached = self._drift.get(deployment_id)
        if cached is None or now - cached[0] >= DRIFT_EVERY_S:
            report = await run_in_threadpool(self.drift_report, deployment_id, run_id)
            cached = self._drift[deployment_id] = (now, report["score"])
        return cached[1]

    # -- alerts -----------------------------------------------------------------
    def values(self, deployment_id: str) -> dict[str, float | None]:
        return dict(self._values.get(deployment_id, {}))

    def _watched(self) -> list[tuple[str, str, str, int, int, dict[str, Any], dict[str, Any]]]:
        with self._sessions() as session:
            rows = session.execute(select(Deployment.id, Deployment.name, Deployment.run_id, Deployment.user_id,
                                          Deployment.max_queue, Deployment.alert_rules, Deployment.alerts_firing)
                                   .where(Deployment.alert_rules.is_not(None)))
            return [(i, n, r, u, q, rules or {}, firing or {}) for i, n, r, u, q, rules, firing in rows]

    def _apply(self, deployment_id: str, name: str, user_id: int, rules: dict[str, Any],
               raised: list[str], resolved: list[str], values: dict[str, float | None]
               ) -> tuple[list[EventPublic], Webhook | None]:
        """Store the transitions and the firing set in one transaction (sync)."""
        out = []
        with self._sessions() as session:
            dep = session.get(Deployment, deployment_id)
            if dep is None:
                return [], None
            firing = dict(dep.alerts_firing or {})
            for rule in raised + resolved:
                up = rule in raised
                message = f"{name}: " + alerts.describe(rule, values.get(rule), rules.get(rule), up)
                data = {"rule": rule, "value": values.get(rule), "threshold": rules.get(rule),
                        "window_s": rules.get("window_s")}
                if up:
                    firing[rule] = {"since": time.time(), "value": values.get(rule)}
                else:
                    data["since"] = (firing.pop(rule, None) or {}).get("since")
                event = events.append(session, deployment_id, "alert_raised" if up else "alert_resolved",
                                      message, data)
                if event is not None:
                    out.append(event)
            dep.alerts_firing = firing
            hook = session.get(Webhook, user_id)
            session.commit()
        if out:
            self._bus.publish(deployment_id)
        return out, hook

    async def evaluate(self) -> None:
        """One pass over every deployment with rules."""
        for dep_id, name, run_id, user_id, max_queue, rules, firing in await run_in_threadpool(self._watched):
            runtime = self._serving.runtime(dep_id)
            if runtime is None:
                continue
            window = self._windows.setdefault(dep_id, alerts.Window())
            window_s = float(rules.get("window_s") or AlertRules().window_s)
            score = await self._drift_score(dep_id, run_id) if rules.get("drift") is not None else None
            values = alerts.figures(runtime.router, max_queue, window, window_s, score)
            self._values[dep_id] = values
            raised, resolved = alerts.transitions(rules, firing, values)
            if not raised and not resolved:
                continue
            stored, hook = await run_in_threadpool(self._apply, dep_id, name, user_id, rules, raised, resolved,
                                                   values)
            if hook is not None:
                for event in stored:
                    self.webhooks.send(hook.url, hook.secret, {"deployment": name, "deployment_id": dep_id,
                                                               **event.model_dump()})

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.evaluate()
            except Exception:  # noqa: BLE001 - one bad pass must not end alerting for good
                log.exception("alert evaluation failed")
            await asyncio.sleep(max(0.05, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def forget(self, deployment_id: str) -> None:
        for table in (self._samples, self._windows, self._values, self._drift, self._sample_run):
            table.pop(deployment_id, None)  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._pending):
            task.cancel()
        await self.webhooks.close()


__all__ = ["ALERT_KINDS", "Monitor"]
