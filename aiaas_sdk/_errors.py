"""The one exception tree of the aiaas SDK.

    AiaasError
    ├── BackendUnavailable        the backend could not be reached (connection, timeout)
    ├── AuthenticationError       401: missing or wrong API key
    ├── NotFound                  404: no such run (or it belongs to someone else)
    ├── BadRequest                400/422: the request itself is wrong
    │   └── IncompatibleEnvironment   the backend cannot unpickle code from this environment
    ├── PayloadTooLarge           413: an upload over the backend's size limit
    ├── DeploymentOverloaded      429: a deployment's queue stayed full through the retries
    ├── QuotaExceeded             429: a per-user quota (runs queued, deployments, replicas);
    │   │                         names the limit (.limit, .value) and when to retry (.retry_after)
    │   └── RateLimited           429: this API key sent more requests per second than allowed
    ├── ServerError               5xx from the backend
    ├── RunFailed                 a run ended `failed`; carries the remote traceback
    ├── RunCancelled              wait() on a run that ended `cancelled`
    ├── InvalidInput              an argument the SDK cannot use (also ValueError, TypeError):
    │                             inputs that are no tensor, a model that cannot be shipped...
    ├── ConfigError               a bad setting (argument, AIAAS_* variable, config file);
    │                             also a ValueError
    └── WaitTimeout               wait()/wait_ready() gave up (also a TimeoutError)

Every HTTP status and transport failure is translated into this tree in one
place, :func:`error_from_response`, so callers never see ``httpx`` exceptions;
what the SDK refuses before sending anything is an :class:`InvalidInput` or a
:class:`ConfigError`. The extra builtin bases keep ``except ValueError`` (and
``TypeError``, ``TimeoutError``) written against earlier releases working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the translation below uses httpx: replicas import this module without it
    import httpx

__all__ = [
    "AiaasError",
    "AuthenticationError",
    "BackendUnavailable",
    "BadRequest",
    "ConfigError",
    "DeploymentOverloaded",
    "IncompatibleEnvironment",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RunFailed",
    "RunCancelled",
    "ServerError",
    "WaitTimeout",
]


class AiaasError(Exception):
    """Base class of every error the SDK raises."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code


class BackendUnavailable(AiaasError):
    """The backend did not answer: it is down, unreachable, or timed out."""


class AuthenticationError(AiaasError):
    """The API key is missing or not known to the backend."""


class NotFound(AiaasError):
    """The resource does not exist, or is not visible to this API key."""


class BadRequest(AiaasError):
    """The backend refused the request as malformed or invalid."""


class IncompatibleEnvironment(BadRequest):
    """The notebook's Python/torch/Lightning/cloudpickle cannot be unpickled by the backend."""


class PayloadTooLarge(AiaasError):
    """An upload exceeded the backend's size limit."""


class DeploymentOverloaded(AiaasError):
    """A deployment kept refusing work (its queue was full) after the SDK's retries."""


class QuotaExceeded(AiaasError):
    """The backend refused the request because it would pass one of this user's quotas.

    ``limit`` is the backend setting's name (``quota_runs_queued``, ...; the environment
    variable is ``AIAAS_`` + its upper case), ``value`` its value, ``retry_after`` the seconds
    the backend suggested waiting.
    """

    limit: str | None = None
    value: float | None = None
    retry_after: float | None = None


class RateLimited(QuotaExceeded):
    """This API key sent more requests per second than the backend allows
    (``AIAAS_RATE_REQUESTS_PER_S``); retry after ``retry_after`` seconds."""


class ServerError(AiaasError):
    """The backend failed while handling the request (HTTP 5xx)."""


class RunFailed(AiaasError):
    """A run ended with status ``failed``.

    ``traceback`` holds the remote traceback text, ``run_id`` the run.
    """

    def __init__(self, message: str, *, run_id: str, traceback: str | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.traceback = traceback

    def __str__(self) -> str:
        if self.traceback:
            return f"{self.message}\n\nRemote traceback:\n{self.traceback}"
        return self.message


class RunCancelled(AiaasError):
    """``wait()`` was called on a run that ended ``cancelled``."""

    def __init__(self, message: str, *, run_id: str):
        super().__init__(message)
        self.run_id = run_id


class InvalidInput(AiaasError, ValueError, TypeError):
    """An argument the SDK cannot use: predict inputs that are not numbers, a model that
    cannot be pickled, a Trainer argument aiaas manages, a bad deployment setting."""


class ConfigError(AiaasError, ValueError):
    """A connection setting is invalid: an argument, an ``AIAAS_*`` variable or the config file."""


class WaitTimeout(AiaasError, TimeoutError):
    """``wait()`` or ``wait_ready()`` gave up before the run ended or the deployment was ready."""


def invalid_from_validation(exc: Exception, what: str) -> InvalidInput:
    """A pydantic ValidationError about ``what`` as one readable :class:`InvalidInput`."""
    errors = getattr(exc, "errors", lambda: [])()
    parts = [f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}".lstrip(": ") for e in errors]
    return InvalidInput(f"invalid {what}: {'; '.join(parts) or exc}")


_BY_STATUS: dict[int, type[AiaasError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFound,
    409: BadRequest,
    413: PayloadTooLarge,
    422: BadRequest,
    429: DeploymentOverloaded,
}

_BY_CODE: dict[str, type[AiaasError]] = {
    "incompatible_environment": IncompatibleEnvironment,
    "quota_exceeded": QuotaExceeded,
    "rate_limited": RateLimited,
}

_HINTS: dict[type[AiaasError], str] = {
    AuthenticationError: (
        " Check the key: pass api_key= to aiaas.connect(), set AIAAS_API_KEY, "
        "or create one with `aiaas keys create --user NAME`."
    ),
}


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    body = _body(response)
    if body is None:
        text = response.text.strip()
        return (text[:500] or response.reason_phrase), None
    if isinstance(body, dict):
        detail = body.get("detail", body)
        code = body.get("code")
        if isinstance(detail, list):  # FastAPI validation errors
            parts = []
            for item in detail:
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            detail = "; ".join(parts)
        return str(detail), code
    return str(body), None


def error_from_response(response: httpx.Response) -> AiaasError:
    """Translate an HTTP error response into the matching SDK exception."""
    detail, code = _detail(response)
    status = response.status_code
    cls = _BY_CODE.get(code or "")
    if cls is not None and issubclass(cls, QuotaExceeded) and status != 429:
        cls = None  # the dataset storage quota answers 413: the upload is what is too large
    cls = cls or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else AiaasError
    message = f"{detail} (HTTP {status})" + _HINTS.get(cls, "")
    error = cls(message, status_code=status, code=code)
    if isinstance(error, QuotaExceeded):
        body = _body(response)
        if isinstance(body, dict):
            error.limit, error.value = body.get("limit"), body.get("value")
        try:
            error.retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            pass
    return error


def error_from_transport(exc: httpx.TransportError, url: str) -> BackendUnavailable:
    """Translate a connection failure or timeout into :class:`BackendUnavailable`."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return BackendUnavailable(
            f"the aiaas backend at {url} presented a TLS certificate this client does not trust ({exc}). If the "
            "backend's certificate comes from your own CA, pass ca_bundle='ca.pem' to aiaas.connect() (or set "
            "AIAAS_CA_BUNDLE, or ca_bundle in the config file); the connection was closed before the API key was sent",
            code="certificate_not_trusted")
    import httpx  # loaded already by whoever caught exc

    timed_out = isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout)
    kind = "timed out" if timed_out else "could not be reached"
    return BackendUnavailable(
        f"the aiaas backend at {url} {kind} ({type(exc).__name__}: {exc}). "
        "Is the server running? Start one with `aiaas server`, or use aiaas.connect('local')."
    )
