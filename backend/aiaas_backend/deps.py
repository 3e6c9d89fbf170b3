"""FastAPI dependencies, as ``Annotated`` aliases used by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from .artifacts import Artifacts
from .config import Settings
from .errors import ApiError
from .executors import Executor
from .models import User
from .keys import find_by_secret
from .security import api_key_for, hash_secret, scrape_key_name
from .store import Store


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


def get_executor(request: Request) -> Executor:
    return request.app.state.executor


def get_environment(request: Request) -> dict[str, dict[str, str]]:
    return request.app.state.environment


def get_store(request: Request) -> Store:
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]
EnvironmentDep = Annotated[dict[str, dict[str, str]], Depends(get_environment)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ArtifactsDep = Annotated[Artifacts, Depends(get_artifacts)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]

_NEED_KEY = "create one with `aiaas keys create --user NAME` and pass it to aiaas.connect(api_key=...)"


async def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    # async on purpose: FastAPI would run a plain function in its threadpool, a hop per request.
    if not authorization:
        raise ApiError(401, f"missing API key: send 'Authorization: Bearer <key>'; {_NEED_KEY}", "unauthenticated",
                       {"WWW-Authenticate": "Bearer"})
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "the Authorization header must be 'Bearer <key>'", "unauthenticated",
                       {"WWW-Authenticate": "Bearer"})
    return token.strip()


TokenDep = Annotated[str, Depends(bearer_token)]


def refuse_scrape_key(session: Session, token: str) -> None:
    """403 naming why, when ``token`` is a scrape-only key (it may read /metrics, nothing else)."""
    name = scrape_key_name(session, token)
    if name is not None:
        raise ApiError(403, f"the key {name!r} is a scrape-only key: it may read GET /metrics and nothing else; "
                       "use a user's API key (`aiaas keys create --user NAME`) for this", "scrape_key_only")


def unusable_key(session: Session, token: str) -> ApiError:
    """The 401 (or 403) for a token that is no working API key, saying which case it is."""
    refuse_scrape_key(session, token)
    known = find_by_secret(session, token)
    why = known.ended() if known is not None else None
    what = f"the API key {known.prefix}... was {why}" if known is not None and why else \
        f"unknown API key (it starts {token[:10]!r})"
    return ApiError(401, f"{what}; {_NEED_KEY}", "unauthenticated", {"WWW-Authenticate": "Bearer"})


def current_user(request: Request, session: SessionDep, token: TokenDep) -> User:
    key = api_key_for(session, token)
    if key is None:
        raise unusable_key(session, token)
    request.app.state.key_usage.seen(hash_secret(token), request.client.host if request.client else None)
    user = session.get(User, key.user_id)
    assert user is not None
    return user


CurrentUser = Annotated[User, Depends(current_user)]
