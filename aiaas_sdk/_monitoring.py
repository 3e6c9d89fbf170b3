"""Deployment monitoring in the SDK: events, alert rules, drift, and the user's webhook.

The operations are I/O-free generators like those of ``_ops``; the mixins give
:class:`Deployment`, :class:`AsyncDeployment`, :class:`Client` and
:class:`AsyncClient` their methods over them, so the sync and async twins
cannot drift.
"""

from __future__ import annotations

from typing import Any

from ._ops import Call, Op, _response
from .wire_monitoring import AlertsPublic, DeploymentEvent, DriftReport, WebhookPublic


class _Unset:
    def __repr__(self) -> str:
        return "unchanged"


UNSET: Any = _Unset()


def deployment_events(name: str, after: int = 0) -> Op[list[DeploymentEvent]]:
    out: list[DeploymentEvent] = []
    while True:  # the server answers in pages of 5000
        page = _response((yield Call("GET", f"/v1/deployments/{name}/events", params={"after": after}))).json()
        out += [DeploymentEvent.model_validate(e) for e in page]
        if len(page) < 5000:
            return out
        after = out[-1].seq


def alerts(name: str) -> Op[AlertsPublic]:
    return AlertsPublic.model_validate_json(_response((yield Call("GET", f"/v1/deployments/{name}/alerts"))).content)


def set_alerts(name: str, changes: dict[str, Any]) -> Op[AlertsPublic]:
    body = {k: v for k, v in changes.items() if v is not UNSET}
    resp = yield Call("PATCH", f"/v1/deployments/{name}/alerts", json=body)
    return AlertsPublic.model_validate_json(_response(resp).content)


def get_drift(name: str) -> Op[DriftReport]:
    return DriftReport.model_validate_json(_response((yield Call("GET", f"/v1/deployments/{name}/drift"))).content)


def set_webhook(url: str, secret: str | None) -> Op[WebhookPublic]:
    resp = yield Call("PUT", "/v1/webhook", json={"url": url, "secret": secret})
    return WebhookPublic.model_validate_json(_response(resp).content)


def webhook() -> Op[WebhookPublic]:
    return WebhookPublic.model_validate_json(_response((yield Call("GET", "/v1/webhook"))).content)


def delete_webhook() -> Op[None]:
    yield Call("DELETE", "/v1/webhook")


class DeploymentMonitoring:
    """``events``, ``alerts``, ``set_alerts`` and ``drift`` for :class:`Deployment`."""

    name: str
    _client: Any

    def events(self, after: int = 0) -> list[DeploymentEvent]:
        """The deployment's log, oldest first: ``alert_raised``, ``alert_resolved``, ``replica_restarted``,
        ``updated``, ``rolled_back``, ``scaled``. ``after``: only events with a larger ``seq``."""
        return self._client._drive(deployment_events(self.name, after))

    def alerts(self) -> AlertsPublic:
        """The alert rules, which of them fire now (and since when), and each rule's last figure."""
        return self._client._drive(alerts(self.name))

    def set_alerts(self, *, p99_ms: float | None = UNSET, p95_ms: float | None = UNSET,
                   error_rate: float | None = UNSET, queue_saturation: float | None = UNSET,
                   drift: float | None = UNSET, window_s: float = UNSET) -> AlertsPublic:
        """Set SLO rules, e.g. ``set_alerts(p99_ms=50, error_rate=0.01, drift=0.2)``.

        Only the rules named change; ``None`` removes one. A breach over the sliding window
        (``window_s``, default 30 s) is an ``alert_raised`` event, its end ``alert_resolved``.
        """
        changes = dict(p99_ms=p99_ms, p95_ms=p95_ms, error_rate=error_rate, queue_saturation=queue_saturation,
                       drift=drift, window_s=window_s)
        return self._client._drive(set_alerts(self.name, changes))

    def drift(self) -> DriftReport:
        """Recent inputs against the training inputs: a score per feature and overall (PSI)."""
        return self._client._drive(get_drift(self.name))


class AsyncDeploymentMonitoring:
    """The async twin of :class:`DeploymentMonitoring`, for :class:`AsyncDeployment`."""

    name: str
    _client: Any

    async def events(self, after: int = 0) -> list[DeploymentEvent]:
        return await self._client._drive(deployment_events(self.name, after))

    async def alerts(self) -> AlertsPublic:
        return await self._client._drive(alerts(self.name))

    async def set_alerts(self, *, p99_ms: float | None = UNSET, p95_ms: float | None = UNSET,
                         error_rate: float | None = UNSET, queue_saturation: float | None = UNSET,
                         drift: float | None = UNSET, window_s: float = UNSET) -> AlertsPublic:
        changes = dict(p99_ms=p99_ms, p95_ms=p95_ms, error_rate=error_rate, queue_saturation=queue_saturation,
                       drift=drift, window_s=window_s)
        return await self._client._drive(set_alerts(self.name, changes))

    async def drift(self) -> DriftReport:
        return await self._client._drive(get_drift(self.name))


class ClientWebhooks:
    """The user's webhook, for :class:`Client`."""

    _drive: Any  # Client's

    def set_webhook(self, url: str, secret: str | None = None) -> WebhookPublic:
        """POST every alert raised or resolved on this user's deployments to ``url``.

        Each body is signed: header ``X-Aiaas-Signature: sha256=HMAC-SHA256(secret, body)``.
        Without ``secret`` the server makes one; it is returned here, and only here.
        """
        return self._drive(set_webhook(url, secret))

    def webhook(self) -> WebhookPublic:
        return self._drive(webhook())

    def delete_webhook(self) -> None:
        self._drive(delete_webhook())


class AsyncClientWebhooks:
    _drive: Any  # AsyncClient's

    async def set_webhook(self, url: str, secret: str | None = None) -> WebhookPublic:
        return await self._drive(set_webhook(url, secret))

    async def webhook(self) -> WebhookPublic:
        return await self._drive(webhook())

    async def delete_webhook(self) -> None:
        await self._drive(delete_webhook())


__all__ = ["AsyncClientWebhooks", "AsyncDeploymentMonitoring", "ClientWebhooks", "DeploymentMonitoring", "UNSET"]
