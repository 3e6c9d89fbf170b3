"""A warm Ray worker for 1-worker CPU runs: an actor with torch and Lightning imported before the run.

Ray Train starts a controller, a placement-group cleaner, a preemption watcher and
the worker group, each a fresh Python process, for every ``fit``; the worker then
imports torch and Lightning. On a small machine that is half a minute before the
first step, every run. Ray does not share worker processes between jobs (each run's
driver is a job), so the warm driver -- the process the executor keeps ready for the
next run -- starts this actor in its own job while it waits: when the run arrives,
the actor is up, its imports are done, and training starts at once.

The actor reserves nothing while it waits (``num_cpus=0``), so an idle backend holds
none of the cluster. When a run arrives the driver reserves the run's CPUs on the
actor's node in a placement group, so Ray's accounting is the same as for a Ray Train
worker. The rank trains exactly as a local worker does (one process, no DDP,
``resume/last.ckpt`` for resumption), so a 1-worker Ray run gives the numbers of a
local run and of ``Trainer.fit`` in the notebook. If the actor dies, the driver
starts a fresh one that resumes from that checkpoint, up to
``AIAAS_RAY_MAX_FAILURES`` times; an error in the user's code fails the run at once
(a restart would only raise it again).
"""

from __future__ import annotations

import importlib
import os
from typing import Any


class WarmRank:
    """Imports the training stack when created; trains one run when asked."""

    def __init__(self) -> None:
        # The slow part of a cold start, done while nobody waits: torch, both Lightning
        # packages a module may be written for, and our worker (which imports the rest).
        from . import train  # noqa: F401

        for package in ("lightning.pytorch", "pytorch_lightning"):
            try:
                importlib.import_module(package)
            except ImportError:
                pass

    def node(self) -> str:
        """Where this actor runs: the node its CPUs must be reserved on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def train(self, assignment: dict[str, Any], restarted: bool) -> None:
        """Train the run as a local worker would; the result goes where the executor looks for it."""
        import torch

        from .train import run

        # The threads the run's reservation pays for (Ray gives a 0-CPU actor no hint).
        threads = max(1, int(assignment["cpus_per_worker"]))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        note = "aiaas: training on 1 Ray worker (a warm one: torch and Lightning were imported ahead)"
        if restarted:
            note = "aiaas: Ray restarted the run's worker; resuming from its last checkpoint"
        run(assignment, note=note, continue_numbering=restarted)
