"""API errors: a JSON body ``{"detail": ..., "code": ...}`` that names the problem and the fix."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, object] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.code = code
        self.headers = headers
        # More fields of the body, for programs (a quota's name and value).
        self.extra = extra


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body: dict[str, object] = {"detail": exc.detail}
    if exc.code:
        body["code"] = exc.code
    body.update(exc.extra or {})
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def run_not_found(run_id: str) -> ApiError:
    # The same answer for "does not exist" and "belongs to someone else": existence is not leaked.
    return ApiError(404, f"no run {run_id!r} for this API key; list yours with client.runs()", "run_not_found")
