"""The contract every executor (local processes, Ray) keeps with the API server.

The database is the source of truth: the API writes a run as ``queued`` (or
sets ``cancel_requested``) and calls :meth:`notify`; the executor moves runs
through their states with :func:`aiaas_backend.lifecycle.set_status`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..resources import gpus_needed


class Executor(ABC):
    name: str

    @abstractmethod
    def start(self) -> None:
        """Reconcile runs left from a previous server process, then begin scheduling."""

    @abstractmethod
    def notify(self) -> None:
        """Something changed (a run was queued or asked to cancel): look again soon."""

    @abstractmethod
    def stop(self) -> None:
        """Stop scheduling. Running work keeps going and is reconciled on the next start."""

    def admit(self, trainer_kwargs: dict[str, Any], lightning_package: str) -> int:
        """Check what a submitted run asks for (``devices``, ``num_nodes``, ``accelerator``)
        against what this executor can ever give; returns the GPUs it needs or raises a 400
        :class:`~aiaas_backend.errors.ApiError` that names the fix."""
        return gpus_needed(trainer_kwargs, self.gpus)

    @property
    @abstractmethod
    def gpus(self) -> int:
        """How many GPUs runs can ask for in total."""

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many CPU runs may train at once."""
