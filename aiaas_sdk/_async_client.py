"""``AsyncClient``: the async twin of ``Client``, over the same operations in ``_ops``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from . import _dataset_methods, _keys, _monitoring, _ops, _sse
from ._client import _Base, _part_path
from ._dataset import refs
from ._deployment import AsyncDeployment
from ._errors import error_from_response, error_from_transport
from ._loop_bound import close_with_loop
from ._run import AsyncRun
from .wire import ModelVersion, RunEvent


class AsyncClient(_keys.AsyncKeysMixin, _monitoring.AsyncClientWebhooks, _dataset_methods.AsyncClientDatasets,
                  _Base):
    """The async twin of :class:`Client`; make one with :func:`aiaas.connect_async`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | None = None, ca_bundle: str | Path | None = None, allow_insecure: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        super().__init__(url, api_key, timeout, ca_bundle=ca_bundle, allow_insecure=allow_insecure)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        if transport is None:
            # httpx's own async pool collapses under many concurrent requests (~150 req/s at
            # 64 in flight here); aiohttp's, behind the same httpx API, keeps ~4,000.
            transport = AiohttpTransport(limits=limits, verify=self._verify)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=self._http_timeout(), transport=transport, limits=limits
        )
        self._loop_guard: AsyncGenerator[None, None] | None = None

    async def _bind_loop(self) -> None:
        """On first use: close the pool when its event loop closes (``asyncio.run`` in a script)."""
        if self._loop_guard is None and not self._http.is_closed:
            self._loop_guard = await close_with_loop(self._http.aclose)

    async def _send(self, call: _ops.Call) -> httpx.Response | None:
        await self._bind_loop()
        kwargs = self._request_kwargs(call)
        for attempt in range(self._attempts(call)):
            response = None
            try:
                if call.stream_to is not None:
                    async with self._http.stream(call.method, call.path, **kwargs) as response:
                        if response.status_code < 400:
                            tmp = _part_path(call.stream_to)
                            with tmp.open("wb") as f:
                                async for chunk in response.aiter_bytes():
                                    f.write(chunk)
                            tmp.replace(call.stream_to)
                            return None
                        await response.aread()
                else:
                    response = await self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as exc:
                if not self._should_retry(call, attempt, None):
                    raise error_from_transport(exc, self.url) from exc
                await asyncio.sleep(self._retry.delay(attempt))
                continue
            if response.status_code < 400:
                return response
            if not self._should_retry(call, attempt, response):
                raise error_from_response(response)
            await asyncio.sleep(self._retry.delay(attempt, response))
        raise AssertionError("unreachable")

    async def _drive(self, op: _ops.Op[Any]) -> Any:
        try:
            step = next(op)
            while True:
                if isinstance(step, _ops.Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(await self._send(step))
        except StopIteration as done:
            return done.value

    async def _events(self, run_id: str, after: int) -> AsyncIterator[RunEvent]:
        await self._bind_loop()
        state = _sse.Resume(after)
        while True:
            state.reconnecting()
            try:
                async with self._http.stream(**self._stream_request(run_id, state.after)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    async for line in response.aiter_lines():
                        event = state.handle(line)
                        if event == _sse.END:
                            return
                        if isinstance(event, RunEvent):
                            yield event
                failure: httpx.TransportError = httpx.RemoteProtocolError("event stream closed early")
            except httpx.TransportError as exc:
                failure = exc
            if (delay := state.policy.failed()) is None:
                raise error_from_transport(failure, self.url) from failure
            await asyncio.sleep(delay)

    async def train(
        self,
        model: Any,
        datamodule: Any = None,
        *,
        name: str | None = None,
        test: bool = False,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datasets: list[Any] | None = None,
        checkpoint_every_n_epochs: int | None = None,
        **trainer_kwargs: Any,
    ) -> AsyncRun:
        """Async :meth:`Client.train`."""
        data = await self._drive(
            _ops.submit(
                model,
                datamodule=datamodule,
                train_dataloaders=train_dataloaders,
                val_dataloaders=val_dataloaders,
                name=name,
                test=test,
                trainer_kwargs=trainer_kwargs,
                datasets=refs(datasets),
                checkpoint_every_n_epochs=checkpoint_every_n_epochs,
            )
        )
        return AsyncRun(self, data)

    async def run(self, run_id: str) -> AsyncRun:
        return AsyncRun(self, await self._drive(_ops.get_run(run_id)))

    async def runs(self, limit: int = 100) -> list[AsyncRun]:
        return [AsyncRun(self, data) for data in await self._drive(_ops.list_runs(limit))]

    async def info(self) -> dict[str, Any]:
        return await self._drive(_ops.info())

    async def models(self) -> list[ModelVersion]:
        return await self._drive(_ops.models())

    async def deploy(self, run_id: str, name: str, *, wait: bool = True, **settings: Any) -> AsyncDeployment:
        spec = _ops.deployment_spec(name=name, run_id=run_id, **settings)
        dep = AsyncDeployment(self, await self._drive(_ops.create_deployment(spec)))
        return await dep.wait_ready() if wait else dep

    async def deployment(self, name: str) -> AsyncDeployment:
        return AsyncDeployment(self, await self._drive(_ops.get_deployment(name)))

    async def deployments(self) -> list[AsyncDeployment]:
        return [AsyncDeployment(self, d) for d in await self._drive(_ops.list_deployments())]

    async def aclose(self) -> None:
        """Close the connection pool now (otherwise it closes with its event loop)."""
        guard, self._loop_guard = self._loop_guard, None
        if guard is not None:
            await guard.aclose()  # closes the pool on the way out
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
