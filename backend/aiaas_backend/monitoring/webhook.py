"""Alert events POSTed to a user's webhook, signed, retried, never in anyone's way.

Each delivery is its own task (at most :data:`MAX_PENDING` at once; more are
dropped with a warning), so a slow or failing receiver delays nothing but its
own deliveries; the predict path never touches this module.

The body is JSON; ``X-Aiaas-Signature: sha256=<hex>`` is HMAC-SHA256 of the
exact body bytes under the user's secret. ``X-Aiaas-Delivery`` stays the same
across retries, so a receiver can drop duplicates.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

import httpx

log = logging.getLogger("aiaas.webhook")

MAX_PENDING = 1000
SIGNATURE_HEADER = "X-Aiaas-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Delivers with up to ``attempts`` tries, waiting ``base_delay_s * 2**k`` (capped) between them."""

    def __init__(self, attempts: int = 5, base_delay_s: float = 0.5, max_delay_s: float = 30.0,
                 timeout_s: float = 5.0) -> None:
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._timeout = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Deliveries not finished yet (retries included)."""
        return len(self._tasks)

    def send(self, url: str, secret: str, payload: dict[str, Any]) -> None:
        """Queue a delivery (call on the event loop); returns at once."""
        if len(self._tasks) >= MAX_PENDING:
            log.warning("webhook delivery to %s dropped: %d deliveries pending", url, len(self._tasks))
            return
        if self._http is None:
            # No redirects: a receiver must not bounce signed bodies elsewhere.
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        task = asyncio.get_running_loop().create_task(self._deliver(url, secret, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, secret: str, payload: dict[str, Any]) -> None:
        assert self._http is not None
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body),
                   "X-Aiaas-Delivery": uuid.uuid4().hex, "X-Aiaas-Event": str(payload.get("kind", "")),
                   "User-Agent": "aiaas-webhook/1"}
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
            try:
                response = await self._http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("webhook %s: attempt %d failed: %s", url, attempt + 1, exc)
                continue
            if response.status_code < 300:
                return
            # 4xx (but 408 and 429) means the receiver refuses this body: sending it again changes nothing.
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                log.warning("webhook %s refused the delivery with %d", url, response.status_code)
                return
            log.warning("webhook %s: attempt %d got %d", url, attempt + 1, response.status_code)
        log.warning("webhook %s: gave up after %d attempts", url, self.attempts)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()


__all__ = ["SIGNATURE_HEADER", "WebhookSender", "sign"]
