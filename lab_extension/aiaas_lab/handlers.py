"""``/aiaas/status``, ``/aiaas/overview`` and ``/aiaas/api/...``: same-origin access to the backend.

Every answer about the connection is JSON the panel can show as one line:
``{"connected": false, "url", "reason", "error"}`` with status 503 when the
backend cannot be used, whatever the cause (no key, a URL the server holds no
key for, backend down, key refused). The key itself is never in a response.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from .target import HEADER, NotConnected, Target, resolve

# What the panel may do: read runs, deployments and models; cancel a run. Nothing else.
_READ = ("runs", "deployments", "models")
_WRITE = ("cancel",)
_ACTIVE = ("queued", "running")
# Enough for a sidebar; the SDK lists more.
_RUNS_SHOWN = 100


class _Base(APIHandler):
    def _target(self) -> Target:
        return resolve(self.request.headers.get(HEADER))

    def _not_connected(self, why: NotConnected) -> None:
        self.set_status(503)
        self.finish(json.dumps(why.body()))

    async def _call(self, http: httpx.AsyncClient, target: Target, method: str, path: str,
                    params: dict[str, Any] | None = None) -> httpx.Response:
        """One backend call; a transport failure or a refused key becomes :class:`NotConnected`."""
        try:
            resp = await http.request(method, f"{target.url}/v1/{path}", params=params,
                                      headers={"Authorization": f"Bearer {target.api_key}"})
        except httpx.HTTPError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise NotConnected(target.url, "certificate_not_trusted",
                                   f"the aiaas backend at {target.url} presented a TLS certificate the Jupyter server "
                                   "does not trust; if it comes from your own CA, start Jupyter with "
                                   "AIAAS_CA_BUNDLE=/path/to/ca.pem (or set ca_bundle in the aiaas config file)") from None
            raise NotConnected(target.url, "unreachable",
                               f"the aiaas backend at {target.url} could not be reached ({type(exc).__name__}); "
                               "is `aiaas server` running?") from None
        if resp.status_code == 401:
            raise NotConnected(target.url, "key_refused",
                               f"the aiaas backend at {target.url} refused the Jupyter server's API key; "
                               "create a new one with `aiaas keys create --user NAME`")
        return resp

    def _json(self, resp: httpx.Response) -> Any:
        if resp.status_code != 200:
            raise NotConnected(str(resp.request.url), "backend_error",
                               f"the aiaas backend answered {resp.status_code} to {resp.request.url.path}: "
                               f"{resp.text[:300]}")
        return resp.json()


class StatusHandler(_Base):
    """Connected or not, with a reason a person can act on, and how many runs are active."""

    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            target = self._target()
            async with httpx.AsyncClient(timeout=5.0, verify=target.verify) as http:
                runs = self._json(await self._call(http, target, "GET", "runs", {"limit": 1000}))["data"]
        except NotConnected as why:
            self._not_connected(why)
            return
        active = sum(1 for r in runs if r.get("status") in _ACTIVE)
        self.finish(json.dumps({"connected": True, "url": target.url, "active_runs": active}))


class OverviewHandler(_Base):
    """Everything the sidebar shows in one request: runs, deployments and their request counters."""

    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            target = self._target()
            async with httpx.AsyncClient(timeout=10.0, verify=target.verify) as http:
                runs_resp, deps_resp = await asyncio.gather(
                    self._call(http, target, "GET", "runs", {"limit": _RUNS_SHOWN}),
                    self._call(http, target, "GET", "deployments"),
                )
                runs = self._json(runs_resp)
                deployments = self._json(deps_resp)["data"]
                stats = await asyncio.gather(*(
                    self._call(http, target, "GET", f"deployments/{d['name']}/stats") for d in deployments
                ))
        except NotConnected as why:
            self._not_connected(why)
            return
        for dep, resp in zip(deployments, stats, strict=True):
            # A deployment deleted between the two calls has no stats: show it without them.
            dep["stats"] = resp.json() if resp.status_code == 200 else None
        self.finish(json.dumps({
            "connected": True, "url": target.url,
            "active_runs": sum(1 for r in runs["data"] if r.get("status") in _ACTIVE),
            "runs": runs["data"], "runs_total": runs["count"], "deployments": deployments,
        }))


class ProxyHandler(_Base):
    """Forwards an allowed call to ``{backend}/v1/{path}`` with the server-side key."""

    def _allowed(self, path: str, write: bool) -> bool:
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in _READ or ".." in parts:
            return False
        return not write or (len(parts) == 3 and parts[0] == "runs" and parts[2] in _WRITE)

    async def _forward(self, method: str, path: str) -> None:
        if not self._allowed(path, write=method != "GET"):
            raise tornado.web.HTTPError(404, f"/aiaas/api/{path} is not something the aiaas panel may call")
        query: dict[str, Any] = {k: self.get_argument(k) for k in self.request.arguments}
        try:
            target = self._target()
            async with httpx.AsyncClient(timeout=30.0, verify=target.verify) as http:
                resp = await self._call(http, target, method, path, query)
        except NotConnected as why:
            self._not_connected(why)
            return
        self.set_status(resp.status_code)
        self.set_header("Content-Type", resp.headers.get("content-type", "application/json"))
        self.finish(resp.content)

    @tornado.web.authenticated
    async def get(self, path: str) -> None:
        await self._forward("GET", path)

    @tornado.web.authenticated
    async def post(self, path: str) -> None:
        await self._forward("POST", path)


def setup_handlers(web_app: Any) -> None:
    base = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [
        (url_path_join(base, "aiaas", "status"), StatusHandler),
        (url_path_join(base, "aiaas", "overview"), OverviewHandler),
        (url_path_join(base, "aiaas", "api", "(.*)"), ProxyHandler),
    ])
