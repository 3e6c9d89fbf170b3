"""Every SDK operation as an I/O-free generator.

An operation yields :class:`Call` (an HTTP request to make) or :class:`Sleep`
and receives the response; it returns its result. ``Client`` drives these
with ``httpx.Client`` and ``time.sleep``, ``AsyncClient`` with
``httpx.AsyncClient`` and ``asyncio.sleep``: request building, paging,
polling and parsing exist once, so the sync and async surfaces cannot drift.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

import pydantic

from . import packaging, tensor_codec
from ._errors import AiaasError, InvalidInput, RunCancelled, RunFailed, WaitTimeout, invalid_from_validation
from .wire import (
    DeploymentCreate,
    DeploymentPublic,
    DeploymentsPublic,
    DeploymentStats,
    LogsPage,
    MetricPoint,
    MetricsPage,
    ModelsPublic,
    ModelVersion,
    RunPublic,
    RunSpec,
    RunsPublic,
    RunStatus,
)

T = TypeVar("T")


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    # Safe to send twice: the drivers retry these on transport errors and 502/503/504.
    idempotent: bool = True
    stream_to: Path | None = None
    timeout: float | None = None
    content: bytes | list[bytes] | None = None
    headers: dict[str, str] | None = None
    # Statuses worth retrying for this call (default: the policy's 502/503/504).
    retry_on: frozenset[int] | None = None
    attempts: int | None = None


@dataclass
class Sleep:
    seconds: float


Op = Generator[Call | Sleep, httpx.Response | None, T]

_PAGE = 10_000


def _response(resp: httpx.Response | None) -> httpx.Response:
    assert resp is not None, "driver must send a response for a Call"
    return resp


def info() -> Op[dict[str, Any]]:
    return _response((yield Call("GET", "/v1/info"))).json()


def split_trainer_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate JSON-able Trainer kwargs (visible to the backend) from objects to pickle."""
    plain, pickled = {}, {}
    for key, value in kwargs.items():
        try:
            spec = RunSpec(trainer_kwargs={key: value})
            json.dumps(spec.trainer_kwargs)
            ok = spec.trainer_kwargs[key] == value and type(spec.trainer_kwargs[key]) is type(value)
        except (ValueError, TypeError):
            ok = False
        (plain if ok else pickled)[key] = value
    return plain, pickled


def deployment_spec(**settings: Any) -> DeploymentCreate:
    """The settings of ``deploy()`` checked before anything is sent."""
    try:
        return DeploymentCreate(**settings)
    except pydantic.ValidationError as exc:
        raise invalid_from_validation(exc, "deployment settings") from exc


def submit(
    model: Any,
    *,
    datamodule: Any = None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    name: str | None = None,
    test: bool = False,
    trainer_kwargs: dict[str, Any],
    datasets: list[str] | None = None,
    checkpoint_every_n_epochs: int | None = None,
) -> Op[RunPublic]:
    lightning_package = packaging.lightning_package_of(model)
    plain, pickled = split_trainer_kwargs(trainer_kwargs)
    for reserved in ("model", "datamodule", "ckpt_path", "default_root_dir"):
        if reserved in plain or reserved in pickled:
            raise InvalidInput(
                f"train() does not take the Trainer argument {reserved!r}: aiaas manages it; remove it"
            )
    try:
        spec = RunSpec(name=name, trainer_kwargs=plain, test=test, datasets=datasets or [],
                       checkpoint_every_n_epochs=checkpoint_every_n_epochs)
    except pydantic.ValidationError as exc:
        raise invalid_from_validation(exc, "run settings") from exc
    blob = packaging.pack(
        {
            "model": model,
            "datamodule": datamodule,
            "train_dataloaders": train_dataloaders,
            "val_dataloaders": val_dataloaders,
            "trainer_kwargs": pickled,
        },
        lightning_package=lightning_package,
    )
    resp = yield Call(
        "POST",
        "/v1/runs",
        data={"spec": spec.model_dump_json()},
        files={"payload": ("payload.bin", blob, "application/octet-stream")},
        idempotent=False,
        timeout=max(60.0, len(blob) / 5e6),
    )
    return RunPublic.model_validate_json(_response(resp).content)


def get_run(run_id: str) -> Op[RunPublic]:
    resp = yield Call("GET", f"/v1/runs/{run_id}")
    return RunPublic.model_validate_json(_response(resp).content)


def list_runs(limit: int = 100) -> Op[list[RunPublic]]:
    resp = yield Call("GET", "/v1/runs", params={"limit": limit})
    return RunsPublic.model_validate_json(_response(resp).content).data


def cancel(run_id: str) -> Op[RunPublic]:
    resp = yield Call("POST", f"/v1/runs/{run_id}/cancel")
    return RunPublic.model_validate_json(_response(resp).content)


def metrics(run_id: str, name: str | None = None, after: int = 0) -> Op[list[MetricPoint]]:
    points: list[MetricPoint] = []
    while True:
        params: dict[str, Any] = {"after": after, "limit": _PAGE}
        if name:
            params["name"] = name
        page = MetricsPage.model_validate_json(
            _response((yield Call("GET", f"/v1/runs/{run_id}/metrics", params=params))).content
        )
        points.extend(page.data)
        if len(page.data) < _PAGE:
            return points
        after = page.next_after


def logs(run_id: str, after: int = 0) -> Op[str]:
    lines: list[str] = []
    while True:
        page = LogsPage.model_validate_json(
            _response(
                (yield Call("GET", f"/v1/runs/{run_id}/logs", params={"after": after, "limit": _PAGE}))
            ).content
        )
        lines.extend(line.line for line in page.data)
        if len(page.data) < _PAGE:
            return "\n".join(lines)
        after = page.next_after


def download_checkpoint(run_id: str, path: Path, kind: str) -> Op[Path]:
    if kind not in ("lightning", "weights"):
        raise InvalidInput(f"kind must be 'lightning' (a Trainer checkpoint) or 'weights' (a state_dict), got {kind!r}")
    yield Call("GET", f"/v1/runs/{run_id}/checkpoint", params={"kind": kind}, stream_to=path, timeout=600)
    return path


def wait(run_id: str, timeout: float | None = None, raise_on_failure: bool = True) -> Op[RunPublic]:
    """Poll until the run ends; fast at first, then at most twice a second."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.05
    while True:
        run = yield from get_run(run_id)
        if run.status.terminal:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"run {run_id} is still {run.status.value} after {timeout} s")
        yield Sleep(delay)
        delay = min(delay * 1.5, 0.5)
    if raise_on_failure:
        raise_for_run(run)
    return run


def raise_for_run(run: RunPublic) -> None:
    if run.status is RunStatus.failed:
        raise RunFailed(f"run {run.id} ({run.name}) failed: {run.error}", run_id=run.id, traceback=run.traceback)
    if run.status is RunStatus.cancelled:
        raise RunCancelled(f"run {run.id} ({run.name}) was cancelled", run_id=run.id)


# -- deployments ------------------------------------------------------------------


def _deployment(resp: httpx.Response | None) -> DeploymentPublic:
    return DeploymentPublic.model_validate_json(_response(resp).content)


def models() -> Op[list[ModelVersion]]:
    return ModelsPublic.model_validate_json(_response((yield Call("GET", "/v1/models"))).content).data


# Deploying with optimize measures the model first (torch.compile alone can take a minute).
_OPTIMIZE_TIMEOUT_S = 660.0


def create_deployment(spec: DeploymentCreate) -> Op[DeploymentPublic]:
    return _deployment((yield Call("POST", "/v1/deployments", json=spec.model_dump(), idempotent=False,
                                   timeout=_OPTIMIZE_TIMEOUT_S if spec.optimize else None)))


def get_deployment(name: str) -> Op[DeploymentPublic]:
    return _deployment((yield Call("GET", f"/v1/deployments/{name}")))


def list_deployments() -> Op[list[DeploymentPublic]]:
    resp = yield Call("GET", "/v1/deployments")
    return DeploymentsPublic.model_validate_json(_response(resp).content).data


def change_deployment(name: str, action: str, body: dict[str, Any] | None = None) -> Op[DeploymentPublic]:
    # update and rollback measure the new version when the deployment is optimised
    return _deployment((yield Call("POST", f"/v1/deployments/{name}/{action}", json=body or {},
                                   timeout=_OPTIMIZE_TIMEOUT_S if action != "scale" else None)))


def delete_deployment(name: str) -> Op[None]:
    yield Call("DELETE", f"/v1/deployments/{name}")


def create_deployment_key(name: str) -> Op[str]:
    resp = yield Call("POST", f"/v1/deployments/{name}/keys", idempotent=False)
    return str(_response(resp).json()["key"])


def deployment_stats(name: str) -> Op[DeploymentStats]:
    resp = yield Call("GET", f"/v1/deployments/{name}/stats")
    return DeploymentStats.model_validate_json(_response(resp).content)


def wait_deployment(name: str, timeout: float | None, want: str | None = None) -> Op[DeploymentPublic]:
    """Poll until the deployment serves (and, with ``want``, serves that run)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.05
    while True:
        dep = yield from get_deployment(name)
        if dep.status == "ready" and (want is None or dep.run_id == want):
            return dep
        if dep.status == "failed":
            raise AiaasError(f"deployment {name!r} failed to start: {dep.error}")
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"deployment {name!r} is still {dep.status} after {timeout} s"
                               + (f": {dep.error}" if dep.error else ""))
        yield Sleep(delay)
        delay = min(delay * 1.5, 0.5)


_PREDICT_RETRY = frozenset({429, 503})


def _json_items(x: Any) -> bool:
    """JSON values for the module's hooks, not numbers: dicts, strings, lists of them, ragged lists."""
    if isinstance(x, (dict, str)):
        return True
    if not isinstance(x, (list, tuple)):
        return False
    try:
        tensor_codec.from_json(x)
    except tensor_codec.CodecError:
        return True
    return False


def predict_items(name: str, x: Any) -> Op[Any]:
    """JSON values through the module's ``decode_request``/``encode_response``: a list in, a list
    of answers out; one value (a dict, a string) in, its one answer out."""
    single = not isinstance(x, (list, tuple))
    try:
        body = json.dumps({"items": [x] if single else list(x)}).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"predict inputs must be tensors, numbers or JSON values; these are not: {exc}") from None
    resp = yield Call("POST", f"/v1/deployments/{name}/predict", content=body,
                      headers={"Content-Type": "application/json"}, retry_on=_PREDICT_RETRY, attempts=8)
    outputs = _response(resp).json()["outputs"]
    return outputs[0] if single else outputs


def predict(name: str, x: Any) -> Op[Any]:
    """One batch in, the model's output for it back, in the kind it came (tensor, ndarray, list);
    JSON values (see :func:`predict_items`) go through the module's hooks."""
    if _json_items(x):
        return (yield from predict_items(name, x))
    array, kind = tensor_codec.split_input(x)
    resp = yield Call(
        "POST", f"/v1/deployments/{name}/predict", content=tensor_codec.encode(array),
        headers={"Content-Type": tensor_codec.CONTENT_TYPE}, retry_on=_PREDICT_RETRY, attempts=8,
    )
    return tensor_codec.join_output(tensor_codec.decode(_response(resp).content), kind)


@dataclass
class RetryPolicy:
    attempts: int = 4
    backoff: float = 0.25
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503, 504}))

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        base = self.backoff * (2**attempt)
        if response is not None and (after := response.headers.get("retry-after")):
            try:
                base = min(float(after), 30.0)
            except ValueError:
                pass
        # Jittered: callers turned away together (a full queue answers every one of them
        # "Retry-After: 1") would otherwise all come back at the same instant, find the
        # queue full again, and run out of attempts while the server sat idle in between.
        return base * random.uniform(0.5, 1.5)
