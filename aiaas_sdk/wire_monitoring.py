"""Wire schemas of deployment monitoring: events, alert rules, drift reports and webhooks.

Kept apart from :mod:`aiaas_sdk.wire` (which the backend imports the same way) so
that neither file grows past what one reader holds in their head.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, HttpUrl

EventKind = Literal["alert_raised", "alert_resolved", "replica_restarted", "updated", "rolled_back", "scaled",
                    "created"]
RuleName = Literal["p99_ms", "p95_ms", "error_rate", "queue_saturation", "drift"]
RULE_NAMES: tuple[str, ...] = ("p99_ms", "p95_ms", "error_rate", "queue_saturation", "drift")


class DeploymentEvent(BaseModel):
    """One entry of a deployment's ordered log: alerts raised and resolved, replicas restarted,
    updates, rollbacks and scaling. ``time`` is in unix seconds."""

    seq: int
    time: float
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class AlertRules(BaseModel):
    """A deployment's SLO rules; an unset (None) rule is not checked.

    Latency rules compare the percentile of successful requests in the window;
    ``error_rate`` the share of requests that failed on the server side;
    ``queue_saturation`` the mean of queue depth / ``max_queue``; ``drift`` the overall
    drift score (population stability index, see docs/monitoring.md).
    """

    p99_ms: float | None = Field(default=None, gt=0, description="alert when p99 latency exceeds this (ms)")
    p95_ms: float | None = Field(default=None, gt=0, description="alert when p95 latency exceeds this (ms)")
    error_rate: float | None = Field(default=None, gt=0, le=1, description="share of requests failing (0-1)")
    queue_saturation: float | None = Field(default=None, gt=0, le=1, description="mean queue depth / max_queue")
    drift: float | None = Field(default=None, gt=0, description="overall drift score (PSI; 0.2 is a common bar)")
    window_s: float = Field(default=30.0, ge=2, le=3600, description="the sliding window the rules look at")


class AlertsPublic(BaseModel):
    rules: AlertRules
    firing: list[str] = Field(description="rules breached now")
    since: dict[str, float] = Field(default_factory=dict, description="rule -> when it was raised (unix seconds)")
    values: dict[str, float | None] = Field(default_factory=dict,
                                            description="each rule's figure at the last evaluation (None: no data)")


class FeatureDrift(BaseModel):
    index: int = Field(description="feature number in the flattened (and, for wide inputs, pooled) row")
    score: float = Field(description="population stability index against the training histogram")
    train_mean: float
    train_std: float
    recent_mean: float
    shift_std: float = Field(description="(recent mean - training mean) / training std")


class DriftReport(BaseModel):
    """Recent inputs against the training data's statistics."""

    reference: bool = Field(description="whether the served run recorded its training inputs' statistics")
    sample_size: int = Field(description="recent rows in the sample")
    min_sample: int = Field(description="rows needed before a score is given")
    score: float | None = Field(description="overall: the largest feature score; None without reference or "
                                            "with too few rows")
    features: list[FeatureDrift] = Field(default_factory=list)
    pooled_from: int | None = Field(default=None, description="values per row before pooling to features")
    note: str | None = None


class WebhookSet(BaseModel):
    url: HttpUrl
    secret: str | None = Field(default=None, min_length=16, max_length=200,
                               description="HMAC-SHA256 key; the server makes one when left out")


class WebhookPublic(BaseModel):
    url: str
    secret: str | None = Field(default=None, description="shown only when it is set")


__all__ = ["RULE_NAMES", "AlertRules", "AlertsPublic", "DeploymentEvent", "DriftReport", "EventKind",
           "FeatureDrift", "RuleName", "WebhookPublic", "WebhookSet"]
