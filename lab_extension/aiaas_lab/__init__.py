"""The Jupyter server side of the aiaas JupyterLab extension.

Serves ``{base_url}/aiaas/...`` on the Jupyter server's own origin and
forwards to the aiaas backend with the key the *server* holds (``AIAAS_URL``
/ ``AIAAS_API_KEY`` / the aiaas config file of the user running Jupyter), so
the browser never sees the key and no CORS is opened. Every handler requires
Jupyter's authentication, and Jupyter's XSRF check guards the writes. A
backend URL chosen in the browser only selects among the backends the server
holds a key for (see :mod:`aiaas_lab.target`); it is never a destination.
"""

from __future__ import annotations

from typing import Any

from .handlers import setup_handlers


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aiaas_lab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    setup_handlers(server_app.web_app)
    server_app.log.info("aiaas: /aiaas/ forwards to the aiaas backend")
