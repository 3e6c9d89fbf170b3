"""One rank of a Ray Train worker group: the function ``TorchTrainer`` runs on every worker.

Every rank builds the same Lightning Trainer as a local worker would, with Ray
Train's Lightning integration in place of Lightning's own launcher
(``ray_lightning``): Ray's DDP strategy, its cluster environment (ranks and
world size come from Ray), and a report callback that takes a checkpoint at the
epoch ends the run's schedule names (``checkpoint_every_n_epochs``, or at most
every ``checkpoint_every_s``). Rank 0 writes it in the background in its node's
folder and sends it through the API into the artifact store (``remote_files``):
the Ray executor's workers share no file system with the API. If a worker dies,
Ray Train (``FailureConfig``) restarts the group, and every rank of the new group
fetches that checkpoint through the API to resume from. (Without ``files_via_api``
the callback hands Ray Train the checkpoint, into its storage, and
``ray.train.get_checkpoint()`` hands it back.)

Rank 0 is the run's voice: it alone reports metrics, logs, progress and the
result to the API, with the same reporter as a local worker, so a dashboard
cannot tell the executors apart.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ray.train

from aiaas_sdk.wire import RunStatus, WorkerStatus

from ..artifacts import Artifacts
from .capture import OutputCapture
from .checkpoints import Schedule
from .lightning_hooks import make_stop_in_step
from .ray_lightning import CHECKPOINT_NAME, for_package
from .remote_files import RemoteFiles, tidy, worker_folder
from .reporter import Reporter
from .train import _train, describe


class RayRank:
    """Where this process sits in the group, and what Ray adds to its Trainer.

    Several workers train with Lightning's DDP through Ray's strategy. One worker
    trains as a local worker does -- Lightning's DDP would shard and shuffle the
    training set through a ``DistributedSampler`` for no gain -- so a 1-worker run
    gives the same numbers as ``Trainer.fit`` in the notebook. Either way the
    report callback checkpoints for Ray Train's retries. Modules written for
    ``lightning.pytorch`` and for ``pytorch_lightning`` both get the integration,
    each built on its own package (``ray_lightning``).
    """

    solo = False

    def __init__(self, resume_dir: str | None, schedule: Schedule, keep: tuple[Path, Any] | None = None) -> None:
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.ddp = self.world_size > 1
        self._resume_dir = resume_dir
        self._schedule = schedule
        self._keep = keep if self.rank == 0 else None
        #: rank 0's reporter's flush, run before a checkpoint is published (set by ``_rank_zero``)
        self.flush: Callable[[], object] | None = None
        self._prepare: Any = None

    def configure(self, pl: Any, kwargs: dict[str, Any], callbacks: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        ray_pl = for_package(pl)
        kwargs.pop("num_nodes", None)
        if not self.ddp:
            kwargs["devices"] = 1
            return kwargs, [*callbacks, ray_pl.report_callback(self._schedule, self._keep, self.flush)]
        self._prepare = ray_pl.prepare_trainer
        kwargs.pop("strategy", None)
        plugins = kwargs.pop("plugins", None) or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        kwargs.update(devices="auto", strategy=ray_pl.strategy(), plugins=[*plugins, ray_pl.environment()])
        report = ray_pl.report_callback(self._schedule, self._keep, self.flush)
        return kwargs, [*callbacks, make_stop_in_step(pl), report]

    def prepare(self, trainer: Any) -> Any:
        return self._prepare(trainer) if self._prepare is not None else trainer

    def resume_from(self, assignment: dict[str, Any]) -> str | None:
        if self._resume_dir is not None:
            return str(Path(self._resume_dir) / CHECKPOINT_NAME)
        return assignment.get("resume_from")

    def checkpoint_path(self, artifacts: Artifacts, run_id: str) -> Path | None:
        return None  # the report callback checkpoints (to the API, or into Ray's storage)


def _record_failure(artifacts: Artifacts, run_id: str, attempt: int, exc: BaseException) -> None:
    """Keep the first error of this attempt: later ones are usually its echo in other ranks."""
    failure = WorkerStatus(attempt=attempt, status=RunStatus.failed, error=describe(exc),
                           traceback=traceback.format_exc())
    try:
        with artifacts.failure(run_id, attempt).open("x") as f:
            f.write(failure.model_dump_json())
    except FileExistsError:
        pass


def train_loop(assignment: dict[str, Any]) -> None:
    """``train_loop_per_worker``: runs on every rank, with the executor's assignment as config."""
    remote = RemoteFiles.of(assignment)
    # With the run's files behind the API, a folder of this node; else the shared run folder.
    artifacts = worker_folder(assignment) if remote is not None else Artifacts(Path(assignment["artifacts_root"]))
    run_id, attempt = assignment["run_id"], assignment["attempt"]
    os.chdir(artifacts.run_dir(run_id))
    with ExitStack() as stack:
        checkpoint = ray.train.get_checkpoint()
        resume_dir = stack.enter_context(checkpoint.as_directory()) if checkpoint is not None else None
        schedule = Schedule(assignment["checkpoint_every_s"], assignment.get("checkpoint_every_n_epochs"))
        keep = None
        if remote is not None:  # checkpoints to the store through the API, not to Ray's storage
            keep = (artifacts.last_checkpoint(run_id), lambda path: remote.send("resume/last.ckpt", path))
        place = RayRank(resume_dir, schedule, keep)
        if place.rank != 0:
            try:
                _train(assignment, artifacts, None, place)
            except BaseException as exc:
                _record_failure(artifacts, run_id, attempt, exc)
                raise
            return
        _rank_zero(assignment, artifacts, place, checkpoint is not None)


def _rank_zero(assignment: dict[str, Any], artifacts: Artifacts, place: RayRank, resumed: bool) -> None:
    run_id, attempt = assignment["run_id"], assignment["attempt"]
    # Ray workers log at INFO: httpx would echo every report into the run's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    reporter = Reporter(assignment["api_url"], assignment.get("server_info"), run_id, attempt, assignment["token"])
    reporter.continue_numbering()
    place.flush = reporter.flush
    workers = place.world_size
    reporter.log(f"aiaas: training on {workers} Ray Train worker{'s' if workers > 1 else ''}"
                 + (" with Lightning's DDP" if place.ddp else ""))
    if resumed:
        reporter.log("aiaas: Ray Train restarted the worker group; resuming from its last checkpoint")
    capture = OutputCapture(artifacts.output_log(run_id), reporter.log)
    capture.start()
    try:
        result = _train(assignment, artifacts, reporter, place)
    except BaseException as exc:
        traceback.print_exc()
        _record_failure(artifacts, run_id, attempt, exc)
        capture.stop()
        reporter.flush()  # the traceback reaches the run's log; Ray Train decides what happens next
        raise
    capture.stop()
    artifacts.write_atomic(artifacts.result(run_id, attempt), json.dumps(result.model_dump(mode="json")).encode())
    if reporter.finish(result, artifacts.pending_events(run_id, attempt)) and assignment.get("files_via_api"):
        tidy(artifacts, run_id)
