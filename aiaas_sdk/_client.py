"""``Client``, a thin driver over the operations in ``_ops``, and what it shares with
``AsyncClient`` (:mod:`._async_client`)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from . import _dataset_methods, _keys, _monitoring, _ops, _sse, _tls, config
from ._dataset import refs
from ._deployment import Deployment
from ._errors import AuthenticationError, error_from_response, error_from_transport
from ._run import Run, RunList
from .wire import ModelVersion, RunEvent


def _user_agent() -> str:
    try:
        return f"aiaas-sdk/{metadata.version('aiaas')}"
    except metadata.PackageNotFoundError:
        return "aiaas-sdk/dev"


class _Base:
    def __init__(self, url: str | None, api_key: str | None, timeout: float | None, **tls: Any) -> None:
        settings = config.resolve(url, api_key, timeout, **tls)
        self.url, self._api_key, self._timeout = settings.url, settings.api_key, settings.timeout
        self._tls_args, self._verify = _tls.client_options(settings.ca_bundle, settings.allow_insecure)
        self._retry = _ops.RetryPolicy()
        self._headers = {"User-Agent": _user_agent()}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"

    def _http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0))

    def _request_kwargs(self, call: _ops.Call) -> dict[str, Any]:
        if not self._api_key and call.path != "/v1/info":
            raise AuthenticationError(
                f"no API key for {self.url}: pass api_key= to aiaas.connect(), set AIAAS_API_KEY, "
                "or create one with `aiaas keys create --user NAME`"
            )
        kwargs: dict[str, Any] = {"params": call.params, "json": call.json, "files": call.files, "data": call.data,
                                  "content": call.content, "headers": call.headers}
        if call.timeout is not None:
            kwargs["timeout"] = httpx.Timeout(call.timeout, connect=10.0)
        return {k: v for k, v in kwargs.items() if v is not None}

    def _attempts(self, call: _ops.Call) -> int:
        return call.attempts or self._retry.attempts

    def _should_retry(self, call: _ops.Call, attempt: int, response: httpx.Response | None) -> bool:
        if not call.idempotent or attempt + 1 >= self._attempts(call):
            return False
        return response is None or response.status_code in (call.retry_on or self._retry.retry_statuses)

    def _stream_request(self, run_id: str, after: int) -> dict[str, Any]:
        return {
            "method": "GET",
            "url": f"/v1/runs/{run_id}/events",
            "headers": {"Last-Event-ID": str(after), "Accept": "text/event-stream"},
            # Heartbeats come every 15 s: a silent minute means a dead connection.
            "timeout": httpx.Timeout(self._timeout, read=60.0),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class Client(_keys.KeysMixin, _monitoring.ClientWebhooks, _dataset_methods.ClientDatasets, _Base):
    """A connection to an aiaas backend. Make one with :func:`aiaas.connect`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | None = None, ca_bundle: str | Path | None = None, allow_insecure: bool | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, ca_bundle=ca_bundle, allow_insecure=allow_insecure)
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=self._http_timeout(), transport=transport, verify=self._verify
        )
        # A client nobody closed closes its connections when collected or at exit, quietly.
        self._closer = weakref.finalize(self, self._http.close)

    # -- driver ------------------------------------------------------------
    def _send(self, call: _ops.Call) -> httpx.Response | None:
        kwargs = self._request_kwargs(call)
        for attempt in range(self._attempts(call)):
            response = None
            try:
                if call.stream_to is not None:
                    with self._http.stream(call.method, call.path, **kwargs) as response:
                        if response.status_code < 400:
                            _stream_to_file(response.iter_bytes(), call.stream_to)
                            return None
                        response.read()
                else:
                    response = self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as exc:
                if not self._should_retry(call, attempt, None):
                    raise error_from_transport(exc, self.url) from exc
                time.sleep(self._retry.delay(attempt))
                continue
            if response.status_code < 400:
                return response
            if not self._should_retry(call, attempt, response):
                raise error_from_response(response)
            time.sleep(self._retry.delay(attempt, response))
        raise AssertionError("unreachable")

    def _drive(self, op: _ops.Op[Any]) -> Any:
        try:
            step = next(op)
            while True:
                if isinstance(step, _ops.Sleep):
                    time.sleep(step.seconds)
                    step = op.send(None)
                else:
                    step = op.send(self._send(step))
        except StopIteration as done:
            return done.value

    def _events(self, run_id: str, after: int) -> Iterator[RunEvent]:
        state = _sse.Resume(after)
        while True:
            state.reconnecting()
            try:
                with self._http.stream(**self._stream_request(run_id, state.after)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response)
                    for line in response.iter_lines():
                        event = state.handle(line)
                        if event == _sse.END:
                            return
                        if isinstance(event, RunEvent):
                            yield event
                failure: httpx.TransportError = httpx.RemoteProtocolError("event stream closed early")
            except httpx.TransportError as exc:
                failure = exc
            # Dropped, or closed without "end" (a server restart, a proxy): resume where we are.
            if (delay := state.policy.failed()) is None:
                raise error_from_transport(failure, self.url) from failure
            time.sleep(delay)

    # -- public API ----------------------------------------------------------
    def train(
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
    ) -> Run:
        """Train ``model`` (a LightningModule) on the backend and return the :class:`Run` at once.

        ``trainer_kwargs`` go to ``Trainer(...)`` on the worker (``max_epochs``,
        ``accelerator``, ``devices``, ``precision``, ``callbacks``, ...). With
        ``test=True`` the worker runs ``trainer.test`` after fitting.

        On a backend started with ``--executor ray``, ``devices`` (per node) times
        ``num_nodes`` is the number of Ray Train workers, one DDP process each:
        ``devices=2, num_nodes=2`` trains on four. The local executor runs one process
        per run, so it refuses ``num_nodes > 1`` and ``devices > 1`` on the CPU.

        ``datasets=["pets", "pets:1"]`` names uploaded datasets the run reads through
        ``aiaas.data_path("pets")``; each is pinned to a version now (a name alone: the
        newest), and ``run.datasets`` says which.

        The worker keeps a resumable checkpoint, written in the background while training
        goes on, from which a run resumes if its worker dies or the backend restarts.
        ``checkpoint_every_n_epochs=N`` takes it at the end of every N-th epoch; by default
        (None) it is taken by time: at an epoch's end at most every 10 s locally (every
        ``AIAAS_CHECKPOINT_EVERY_S`` on a Ray Train worker group), and within an epoch
        longer than ``AIAAS_CHECKPOINT_EVERY_S`` (60 s).
        """
        data = self._drive(
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
        return Run(self, data)

    def run(self, run_id: str) -> Run:
        """Look a run up by id, e.g. after a kernel restart."""
        return Run(self, self._drive(_ops.get_run(run_id)))

    def runs(self, limit: int = 100) -> list[Run]:
        """This user's runs, newest first (a list that displays as a table in notebooks)."""
        return RunList(Run(self, data) for data in self._drive(_ops.list_runs(limit)))

    def info(self) -> dict[str, Any]:
        """What the backend runs: version, executor, GPUs, slots and its environment."""
        return self._drive(_ops.info())

    def models(self) -> list[ModelVersion]:
        """Every succeeded run is a model version you can deploy, newest first."""
        return self._drive(_ops.models())

    def deploy(self, run_id: str, name: str, *, wait: bool = True, **settings: Any) -> Deployment:
        """Serve ``run_id``'s model at ``name``; ``settings`` as in :meth:`Run.deploy`
        (one list of settings, checked by the wire schema, for both clients and Run)."""
        spec = _ops.deployment_spec(name=name, run_id=run_id, **settings)
        dep = Deployment(self, self._drive(_ops.create_deployment(spec)))
        return dep.wait_ready() if wait else dep

    def deployment(self, name: str) -> Deployment:
        """Find a deployment by name, from any notebook or process."""
        return Deployment(self, self._drive(_ops.get_deployment(name)))

    def deployments(self) -> list[Deployment]:
        return [Deployment(self, d) for d in self._drive(_ops.list_deployments())]

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _stream_to_file(chunks: Any, path: Path) -> None:
    tmp = _part_path(path)
    with tmp.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
    tmp.replace(path)
