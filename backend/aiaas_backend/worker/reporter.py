"""Sends a run's metrics and log lines to the API in batches, from a thread.

Training threads only append a tuple to a list, so a module that logs on every
step of thousands per second is not slowed by the network. Every event carries
a worker sequence number, so a batch that is retried after a lost reply is
stored once. What cannot be delivered by the end is spooled to a file the
executor ingests.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from aiaas_sdk.wire import WorkerReply, WorkerStatus


class Reporter:
    def __init__(
        self,
        api_url: str,
        server_info: str | None,
        run_id: str,
        attempt: int,
        token: str,
        *,
        api_socket: str | None = None,
        flush_every: float = 0.1,
        max_batch: int = 20_000,
        orphan_after: float = 600.0,
    ) -> None:
        self._api_url = api_url
        self._server_info = Path(server_info) if server_info else None
        self._run_id = run_id
        self._attempt = attempt
        # In a sandbox there is no network: the API server's Unix socket is bound in instead.
        transport = httpx.HTTPTransport(uds=api_socket) if api_socket else None
        self._http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10.0, transport=transport)
        self._pending: list[tuple[int, str, float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wseq = 0
        self._flush_every = flush_every
        self._max_batch = max_batch
        self._orphan_after = orphan_after
        self._last_contact = time.monotonic()
        self._stop = threading.Event()
        self.cancel_requested = False
        self._server_wseq = 0
        # The server no longer knows this worker (run requeued elsewhere or ended).
        self.revoked = False
        self._thread = threading.Thread(target=self._loop, name="aiaas-reporter", daemon=True)
        self._thread.start()

    # -- called from training code ------------------------------------------
    def metrics(self, values: dict[str, float], step: int | None, epoch: int | None) -> None:
        """One ``log_metrics`` call's points, under one lock."""
        now = time.time()
        with self._lock:
            for name, value in values.items():
                self._wseq += 1
                self._pending.append(
                    (self._wseq, "metric", now, {"name": name, "value": value, "step": step, "epoch": epoch})
                )

    def progress(self, step: int, total_steps: int | None, epoch: int, max_epochs: int | None) -> None:
        self._add("progress", {"step": step, "total_steps": total_steps, "epoch": epoch, "max_epochs": max_epochs})

    def log(self, line: str) -> None:
        self._add("log", {"line": line})

    def _add(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._wseq += 1
            self._pending.append((self._wseq, kind, time.time(), data))

    @property
    def should_stop(self) -> bool:
        """Stop training: cancelled, revoked, or no contact with the server for too long."""
        return (
            self.cancel_requested
            or self.revoked
            or time.monotonic() - self._last_contact > self._orphan_after
        )

    # -- transport ------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self._api_url}/v1/worker/runs/{self._run_id}/{path}"

    def _refresh_url(self) -> None:
        # A restarted local server may listen on a new port; it says where in server.json.
        if self._server_info is None:
            return
        try:
            self._api_url = json.loads(self._server_info.read_text())["url"]
        except (OSError, ValueError, KeyError):
            pass

    def _post(self, path: str, body: str) -> bool:
        if self.revoked:
            return False
        try:
            resp = self._http.post(self._url(path), content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError:
            self._refresh_url()
            return False
        if resp.status_code in (401, 404, 409):
            self.revoked = True
            return False
        if resp.status_code >= 400:
            return False
        self._last_contact = time.monotonic()
        reply = WorkerReply.model_validate_json(resp.content)
        self.cancel_requested = reply.cancel_requested
        self._server_wseq = reply.last_wseq
        return True

    def continue_numbering(self, deadline_s: float = 60.0) -> None:
        """Number events after those the server already holds for this attempt, as a worker
        group that Ray Train restarted must (the server drops numbers it has seen)."""
        deadline = time.monotonic() + deadline_s
        while not self._post("events", json.dumps({"attempt": self._attempt, "events": []})):
            if self.revoked or time.monotonic() > deadline:
                return
            time.sleep(0.2)
        with self._lock:
            self._wseq = max(self._wseq, self._server_wseq)

    def flush(self) -> bool:
        """Send everything pending; returns whether nothing is left."""
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = self._pending[: self._max_batch]
                body = json.dumps(
                    {
                        "attempt": self._attempt,
                        "events": [{"wseq": w, "kind": k, "time": t, "data": d} for w, k, t, d in batch],
                    }
                )
                if not self._post("events", body):
                    return False
                with self._lock:
                    del self._pending[: len(batch)]
                    if not self._pending:
                        return True

    def _loop(self) -> None:
        backoff = self._flush_every
        while not self._stop.wait(backoff):
            # An empty batch still goes out: it is the heartbeat that brings cancel requests.
            backoff = self._flush_every if self.flush() else min(backoff * 2, 5.0)

    def finish(self, status: WorkerStatus, spool: Path, deadline_s: float = 60.0) -> bool:
        """Deliver the remaining events and the final status; spool what could not go."""
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + deadline_s
        delivered = False
        delay = 0.2
        while time.monotonic() < deadline and not self.revoked:
            if self.flush() and self._post("status", status.model_dump_json()):
                delivered = True
                break
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        with self._lock:
            if self._pending:
                with spool.open("a") as f:
                    for w, k, t, d in self._pending:
                        f.write(json.dumps({"wseq": w, "kind": k, "time": t, "data": d}) + "\n")
        self._http.close()
        return delivered

    def status(self, status: WorkerStatus) -> None:
        """A status note during the run (the device in use); best effort."""
        self._post("status", status.model_dump_json())
