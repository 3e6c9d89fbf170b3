"""``Run`` and ``AsyncRun``: a handle on one training run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _ops
from .wire import MetricPoint, RunEvent, RunPublic, RunStatus

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client


class _RunBase:
    def __init__(self, data: RunPublic) -> None:
        self.data = data

    @property
    def id(self) -> str:
        return self.data.id

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def final_metrics(self) -> dict[str, float]:
        """The metrics at the end of training (``trainer.callback_metrics``), once it succeeded."""
        return dict(self.data.final_metrics)

    @property
    def error(self) -> str | None:
        return self.data.error

    @property
    def datasets(self) -> list[str]:
        """The exact dataset versions this run reads (``NAME:VERSION``), pinned at submit."""
        return list(self.data.datasets)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.data.id} {self.data.name!r} {self.data.status.value}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": self._summary()}

    def _summary(self) -> str:
        d = self.data
        lines = [f"Run {d.id} · {d.name} · {d.status.value}"]
        if d.device:
            lines.append(f"device: {d.device}")
        if d.datasets:
            lines.append("datasets: " + ", ".join(d.datasets))
        if d.final_metrics:
            lines.append("final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(d.final_metrics.items())))
        if d.error:
            lines.append(f"error: {d.error}")
        return "\n".join(lines)


class Run(_RunBase):
    """A training run. ``client.train(...)`` returns one; ``client.run(id)`` finds it again."""

    def __init__(self, client: Client, data: RunPublic) -> None:
        super().__init__(data)
        self._client = client

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a Jupyter kernel with widgets: a live dashboard; elsewhere: a text summary."""
        from .widgets import RunDashboard, widgets_available

        if widgets_available():
            return RunDashboard(self)._repr_mimebundle_(include, exclude)
        return {"text/plain": self._summary()}

    def watch(self) -> Any:
        """Display the live dashboard (status, progress, chart, logs, Cancel) and return it.

        In a terminal, prints the events as they come instead, until the run ends.
        """
        from .widgets import RunDashboard, widgets_available

        if widgets_available():
            from IPython.display import display

            dashboard = RunDashboard(self)
            display(dashboard)
            return dashboard
        for event in self.events():
            if event.kind == "log":
                print(event.data["line"])
            elif event.kind == "status":
                print(f"[{self.id}] {event.data['status']}" + (f": {event.data['error']}" if event.data.get("error") else ""))
        return self.refresh()

    @property
    def status(self) -> RunStatus:
        """The run's current status, fetched from the backend."""
        return self.refresh().data.status

    def refresh(self) -> Run:
        self.data = self._client._drive(_ops.get_run(self.id))
        return self

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends. Raises :class:`aiaas.RunFailed` (with the remote
        traceback) if it failed, :class:`aiaas.RunCancelled` if it was cancelled."""
        self.data = self._client._drive(_ops.wait(self.id, timeout, raise_on_failure=False))
        _ops.raise_for_run(self.data)
        return self

    def deploy(self, name: str, *, replicas: int = 1, max_batch_size: int = 64, max_wait_ms: float = 5.0,
               max_queue: int = 1024, timeout_s: float = 30.0, autoscale: dict[str, Any] | None = None,
               optimize: str | None = None, optimize_tolerance: float | None = None, wait: bool = True) -> Any:
        """Serve this run's trained model as the endpoint ``name`` and return the :class:`Deployment`.

        Requests are batched: up to ``max_batch_size`` rows, waiting at most ``max_wait_ms``
        for more; ``max_queue`` requests may wait (then 429, which the SDK retries);
        ``timeout_s`` bounds one request. With ``wait`` it returns once a replica serves.

        ``autoscale=dict(min_replicas=1, max_replicas=8)`` lets the replica count follow
        the load, starting at ``replicas`` (optional ``target_ongoing_requests``: batches
        in flight per replica to aim for). It needs a backend started with
        ``--executor ray`` (Ray Serve); the local runtime refuses it with a 400.

        ``optimize="int8"`` (dynamic quantisation of Linear/LSTM layers), ``"compile"``
        (``torch.compile``) or ``"onnx"`` (ONNX Runtime) serves a faster model. The backend
        measures it first against the model as trained: ``dep.optimization`` holds the
        speed-up and the largest output deviation. A deviation over ``optimize_tolerance``
        (default 0.05 for int8, 1e-4 otherwise), or a model the optimiser cannot handle, is
        refused with :class:`aiaas.BadRequest` and no deployment is created. Updates and
        rollbacks measure (or reuse the measurement of) each version the same way.
        """
        return self._client.deploy(self.id, name, replicas=replicas, max_batch_size=max_batch_size,
                                   max_wait_ms=max_wait_ms, max_queue=max_queue, timeout_s=timeout_s,
                                   autoscale=autoscale, optimize=optimize, optimize_tolerance=optimize_tolerance,
                                   wait=wait)

    def cancel(self) -> Run:
        """Ask the run to stop: queued runs end at once, running ones after their current step."""
        self.data = self._client._drive(_ops.cancel(self.id))
        return self

    def metrics(self, name: str | None = None) -> list[MetricPoint]:
        """Every metric point logged so far (``self.log``), in order; only ``name`` if given."""
        return self._client._drive(_ops.metrics(self.id, name))

    def logs(self) -> str:
        """The run's output so far: stdout, stderr and Lightning's messages."""
        return self._client._drive(_ops.logs(self.id))

    def events(self, after: int = 0) -> Iterator[RunEvent]:
        """The run's events (status, metric, log) after sequence number ``after``, live
        until the run ends. A dropped connection is resumed where it stopped: no event
        is missed or repeated."""
        return self._client._events(self.id, after)

    async def aevents(self, after: int = 0) -> AsyncIterator[RunEvent]:
        """:meth:`events` for async code (``async for ev in run.aevents()``), on its own
        async connection to the same backend."""
        from ._async_client import AsyncClient

        async with AsyncClient(self._client.url, self._client._api_key, timeout=self._client._timeout,
                               **self._client._tls_args) as aclient:
            async for event in aclient._events(self.id, after):
                yield event

    def download_checkpoint(self, path: str | Path, kind: str = "lightning") -> Path:
        """Save the final checkpoint to ``path``.

        ``kind="lightning"``: a Trainer checkpoint for ``MyModule.load_from_checkpoint``;
        ``kind="weights"``: the model's ``state_dict`` (``torch.load(path, weights_only=True)``).
        """
        return self._client._drive(_ops.download_checkpoint(self.id, Path(path), kind))


class AsyncRun(_RunBase):
    """The async twin of :class:`Run`. ``status`` is the last known one: ``await run.refresh()``."""

    def __init__(self, client: AsyncClient, data: RunPublic) -> None:
        super().__init__(data)
        self._client = client

    @property
    def status(self) -> RunStatus:
        return self.data.status

    async def refresh(self) -> AsyncRun:
        self.data = await self._client._drive(_ops.get_run(self.id))
        return self

    async def wait(self, timeout: float | None = None) -> AsyncRun:
        self.data = await self._client._drive(_ops.wait(self.id, timeout, raise_on_failure=False))
        _ops.raise_for_run(self.data)
        return self

    async def deploy(self, name: str, **kwargs: Any) -> Any:
        """Async :meth:`Run.deploy`."""
        return await self._client.deploy(self.id, name, **kwargs)

    async def cancel(self) -> AsyncRun:
        self.data = await self._client._drive(_ops.cancel(self.id))
        return self

    async def metrics(self, name: str | None = None) -> list[MetricPoint]:
        return await self._client._drive(_ops.metrics(self.id, name))

    async def logs(self) -> str:
        return await self._client._drive(_ops.logs(self.id))

    def aevents(self, after: int = 0) -> AsyncIterator[RunEvent]:
        """Async :meth:`Run.events`: ``async for event in run.aevents(): ...``."""
        return self._client._events(self.id, after)

    async def download_checkpoint(self, path: str | Path, kind: str = "lightning") -> Path:
        return await self._client._drive(_ops.download_checkpoint(self.id, Path(path), kind))


class RunList(list):  # type: ignore[type-arg]
    """``client.runs()``: a list of runs that displays as a table in notebooks."""

    _COLUMNS = ("id", "name", "status", "created", "datasets", "metrics")

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        for run in self:
            d = run.data
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(d.final_metrics.items())[:4])
            rows.append((d.id, d.name, d.status.value, d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                         ", ".join(d.datasets), metrics))
        return rows

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{c}</th>" for c in self._COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self._rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        rows = [self._COLUMNS, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._COLUMNS))]
        printer.text("\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows))
