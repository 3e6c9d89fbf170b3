"""A deployment's event log (JSON or SSE), alert rules, drift report; a user's webhook."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aiaas_sdk.wire_monitoring import AlertRules, AlertsPublic, DeploymentEvent, DriftReport, WebhookPublic, WebhookSet

from ..deps import CurrentUser, SessionDep, TokenDep
from ..errors import ApiError
from ..models import Deployment, Webhook
from ..monitoring import events
from ..monitoring.monitor import Monitor
from ..security import api_key_for
from ..sse import HEADERS, follow, start_after
from .deployments import _owned

router = APIRouter(tags=["monitoring"])


def _monitor(request: Request) -> Monitor:
    return request.app.state.monitor


@router.get("/v1/deployments/{name}/events", operation_id="deployment_events",
            response_model=list[DeploymentEvent], responses={200: {"content": {"text/event-stream": {}}}})
def deployment_events(
    name: str, request: Request, session: SessionDep, user: CurrentUser, token: TokenDep,
    after: Annotated[int | None, Query(ge=0, description="only events after this seq")] = None,
    heartbeat: Annotated[float, Query(gt=0, le=300, description="seconds between SSE keep-alive comments")] = 15.0,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Any:
    """Alerts raised and resolved, replica restarts, updates, rollbacks and scaling, in order.

    A JSON list; with ``Accept: text/event-stream``, a live Server-Sent Event stream that
    resumes after ``Last-Event-ID`` and ends when the deployment is deleted."""
    dep_id = _owned(session, user, name).id
    start = start_after(after, last_event_id)
    if "text/event-stream" not in (accept or ""):
        return events.after(session, dep_id, start)
    return StreamingResponse(_stream(request, dep_id, start, heartbeat, token), media_type="text/event-stream",
                             headers=HEADERS)


def _stream(request: Request, dep_id: str, seq: int, heartbeat: float, token: str) -> AsyncIterator[bytes]:
    sessions = request.app.state.sessions

    def fetch(after_seq: int) -> tuple[list[DeploymentEvent], bool]:
        with sessions() as s:
            return events.after(s, dep_id, after_seq), s.get(Deployment, dep_id) is None

    def key_works() -> bool:
        with sessions() as s:
            return api_key_for(s, token) is not None

    return follow(request, dep_id, fetch, events.sse, seq, heartbeat, events.PAGE, key_works)


def _alerts(dep: Deployment, monitor: Monitor) -> AlertsPublic:
    firing = dep.alerts_firing or {}
    return AlertsPublic(rules=AlertRules.model_validate(dep.alert_rules or {}), firing=sorted(firing),
                        since={k: v.get("since") for k, v in firing.items() if v.get("since") is not None},
                        values=monitor.values(dep.id))


@router.get("/v1/deployments/{name}/alerts", operation_id="deployment_alerts")
def get_alerts(name: str, session: SessionDep, user: CurrentUser, request: Request) -> AlertsPublic:
    """The deployment's rules, which are firing, and each rule's figure at the last evaluation."""
    return _alerts(_owned(session, user, name), _monitor(request))


@router.patch("/v1/deployments/{name}/alerts", operation_id="set_deployment_alerts")
def set_alerts(name: str, session: SessionDep, user: CurrentUser, request: Request,
               body: Annotated[dict[str, Any], Body(examples=[{"p99_ms": 50, "error_rate": 0.01, "drift": None}])]
               ) -> AlertsPublic:
    """Change the named rules only; a rule set to null is removed (it resolves if it was firing)."""
    dep = _owned(session, user, name)
    unknown = sorted(set(body) - set(AlertRules.model_fields))
    if unknown:
        raise ApiError(400, f"unknown alert rule(s) {', '.join(unknown)}: the rules are "
                       f"{', '.join(AlertRules.model_fields)}", "bad_alert_rules")
    try:
        rules = AlertRules.model_validate({**(dep.alert_rules or {}), **body})
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(400, f"bad alert rules: {problems}", "bad_alert_rules") from None
    kept = rules.model_dump(exclude_none=True)
    # None takes the deployment off the alert loop, but not while an alert fires: the loop resolves it.
    dep.alert_rules = kept if set(kept) - {"window_s"} or dep.alerts_firing else None
    session.commit()
    return _alerts(dep, _monitor(request))


@router.get("/v1/deployments/{name}/drift", operation_id="deployment_drift")
async def get_drift(name: str, request: Request, user: CurrentUser) -> DriftReport:
    """Recent inputs (one row in N, the last 2048 kept) against the training inputs' statistics."""

    def lookup() -> tuple[str, str]:
        with request.app.state.sessions() as session:
            dep = _owned(session, user, name)
            return dep.id, dep.run_id

    dep_id, run_id = await run_in_threadpool(lookup)
    return DriftReport.model_validate(await run_in_threadpool(_monitor(request).drift_report, dep_id, run_id))


@router.put("/v1/webhook", operation_id="set_webhook")
def set_webhook(body: WebhookSet, session: SessionDep, user: CurrentUser) -> WebhookPublic:
    """Where this user's alert events are POSTed, signed with HMAC-SHA256 (docs/monitoring.md)."""
    secret = body.secret or secrets.token_urlsafe(32)
    hook = session.get(Webhook, user.id)
    if hook is None:
        session.add(Webhook(user_id=user.id, url=str(body.url), secret=secret))
    else:
        hook.url, hook.secret = str(body.url), secret
    session.commit()
    return WebhookPublic(url=str(body.url), secret=secret)


@router.get("/v1/webhook", operation_id="get_webhook")
def get_webhook(session: SessionDep, user: CurrentUser) -> WebhookPublic:
    hook = session.get(Webhook, user.id)
    if hook is None:
        raise ApiError(404, "no webhook is set for this user; set one with client.set_webhook(url)", "no_webhook")
    return WebhookPublic(url=hook.url)


@router.delete("/v1/webhook", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_webhook")
def delete_webhook(session: SessionDep, user: CurrentUser) -> Response:
    hook = session.get(Webhook, user.id)
    if hook is not None:
        session.delete(hook)
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


__all__ = ["router"]
