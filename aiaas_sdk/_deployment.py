"""``Deployment`` and ``AsyncDeployment``: a trained model served as an endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _ops, _streaming
from ._errors import InvalidInput
from ._monitoring import AsyncDeploymentMonitoring, DeploymentMonitoring
from .wire import DeploymentPublic, DeploymentStats, OptimizationReport

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client


async def _many(predict: Any, xs: Iterable[Any], concurrency: int) -> list[Any]:
    """Order kept, at most ``concurrency`` requests in flight."""
    if concurrency < 1:
        raise InvalidInput(f"concurrency must be at least 1, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(x: Any) -> Any:
        async with gate:
            return await predict(x)

    return list(await asyncio.gather(*(one(x) for x in xs)))


class _DeploymentBase:
    def __init__(self, data: DeploymentPublic) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def run_id(self) -> str:
        """The run (model version) being served."""
        return self.data.run_id

    @property
    def optimization(self) -> OptimizationReport | None:
        """With ``deploy(optimize=...)``: the speed-up and largest output deviation measured
        for the version being served (``None`` for a model served as trained)."""
        return self.data.optimization

    def __repr__(self) -> str:
        d = self.data
        return f"<{type(self).__name__} {d.name!r} {d.status} run={d.run_id} replicas={d.ready_replicas}/{d.replicas}>"


class Deployment(DeploymentMonitoring, _DeploymentBase):
    """An endpoint serving one run's model. ``run.deploy(...)`` makes one;
    ``client.deployment(name)`` finds it from any notebook or process.

    ``predict(x)`` takes a batch (first dimension = batch) as a tensor, ndarray or
    nested list and returns the model's output for it in the same kind. JSON values
    (dicts, strings, lists of them) go through the module's ``decode_request`` and
    ``encode_response`` and come back as JSON values. ``stream(prompt)`` yields the
    text pieces of the module's ``generate(prompt, max_tokens=...)``.
    """

    def __init__(self, client: Client, data: DeploymentPublic) -> None:
        super().__init__(data)
        self._client = client
        self._async: tuple[asyncio.AbstractEventLoop, AsyncClient] | None = None

    def refresh(self) -> Deployment:
        self.data = self._client._drive(_ops.get_deployment(self.name))
        return self

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a Jupyter kernel with widgets: the live view; elsewhere: one line of text."""
        from .widgets import DeploymentView, widgets_available

        if widgets_available():
            return DeploymentView(self)._repr_mimebundle_(include, exclude)
        return {"text/plain": repr(self)}

    def watch(self, interval: float = 1.0, window_s: float = 300.0) -> Any:
        """Display the live view (figures polled every ``interval`` s, charts over the last
        ``window_s`` s) and return it; ``view.close()`` stops it. Outside a kernel with widgets,
        print the figures once and return them."""
        from .widgets import DeploymentView, widgets_available

        if widgets_available():
            from IPython.display import display

            view = DeploymentView(self, interval=interval, window_s=window_s)
            display(view)
            return view
        stats = self.stats()
        print(f"{self!r}\n{stats.requests} requests · {stats.errors} errors · p99 {stats.p99_ms} ms")
        return stats

    def wait_ready(self, timeout: float | None = 300) -> Deployment:
        """Block until a replica serves the current version."""
        self.data = self._client._drive(_ops.wait_deployment(self.name, timeout, want=self.data.run_id))
        return self

    def predict(self, x: Any) -> Any:
        return self._client._drive(_ops.predict(self.name, x))

    def _aclient(self, concurrency: int = 128) -> AsyncClient:
        from ._async_client import AsyncClient

        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            # One pooled connection set per event loop (a notebook keeps one loop).
            client = AsyncClient(self._client.url, self._client._api_key, timeout=self._client._timeout,
                                 max_connections=max(concurrency, 100), **self._client._tls_args)
            self._async = (loop, client)
        return self._async[1]

    async def apredict(self, x: Any) -> Any:
        return await self._aclient()._drive(_ops.predict(self.name, x))

    async def apredict_many(self, xs: Iterable[Any], concurrency: int = 128) -> list[Any]:
        """Predict every batch in ``xs`` over pooled connections; results in input order."""
        client = self._aclient(concurrency)
        return await _many(lambda x: client._drive(_ops.predict(self.name, x)), xs, concurrency)

    def stream(self, prompt: str, max_tokens: int = 64) -> Iterator[str]:
        """The text pieces the model's ``generate`` yields for ``prompt``, as they come.
        Breaking out of the loop stops the generation on the server."""
        return _streaming.sync_stream(self._client, self.name, prompt, max_tokens)

    def astream(self, prompt: str, max_tokens: int = 64) -> AsyncIterator[str]:
        """``async for piece in dep.astream(prompt): ...``, the async :meth:`stream`."""
        return _streaming.async_stream(self._aclient(), self.name, prompt, max_tokens)

    def stats(self) -> DeploymentStats:
        """Requests, errors, queue depth, batches, p50/p99 latency, and for streams the time to
        first piece and pieces/s (also at ``/metrics``)."""
        return self._client._drive(_ops.deployment_stats(self.name))

    def update(self, run_id: str, wait: bool = True) -> Deployment:
        """Serve another run's model: a rolling update, no request dropped."""
        self.data = self._client._drive(_ops.change_deployment(self.name, "update", {"run_id": run_id}))
        return self.wait_ready() if wait else self

    def rollback(self, wait: bool = True) -> Deployment:
        """Serve the version from before the last update again."""
        self.data = self._client._drive(_ops.change_deployment(self.name, "rollback"))
        return self.wait_ready() if wait else self

    def scale(self, replicas: int) -> Deployment:
        self.data = self._client._drive(_ops.change_deployment(self.name, "scale", {"replicas": replicas}))
        return self

    def delete(self) -> None:
        self._client._drive(_ops.delete_deployment(self.name))

    def create_key(self) -> str:
        """A key that may call (and read) only this deployment: share it to share the endpoint.
        Its holder uses ``aiaas.connect(url, api_key=key).deployment(name)``."""
        return self._client._drive(_ops.create_deployment_key(self.name))

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async[1].aclose()
            self._async = None


class AsyncDeployment(AsyncDeploymentMonitoring, _DeploymentBase):
    """The async twin of :class:`Deployment` (from ``await aclient.deployment(name)``)."""

    def __init__(self, client: AsyncClient, data: DeploymentPublic) -> None:
        super().__init__(data)
        self._client = client

    async def refresh(self) -> AsyncDeployment:
        self.data = await self._client._drive(_ops.get_deployment(self.name))
        return self

    async def wait_ready(self, timeout: float | None = 300) -> AsyncDeployment:
        self.data = await self._client._drive(_ops.wait_deployment(self.name, timeout, want=self.data.run_id))
        return self

    async def apredict(self, x: Any) -> Any:
        return await self._client._drive(_ops.predict(self.name, x))

    async def apredict_many(self, xs: Iterable[Any], concurrency: int = 128) -> list[Any]:
        return await _many(self.apredict, xs, concurrency)

    def astream(self, prompt: str, max_tokens: int = 64) -> AsyncIterator[str]:
        """``async for piece in dep.astream(prompt): ...`` (see :meth:`Deployment.stream`)."""
        return _streaming.async_stream(self._client, self.name, prompt, max_tokens)

    async def stats(self) -> DeploymentStats:
        return await self._client._drive(_ops.deployment_stats(self.name))

    async def update(self, run_id: str, wait: bool = True) -> AsyncDeployment:
        self.data = await self._client._drive(_ops.change_deployment(self.name, "update", {"run_id": run_id}))
        return await self.wait_ready() if wait else self

    async def rollback(self, wait: bool = True) -> AsyncDeployment:
        self.data = await self._client._drive(_ops.change_deployment(self.name, "rollback"))
        return await self.wait_ready() if wait else self

    async def scale(self, replicas: int) -> AsyncDeployment:
        self.data = await self._client._drive(_ops.change_deployment(self.name, "scale", {"replicas": replicas}))
        return self

    async def delete(self) -> None:
        await self._client._drive(_ops.delete_deployment(self.name))

    async def create_key(self) -> str:
        return await self._client._drive(_ops.create_deployment_key(self.name))
