"""The live view a ``Deployment`` displays as in a notebook.

One daemon thread per view, started inside the displaying cell's context
(``contextvars.copy_context``) for the same reason as the run dashboard's: on
ipykernel 7 the parent header lives in a context variable, and asyncio tasks
stall between cells. The thread polls ``stats()`` about once a second, folds
the answer into a :class:`DeploymentState` and redraws (``hold_sync``, only
new chart points). It stops when the deployment is deleted, when the view is
closed (from Python or by the frontend), or when :meth:`close` is called.

Each tick also reads new events (``dep.events(after=...)``); the firing
alerts (``dep.alerts()``) are read every ten ticks and at once when an
``alert_raised``/``alert_resolved`` event arrives, so a breach shows within a
tick of its event; drift every ten ticks. The events area stays hidden until
there is something to show.
"""

from __future__ import annotations

import contextvars
import html
import threading
import time
from typing import TYPE_CHECKING, Any

from .._errors import AiaasError, InvalidInput, NotFound
from ._deployment_state import DeploymentState, event_text, fmt

if TYPE_CHECKING:
    from .._deployment import Deployment

_STATUS_COLORS = {"starting": "#888", "ready": "#2ca02c", "updating": "#1f77b4", "failed": "#d62728",
                  "stopped": "#ff7f0e", "deleted": "#888"}
# The deployment record (status, desired replicas, version) changes rarely; stats every tick.
_REFRESH_EVERY = 5
_ALERTS_EVERY = 10
_ALERT_KINDS = ("alert_raised", "alert_resolved")
# The browser only ever gets appended points; a periodic full resend trims it back to the window.
_RESEND_EVERY = 30


class DeploymentView:
    """Status, version, replicas, throughput, latency percentiles, queue, batches, two charts and events."""

    def __init__(self, deployment: Deployment, *, interval: float = 1.0, window_s: float = 300.0) -> None:
        import ipywidgets as w

        from ._chart import MetricsChart

        if interval <= 0 or window_s < interval:
            raise InvalidInput(f"the view needs 0 < interval <= window_s, got interval={interval}, window_s={window_s}: "
                               "poll every second over five minutes with dep.watch(interval=1.0, window_s=300)")
        self.deployment = deployment
        self.interval = interval
        self.state = DeploymentState.from_public(deployment.data, window_s=window_s,
                                                 cap=max(2, int(window_s / interval) + 1))
        self._text = self.state.summary()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self.draws = 0
        self.polls = 0

        self.header = w.HTML()
        self.figures = w.HTML()
        self.rate_chart = MetricsChart(layout=w.Layout(width="50%"))
        self.latency_chart = MetricsChart(layout=w.Layout(width="50%"))
        self.events_box = w.HTML(layout=w.Layout(display="none"))
        self.footer = w.HTML()
        self.widget = w.VBox([self.header, self.figures, w.HBox([self.rate_chart, self.latency_chart]),
                              self.events_box, self.footer])
        # ipywidgets drops its comm only on a close from Python; a close from the frontend
        # (comm_close) reaches the comm alone, so the view listens there too.
        if self.widget.comm is not None and hasattr(self.widget.comm, "on_close"):
            self.widget.comm.on_close(lambda _msg: self._stop.set())
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._poll,), name="aiaas-deployment-view", daemon=True).start()

    # -- the thread -------------------------------------------------------------------
    def _poll(self) -> None:
        try:
            tick = 0
            while not self._stop.is_set() and not self._closed():
                started = time.monotonic()
                if not self._poll_once(tick):
                    break
                self._draw(full_series=tick % _RESEND_EVERY == 0)
                tick += 1
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
            self._draw(full_series=True)
        finally:
            self.finished.set()

    def _poll_once(self, tick: int) -> bool:
        """One round of requests; False once the deployment is gone."""
        dep = self.deployment
        try:
            if tick % _REFRESH_EVERY == _REFRESH_EVERY - 1:
                dep.refresh()
                with self._lock:
                    self.state.apply_public(dep.data)
            stats = dep.stats()
            with self._lock:
                self.state.apply_stats(stats, time.monotonic())
        except NotFound:
            with self._lock:
                self.state.mark_deleted()
            return False
        except AiaasError as exc:
            # Not running yet, restarting, backend away for a moment: say so and keep polling.
            with self._lock:
                self.state.stats_error = str(exc).splitlines()[0]
        self.polls += 1
        self._poll_monitoring(tick)
        return True

    def _poll_monitoring(self, tick: int) -> None:
        dep: Any = self.deployment
        events = self._ask(dep, "events", after=self.state.last_event_seq)
        with self._lock:
            fresh = self.state.apply_events(list(events)) if events is not None else []
        # An alert raised or resolved: read the firing set now, not at the next periodic read.
        if tick % _ALERTS_EVERY == 0 or any(e.kind in _ALERT_KINDS for e in fresh):
            alerts = self._ask(dep, "alerts")
            if alerts is not None:
                with self._lock:
                    self.state.apply_alerts(alerts)
        if tick % _ALERTS_EVERY == 0:
            report = self._ask(dep, "drift")
            if report is not None:
                with self._lock:
                    self.state.apply_drift(report)

    @staticmethod
    def _ask(dep: Any, attr: str, **kwargs: Any) -> Any:
        """``dep.<attr>(**kwargs)``, or None when the deployment object lacks it or the call failed."""
        method = getattr(dep, attr, None)
        if method is None:
            return None
        try:
            return method(**kwargs)
        except AiaasError:
            return None  # no drift report before training statistics exist, say: the rest still shows

    def _closed(self) -> bool:
        return self.widget.comm is None

    # -- drawing ------------------------------------------------------------------------
    def _draw(self, full_series: bool) -> None:
        if self._closed():
            return
        with self._lock:
            s = self.state
            header = self._header_html(s)
            figures = self._figures_html(s)
            events = self._events_html(s)
            series = s.series()
            last = s.history[-1] if s.history else None
            footer = self._footer_html(s)
        with self.widget.hold_sync():
            self.header.value = header
            self.figures.value = figures
            if full_series:
                self.rate_chart.series = {"requests/s": series["requests/s"]}
                self.latency_chart.series = {"p99 ms": series["p99 ms"]}
            elif last is not None:
                if last.rps is not None:
                    self.rate_chart.append({"requests/s": [(last.t, last.rps)]})
                if last.p99_ms is not None:
                    self.latency_chart.append({"p99 ms": [(last.t, last.p99_ms)]})
            if events:
                self.events_box.value = events
                self.events_box.layout.display = None
            self.footer.value = footer
        self.draws += 1

    @staticmethod
    def _header_html(s: DeploymentState) -> str:
        color = _STATUS_COLORS.get(s.status, "#888")
        alerts = (f" · <span class='aiaas-dep-alerts' style='color:#d62728;font-weight:bold'>ALERT "
                  f"{html.escape(', '.join(s.alerts_firing))}</span>" if s.alerts_firing else "")
        return (f"<b>{html.escape(s.name)}</b> · <span style='color:{color};font-weight:bold'>{s.status}</span>"
                f" · version <code>{html.escape(s.run_id)}</code> · replicas {s.ready_replicas}/{s.replicas}{alerts}")

    @staticmethod
    def _figures_html(s: DeploymentState) -> str:
        f = s.figures()
        if s.stats is None:
            return "<div style='color:#888'>waiting for the first figures…</div>"
        sizes = ", ".join(f"{rows}×{n}" for rows, n in list(f["batch_sizes"].items())[-6:])
        cells = [("req/s", fmt(f["requests_per_s"])), ("requests", f["requests"]), ("p50", f"{fmt(f['p50_ms'])} ms"),
                 ("p95", f"{fmt(f['p95_ms'])} ms"), ("p99", f"{fmt(f['p99_ms'])} ms"), ("errors", f["errors"]),
                 ("rejected", f["rejected"]), ("queue", f["queue_depth"]),
                 ("batch", f"{fmt(f['mean_batch_rows'])} rows" + (f" ({sizes})" if sizes else ""))]
        row = "".join(f"<td style='padding:0 1.2em 0 0'><div style='color:#666;font-size:11px'>{k}</div>"
                      f"<div class='aiaas-dep-{k.replace('/', '-')}'><b>{html.escape(str(v))}</b></div></td>"
                      for k, v in cells)
        return f"<table><tr>{row}</tr></table>"

    @staticmethod
    def _events_html(s: DeploymentState) -> str:
        parts = []
        if s.alerts_firing:
            parts.append("<div style='color:#d62728'><b>Alerts firing:</b> "
                         f"{html.escape(', '.join(s.alerts_firing))}</div>")
        if s.drift_score is not None:
            parts.append(f"<div>Drift score: <b>{s.drift_score:.3g}</b></div>")
        if s.events:
            lines = "\n".join(event_text(e) for e in reversed(s.events))
            parts.append(f"<pre style='font-size:11px;margin:0;white-space:pre-wrap'>{html.escape(lines)}</pre>")
        return "".join(parts)

    @staticmethod
    def _footer_html(s: DeploymentState) -> str:
        if s.deleted:
            return "<div style='color:#888'>The deployment was deleted; this view stopped.</div>"
        problems = [p for p in (s.error, s.stats_error) if p]
        return "".join(f"<div style='color:#d62728'>{html.escape(p)}</div>" for p in problems)

    # -- public -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop polling and close the widgets."""
        self._stop.set()
        self.finished.wait(10)
        for widget in (self.header, self.figures, self.rate_chart, self.latency_chart, self.events_box, self.footer,
                       *self.widget.children, self.widget):
            widget.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the view stopped (the deployment was deleted or the view closed)."""
        return self.finished.wait(timeout)

    def snapshot(self) -> dict[str, Any]:
        """What the view shows now, as plain data (for tests and debugging)."""
        with self._lock:
            return {"name": self.state.name, **self.state.figures(), "series": self.state.series(),
                    "events": [event_text(e) for e in self.state.events], "polls": self.polls, "draws": self.draws,
                    "finished": self.finished.is_set()}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        bundle["text/plain"] = self._text
        return bundle
