"""``/aiaas/status`` and ``/aiaas/api/...``: same-origin access to the backend for the browser."""

from __future__ import annotations

import json
from typing import Any

import httpx
import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from aiaas_sdk import config

# What the panel may do: read runs, deployments and models; cancel a run. Nothing else.
_READ = ("runs", "deployments", "models")
_WRITE = ("cancel",)


def _settings() -> config.Settings:
    # Resolved per request: a key added to the config file works without restarting Jupyter.
    return config.resolve()


class _Base(APIHandler):
    def _not_connected(self, url: str, reason: str) -> None:
        self.set_status(503)
        self.finish(json.dumps({"connected": False, "url": url, "error": reason}))


class StatusHandler(_Base):
    """Connected or not, with a reason a person can act on; never the key."""

    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            settings = _settings()
        except ValueError as exc:
            self._not_connected("", f"the aiaas settings are invalid: {exc}")
            return
        if not settings.api_key:
            self._not_connected(settings.url, "no aiaas API key on the Jupyter server: set AIAAS_API_KEY for it, "
                                "or run `aiaas keys create --user NAME` and put the key in the aiaas config file")
            return
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                resp = await http.get(f"{settings.url}/v1/runs", params={"limit": 1000},
                                      headers={"Authorization": f"Bearer {settings.api_key}"})
        except httpx.HTTPError as exc:
            self._not_connected(settings.url, f"the aiaas backend at {settings.url} could not be reached "
                                f"({type(exc).__name__}); is `aiaas server` running?")
            return
        if resp.status_code == 401:
            self._not_connected(settings.url, "the aiaas backend refused the Jupyter server's API key")
            return
        runs = resp.json().get("data", []) if resp.status_code == 200 else []
        active = sum(1 for r in runs if r.get("status") in ("queued", "running"))
        self.finish(json.dumps({"connected": resp.status_code == 200, "url": settings.url, "active_runs": active}))


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
        settings = _settings()
        if not settings.api_key:
            self._not_connected(settings.url, "no aiaas API key on the Jupyter server")
            return
        query: dict[str, Any] = {k: self.get_argument(k) for k in self.request.arguments}
        try:
            async with httpx.AsyncClient(timeout=30.0) as http:
                resp = await http.request(method, f"{settings.url}/v1/{path}", params=query,
                                          headers={"Authorization": f"Bearer {settings.api_key}"})
        except httpx.HTTPError as exc:
            self._not_connected(settings.url, f"the aiaas backend at {settings.url} could not be reached "
                                f"({type(exc).__name__})")
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
        (url_path_join(base, "aiaas", "api", "(.*)"), ProxyHandler),
    ])
