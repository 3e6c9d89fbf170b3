"""API errors: a JSON body ``{"detail": ..., "code": ...}`` that names the problem and the fix."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    """Every error answer: what went wrong and what to do (``detail``), a stable ``code``,
    and for some more fields (a quota's ``limit`` and ``value``)."""

    model_config = ConfigDict(extra="allow")
    detail: str
    code: str | None = None


# Declared on every operation, so the OpenAPI schema says what a client can get back:
# authentication and the rate limit apply everywhere (found by the schemathesis fuzzing).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    # JSON even on routes whose answer is text (Prometheus metrics).
    status: {"model": ErrorBody, "description": description, "content": {"application/json": {}}}
    for status, description in (
        (400, "the request is wrong in a way the schema cannot say (the detail names it)"),
        (401, "missing or unknown API key"),
        (403, "a key that may not do this (a scrape-only key)"),
        (404, "no such resource for this API key"),
        (409, "conflicts with the current state"),
        (413, "a body over the backend's size limit"),
        (429, "a quota or the rate limit; see Retry-After"),
        (503, "not ready (a deployment without a ready replica); see Retry-After"),
        (504, "a prediction took longer than the deployment's timeout"),
    )
}


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, object] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.code = code
        self.headers = headers
        # More fields of the body, for programs (a quota's name and value, an optimisation's numbers).
        self.extra = extra or {}


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body: dict[str, object] = {"detail": exc.detail}
    if exc.code:
        body["code"] = exc.code
    body.update(exc.extra)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def run_not_found(run_id: str) -> ApiError:
    # The same answer for "does not exist" and "belongs to someone else": existence is not leaked.
    return ApiError(404, f"no run {run_id!r} for this API key; list yours with client.runs()", "run_not_found")
