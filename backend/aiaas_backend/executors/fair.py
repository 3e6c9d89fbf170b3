"""Fair queueing across users: the order in which an executor takes queued runs.

Strict FIFO lets one user who queues a hundred runs hold every slot until they are
done. Instead the next run started is the oldest queued run of the user with the
fewest runs running; between users with as many, the one whose last run started
longest ago (never: first) goes first. Taking runs in this order one after another
is round-robin across users; each user's own runs keep their submission order.
"""

from __future__ import annotations

import itertools
import math
from collections import deque

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiaas_sdk.wire import RunStatus

from ..models import Run


def fair_order(session: Session) -> list[Run]:
    """The queued runs in the order they should start (see the module docstring)."""
    queued = session.scalars(
        select(Run).where(Run.status == RunStatus.queued.value).order_by(Run.created_at, Run.id)
    ).all()
    if not queued:
        return []
    running: dict[int, int] = dict(session.execute(  # type: ignore[arg-type]
        select(Run.user_id, func.count()).where(Run.status == RunStatus.running.value).group_by(Run.user_id)
    ).all())
    last_start: dict[int, float] = {
        user: when.timestamp() for user, when in session.execute(
            select(Run.user_id, func.max(Run.started_at)).where(Run.started_at.is_not(None)).group_by(Run.user_id)
        ).all() if when is not None
    }
    waiting: dict[int, deque[Run]] = {}
    for run in queued:
        waiting.setdefault(run.user_id, deque()).append(run)
    # A run placed in this order counts as started after every real start, in turn.
    turn = itertools.count(1)
    started: dict[int, tuple[float, int]] = {u: (last_start.get(u, -math.inf), 0) for u in waiting}
    order: list[Run] = []
    while waiting:
        user = min(waiting, key=lambda u: (running.get(u, 0), started[u]))
        runs = waiting[user]
        order.append(runs.popleft())
        if not runs:
            del waiting[user]
        running[user] = running.get(user, 0) + 1
        started[user] = (math.inf, next(turn))
    return order
