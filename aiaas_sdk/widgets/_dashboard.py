"""The live dashboard a ``Run`` displays as in a notebook.

Two daemon threads per dashboard, both started inside the displaying cell's
context (``contextvars.copy_context``), so ipykernel 7 -- which keeps the
parent header in a context variable -- routes their messages to that cell:
a reader that folds the run's event stream into a :class:`RunState`, and a
painter that redraws at most ``fps`` times a second, grouping each widget's
trait changes with ``hold_sync``. Asyncio tasks are not used on purpose: they
stall between cells on ipykernel 7.
"""

from __future__ import annotations

import contextvars
import html
import importlib.util
import threading
import time
from typing import TYPE_CHECKING, Any

from .._errors import AiaasError
from ._state import RunState

if TYPE_CHECKING:
    from .._run import Run


def widgets_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets and anywidget installed."""
    if importlib.util.find_spec("ipywidgets") is None or importlib.util.find_spec("anywidget") is None:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


_STATUS_COLORS = {"queued": "#888", "running": "#1f77b4", "succeeded": "#2ca02c", "failed": "#d62728",
                  "cancelled": "#ff7f0e"}


class RunDashboard:
    """Status, progress, a live chart, latest values, a log tail and a Cancel button."""

    def __init__(self, run: Run, *, fps: float = 4.0, cap: int = 1000) -> None:
        import ipywidgets as w

        from ._chart import MetricsChart

        self.run = run
        # Start from what the handle knows, so the text fallback is right before any event.
        self.state = RunState(run.id, run.name, cap=cap, status=run.data.status.value, device=run.data.device,
                              datasets=list(run.data.datasets), error=run.data.error)
        # The text fallback is fixed at display time: the reader replays history from
        # the start, so the live state passes through older statuses first.
        self._text = self.state.summary()
        self._interval = 1.0 / fps
        self._lock = threading.Lock()
        self._reader_done = threading.Event()
        self.finished = threading.Event()
        self.draws = 0
        self.stream_error: str | None = None

        self.header = w.HTML()
        self.progress = w.IntProgress(min=0, max=1, value=0, layout=w.Layout(width="60%"))
        self.progress_label = w.HTML()
        self.chart = MetricsChart()
        self.latest = w.HTML()
        self.logs = w.HTML()
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop")
        self.cancel_button.on_click(self._on_cancel)
        self.footer = w.HTML()
        self.widget = w.VBox([
            self.header,
            w.HBox([self.progress, self.progress_label]),
            self.chart,
            self.latest,
            self.logs,
            w.HBox([self.cancel_button]),
            self.footer,
        ])
        context = contextvars.copy_context()
        for target, name in ((self._read, "reader"), (self._paint, "painter")):
            threading.Thread(target=context.copy().run, args=(target,), name=f"aiaas-dashboard-{name}",
                             daemon=True).start()

    # -- threads --------------------------------------------------------------
    def _read(self) -> None:
        try:
            for event in self.run.events(after=0):
                with self._lock:
                    self.state.apply(event)
                if event.kind == "status":
                    self._refresh_run()
        except AiaasError as exc:
            self.stream_error = str(exc).splitlines()[0]
        finally:
            self._refresh_run()
            self._reader_done.set()

    def _refresh_run(self) -> None:
        try:
            self.run.refresh()
        except AiaasError:
            pass
        with self._lock:
            self.state.device = self.run.data.device

    def _paint(self) -> None:
        last_full = 0.0
        while True:
            done = self._reader_done.is_set()
            now = time.monotonic()
            full = done or now - last_full > 5.0
            self._draw(full_series=full)
            if full:
                last_full = now
            if done:
                self.finished.set()
                return
            self._reader_done.wait(self._interval)

    # -- drawing ----------------------------------------------------------------
    def _draw(self, full_series: bool) -> None:
        with self._lock:
            s = self.state
            new: dict[str, list[tuple[float, float]]] = {}
            resend = full_series
            for name, series in s.series.items():
                fresh = series.take_new()
                if fresh is None:
                    resend = True
                elif fresh:
                    new[name] = fresh
            snapshot = {name: [list(p) for p in series.view()] for name, series in s.series.items()} if resend else None
            header = self._header_html(s)
            progress_max = s.total_steps or max(s.step, 1)
            progress_value = min(s.step, progress_max)
            progress_text = html.escape(s.progress_text())
            latest = self._latest_html(s.latest())
            logs = "\n".join(s.logs)
            ended = s.ended
            footer = self._footer_html(s) if ended else ""
        with self.progress.hold_sync():
            self.progress.max = progress_max
            self.progress.value = progress_value
            self.progress.bar_style = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}.get(
                s.status, "")
        self.header.value = header
        self.progress_label.value = progress_text
        if snapshot is not None:
            self.chart.series = snapshot
        elif new:
            self.chart.append(new)
        self.latest.value = latest
        if logs != self.logs.value:
            self.logs.value = (f"<pre style='font-size:11px;margin:0;white-space:pre-wrap'>"
                               f"{html.escape(logs)}</pre>") if logs else ""
        self.cancel_button.disabled = ended
        if ended:
            self.cancel_button.layout.display = "none"
        self.footer.value = footer
        self.draws += 1

    @staticmethod
    def _header_html(s: RunState) -> str:
        elapsed = s.elapsed()
        color = _STATUS_COLORS.get(s.status, "#888")
        parts = [f"<b>{html.escape(s.name)}</b> <code>{s.run_id}</code>",
                 f"<span style='color:{color};font-weight:bold'>{s.status}</span>"]
        if elapsed is not None:
            parts.append(f"{elapsed:.1f} s")
        if s.device:
            parts.append(html.escape(s.device))
        if s.datasets:
            parts.append("data: " + ", ".join(f"<code>{html.escape(d)}</code>" for d in s.datasets))
        return " · ".join(parts)

    @staticmethod
    def _latest_html(latest: dict[str, float]) -> str:
        if not latest:
            return ""
        cells = "".join(f"<td style='padding:0 1em 0 0'><b>{html.escape(k)}</b> {v:.4g}</td>"
                        for k, v in latest.items())
        return f"<table><tr>{cells}</tr></table>"

    def _footer_html(self, s: RunState) -> str:
        data = self.run.data
        if s.status == "succeeded":
            final = ", ".join(f"{k}={v:.4g}" for k, v in sorted(data.final_metrics.items()))
            return (f"<div>Final: {html.escape(final)}</div><div style='color:#555'>Deploy: "
                    f"<code>dep = run.deploy('{html.escape(s.name)}')</code> · checkpoint: "
                    f"<code>run.download_checkpoint('{html.escape(s.name)}.ckpt')</code></div>")
        if s.status == "failed":
            tb = data.traceback or ""
            return (f"<div style='color:#d62728'><b>Failed:</b> {html.escape(data.error or s.error or '')}</div>"
                    f"<details><summary>Remote traceback</summary><pre style='font-size:11px'>"
                    f"{html.escape(tb)}</pre></details>")
        return f"<div style='color:#ff7f0e'>Cancelled{': ' + html.escape(s.error) if s.error else ''}</div>"

    def _on_cancel(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        try:
            self.run.cancel()
        except AiaasError as exc:
            self.footer.value = f"<div style='color:#d62728'>{html.escape(str(exc))}</div>"

    # -- public -------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ended and the last frame was drawn."""
        return self.finished.wait(timeout)

    def snapshot(self) -> dict[str, Any]:
        """What the widgets show now, as plain data (for tests and debugging)."""
        return {
            "status": self.state.status,
            "progress": {"value": self.progress.value, "max": self.progress.max},
            "series": {k: list(map(list, v)) for k, v in self.chart.series.items()},
            "latest": self.state.latest(),
            "draws": self.draws,
            "cancel_disabled": self.cancel_button.disabled,
        }

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        bundle["text/plain"] = self.state.summary() if self.finished.is_set() else self._text
        return bundle
