"""Runs one assignment: unpickle, build the Trainer, fit, save, report."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

try:  # imported ahead of work; whichever Lightning is installed
    import lightning.pytorch  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installation
    pass

from aiaas_sdk import packaging
from aiaas_sdk.wire import RunStatus, WorkerStatus

from ..artifacts import Artifacts, RunFolder, atomic
from ..sandbox.limits import hint
from . import tidy_output
from .capture import OutputCapture
from .checkpoint_io import save_in_place
from .datasets import materialise
from .lightning_hooks import make_callback, make_logger, save_full_checkpoint
from .remote_files import RemoteFiles, tidy, worker_folder
from .reporter import Reporter

_LIBRARY_DIRS = tuple(
    {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")} | {str(Path(__file__).parents[1])}
)


def describe(exc: BaseException) -> str:
    """``Type: message (File "...", line N, in fn)``, pointing at the user's own code."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not f.filename.startswith(_LIBRARY_DIRS) and not f.filename.startswith("<frozen")]
    where = f' (File "{user[-1].filename}", line {user[-1].lineno}, in {user[-1].name})' if user else ""
    hint = ""
    if isinstance(exc, FileNotFoundError) and exc.filename and not os.path.isabs(str(exc.filename)):
        hint = (". A relative path is read from the run's folder on the backend, not beside your notebook: "
                "upload the data with client.upload(NAME, PATH), pass datasets=[NAME] to client.train, "
                "and open files under aiaas.data_path(NAME)")
    return f"{type(exc).__name__}: {exc}{where}{hint}"


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


def _trainer_kwargs(assignment: dict[str, Any], pickled: dict[str, Any]) -> dict[str, Any]:
    kwargs = {**assignment["trainer_kwargs"], **pickled}
    if assignment["gpu_ids"]:
        # CUDA_VISIBLE_DEVICES renumbers the assigned GPUs from 0.
        kwargs["devices"] = len(assignment["gpu_ids"])
    # Live metrics are the point of a remote run: log every step unless told otherwise.
    kwargs.setdefault("log_every_n_steps", 1)
    # A progress bar in a log file is noise; progress travels as metrics.
    kwargs.setdefault("enable_progress_bar", False)
    # A table in a log tail is cut mid-box: one summary line instead (tidy_output.summary_line).
    kwargs.setdefault("enable_model_summary", False)
    return kwargs


class Alone:
    """How a run trains under the local executor: one process, which checkpoints for
    resumption itself. :class:`aiaas_backend.worker.ray_train.RayRank` is the Ray Train twin."""

    rank = 0
    solo = True

    def configure(self, pl: Any, kwargs: dict[str, Any], callbacks: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        return kwargs, callbacks

    def prepare(self, trainer: Any) -> Any:
        return trainer

    def resume_from(self, assignment: dict[str, Any]) -> str | None:
        return assignment.get("resume_from")

    def checkpoint_path(self, artifacts: Artifacts, run_id: str) -> Path | None:
        return artifacts.last_checkpoint(run_id)


def load_payload(artifacts: Artifacts, run_id: str) -> dict[str, Any]:
    try:
        return packaging.unpack(artifacts.code(run_id).read_bytes())
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"the backend cannot import {exc.name!r}, which your code uses: install it on the backend "
            "(it is an installed package in your notebook, so aiaas ships it by reference)"
        ) from exc


def lightning_of(model: Any) -> ModuleType:
    """``lightning.pytorch`` or ``pytorch_lightning``: whichever the module was written for."""
    package = packaging.lightning_package_of(model)
    return importlib.import_module("lightning.pytorch" if package == "lightning" else "pytorch_lightning")


def _train(assignment: dict[str, Any], artifacts: Artifacts, reporter: Reporter | None,
           place: Alone | None = None) -> WorkerStatus:
    """Fit (and test) the shipped module; every rank of a group calls this, rank 0 with the reporter."""
    place = place or Alone()
    tidy_output.install()
    run_id = assignment["run_id"]
    run_dir = artifacts.run_dir(run_id)
    attempt = assignment["attempt"]
    materialise(assignment)  # before the user's code: aiaas.data_path must answer in setup()
    # A Ray worker: the run's stored files come and go through the API (remote_files.py).
    remote = RemoteFiles.of(assignment)
    if remote is not None and not remote.fetch("code.bin", artifacts.code(run_id)):
        raise RuntimeError(f"the aiaas API has no code for run {run_id}")
    payload = load_payload(artifacts, run_id)
    model = payload["model"]
    pl = lightning_of(model)

    kwargs = _trainer_kwargs(assignment, payload["trainer_kwargs"])
    callbacks = kwargs.pop("callbacks", None) or []
    callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    user_logger = kwargs.pop("logger", None)
    loggers = [] if user_logger in (None, True, False) else list(user_logger) if isinstance(user_logger, list | tuple) else [user_logger]
    ours = None
    if reporter is not None:
        send = (lambda path: remote.send("resume/last.ckpt", path)) if remote is not None else None
        ours = make_callback(pl, reporter, place.checkpoint_path(artifacts, run_id), assignment["checkpoint_every_s"],
                             assignment.get("checkpoint_every_n_epochs"), after_write=send)
        ours.on_device = lambda device: reporter.status(
            WorkerStatus(attempt=attempt, status=RunStatus.running, device=device)
        )
        callbacks.append(ours)
        loggers.append(make_logger(pl, reporter))
    kwargs, callbacks = place.configure(pl, kwargs, callbacks)
    trainer = place.prepare(pl.Trainer(default_root_dir=str(run_dir), callbacks=callbacks, logger=loggers, **kwargs))
    save_in_place(trainer)  # not staged in the sandbox's small /tmp (checkpoint_io.py)

    fit_kwargs: dict[str, Any] = {}
    if payload["datamodule"] is not None:
        fit_kwargs["datamodule"] = payload["datamodule"]
    for key in ("train_dataloaders", "val_dataloaders"):
        if payload[key] is not None:
            fit_kwargs[key] = payload[key]
    # A group must enter fit together (its setup is collective): only a solo run may leave here.
    if place.solo and reporter is not None and reporter.should_stop:
        return WorkerStatus(attempt=attempt, status=RunStatus.cancelled, error="cancelled before training started")
    if place.rank == 0 and not kwargs.get("enable_model_summary"):
        print(tidy_output.summary_line(model), flush=True)
    ckpt_path = place.resume_from(assignment)
    if remote is not None:
        # Whatever this run stored last (an earlier try of it, or an earlier attempt): every rank
        # fetches it to its own node, so a replacement on any node resumes where the run was.
        last = artifacts.last_checkpoint(run_id)
        ckpt_path = str(last) if remote.fetch("resume/last.ckpt", last) else None
        if ckpt_path is not None and place.rank == 0:
            print("aiaas: resuming from its last checkpoint (fetched from the store through the API)", flush=True)
    if ckpt_path is not None and "weights_only" in inspect.signature(trainer.fit).parameters:
        # Our own resumption checkpoint, written by this run's code: it holds optimizer and
        # loop state and whatever the module saves, which a weights-only load may refuse.
        fit_kwargs["weights_only"] = False
    trainer.fit(model, ckpt_path=ckpt_path, **fit_kwargs)
    stopped_by = getattr(ours, "stopped_by", None)
    device = getattr(ours, "device", None)
    if stopped_by == "cancel":
        return WorkerStatus(attempt=attempt, status=RunStatus.cancelled, error="cancelled by the user",
                            final_metrics=_scalars(trainer.callback_metrics), device=device)
    if stopped_by == "server":
        raise RuntimeError("training stopped: the aiaas server no longer accepts this worker's reports")
    final_metrics = _scalars(trainer.callback_metrics)
    if assignment["test"]:
        # trainer.test resets callback_metrics: keep the fit's and add the test's.
        trainer.test(model, datamodule=payload["datamodule"])
        final_metrics.update(_scalars(trainer.callback_metrics))

    if place.rank == 0:
        with atomic(artifacts.final(run_id, "lightning")) as tmp:
            save_full_checkpoint(trainer, tmp)
        with atomic(artifacts.final(run_id, "weights")) as tmp:
            torch.save(model.state_dict(), tmp)
        if remote is not None:  # the run succeeds only once its weights are stored
            sent = sum(remote.send(artifacts.final(run_id, kind).name, artifacts.final(run_id, kind))
                       for kind in ("lightning", "weights"))
            print(f"aiaas: final checkpoint and weights stored through the API ({sent} bytes)", flush=True)
    else:
        # Saving is collective (a barrier inside); only rank 0 writes the file.
        save_full_checkpoint(trainer, artifacts.final(run_id, "lightning").with_suffix(".other-ranks"))
    try:
        stats = ours.inputs.stats() if ours is not None else None
    except Exception:  # noqa: BLE001 - drift statistics must never fail a trained run
        traceback.print_exc()
        stats = None
    return WorkerStatus(attempt=attempt, status=RunStatus.succeeded, final_metrics=final_metrics,
                        device=device, input_signature=getattr(ours, "input_signature", None), input_stats=stats)


def run(assignment: dict[str, Any], *, note: str | None = None, continue_numbering: bool = False) -> int:
    """Train one assignment in this process and report its result. ``note``: a first log line;
    ``continue_numbering``: a later try of the same attempt (the server holds earlier events)."""
    # Set before anything touches CUDA; an empty value hides every GPU from a CPU run.
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(assignment["gpu_ids"])
    # Sandboxed, the worker sees its own run's folder only, under a name of the sandbox's.
    run_dir = assignment.get("run_dir")
    artifacts: Artifacts
    if assignment.get("files_via_api"):  # a Ray worker: a folder of its own node
        artifacts = worker_folder(assignment)
    else:
        artifacts = RunFolder(Path(run_dir)) if run_dir else Artifacts(Path(assignment["artifacts_root"]))
    run_id = assignment["run_id"]
    os.chdir(artifacts.run_dir(run_id))
    attempt = assignment["attempt"]
    reporter = Reporter(
        assignment["api_url"], assignment.get("server_info"), assignment["run_id"], attempt, assignment["token"],
        api_socket=assignment.get("api_socket"),
    )
    if continue_numbering:
        reporter.continue_numbering()
    if note:
        reporter.log(note)
    capture = OutputCapture(artifacts.output_log(run_id), reporter.log)
    capture.start()
    try:
        result = _train(assignment, artifacts, reporter)
    except BaseException as exc:  # noqa: BLE001 - everything the user's code raises is the run's result
        traceback.print_exc()
        limit = hint(exc)
        error = describe(exc) + (f" -- {limit}" if limit else "")
        result = WorkerStatus(attempt=attempt, status=RunStatus.failed, error=error, traceback=traceback.format_exc())
    finally:
        capture.stop()
    # On disk first: if the server is down, the executor reads it when it returns.
    artifacts.write_atomic(artifacts.result(run_id, attempt), json.dumps(result.model_dump(mode="json")).encode())
    if reporter.finish(result, artifacts.pending_events(run_id, attempt)) and assignment.get("files_via_api"):
        tidy(artifacts, run_id)
    sys.stdout.flush()
    return 0
