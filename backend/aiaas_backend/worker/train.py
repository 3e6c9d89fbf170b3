"""Runs one assignment: unpickle, build the Trainer, fit, save, report."""

from __future__ import annotations

import importlib
import json
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

import torch

try:  # imported ahead of work; whichever Lightning is installed
    import lightning.pytorch  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installation
    pass

from aiaas_sdk import packaging
from aiaas_sdk.wire import RunStatus, WorkerStatus

from .capture import OutputCapture
from .lightning_hooks import make_callback, make_logger
from .reporter import Reporter

_LIBRARY_DIRS = tuple(
    {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")} | {str(Path(__file__).parents[1])}
)


def describe(exc: BaseException) -> str:
    """``Type: message (File "...", line N, in fn)``, pointing at the user's own code."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not f.filename.startswith(_LIBRARY_DIRS) and not f.filename.startswith("<frozen")]
    where = f' (File "{user[-1].filename}", line {user[-1].lineno}, in {user[-1].name})' if user else ""
    return f"{type(exc).__name__}: {exc}{where}"


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
    return kwargs


def _train(assignment: dict[str, Any], reporter: Reporter) -> WorkerStatus:
    run_dir = Path(assignment["run_dir"])
    attempt = assignment["attempt"]
    payload = packaging.unpack((run_dir / "code.bin").read_bytes())
    model = payload["model"]
    package = packaging.lightning_package_of(model)
    pl = importlib.import_module("lightning.pytorch" if package == "lightning" else "pytorch_lightning")

    kwargs = _trainer_kwargs(assignment, payload["trainer_kwargs"])
    callbacks = kwargs.pop("callbacks", None) or []
    callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    ours = make_callback(pl, reporter, run_dir / "checkpoints" / "last.ckpt", assignment["checkpoint_every_s"])
    ours.on_device = lambda device: reporter.status(
        WorkerStatus(attempt=attempt, status=RunStatus.running, device=device)
    )
    user_logger = kwargs.pop("logger", None)
    loggers = [] if user_logger in (None, True, False) else list(user_logger) if isinstance(user_logger, list | tuple) else [user_logger]
    trainer = pl.Trainer(
        default_root_dir=str(run_dir), callbacks=[*callbacks, ours], logger=[*loggers, make_logger(pl, reporter)], **kwargs
    )

    fit_kwargs: dict[str, Any] = {}
    if payload["datamodule"] is not None:
        fit_kwargs["datamodule"] = payload["datamodule"]
    for key in ("train_dataloaders", "val_dataloaders"):
        if payload[key] is not None:
            fit_kwargs[key] = payload[key]
    if reporter.should_stop:
        return WorkerStatus(attempt=attempt, status=RunStatus.cancelled, error="cancelled before training started")
    trainer.fit(model, ckpt_path=assignment["resume_from"], **fit_kwargs)
    if ours.stopped_by == "cancel":
        return WorkerStatus(attempt=attempt, status=RunStatus.cancelled, error="cancelled by the user",
                            final_metrics=_scalars(trainer.callback_metrics), device=getattr(ours, "device", None))
    if ours.stopped_by == "server":
        raise RuntimeError("training stopped: the aiaas server no longer accepts this worker's reports")
    final_metrics = _scalars(trainer.callback_metrics)
    if assignment["test"]:
        # trainer.test resets callback_metrics: keep the fit's and add the test's.
        trainer.test(model, datamodule=payload["datamodule"])
        final_metrics.update(_scalars(trainer.callback_metrics))

    tmp = run_dir / "final.ckpt.tmp"
    trainer.save_checkpoint(tmp)
    tmp.replace(run_dir / "final.ckpt")
    tmp = run_dir / "weights.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(run_dir / "weights.pt")
    return WorkerStatus(attempt=attempt, status=RunStatus.succeeded, final_metrics=final_metrics,
                        device=getattr(ours, "device", None))


def run(assignment: dict[str, Any]) -> int:
    # Set before anything touches CUDA; an empty value hides every GPU from a CPU run.
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(assignment["gpu_ids"])
    run_dir = Path(assignment["run_dir"])
    os.chdir(run_dir)
    attempt = assignment["attempt"]
    reporter = Reporter(
        assignment["api_url"], assignment.get("server_info"), assignment["run_id"], attempt, assignment["token"]
    )
    capture = OutputCapture(run_dir / "output.log", reporter.log)
    capture.start()
    try:
        result = _train(assignment, reporter)
    except BaseException as exc:  # noqa: BLE001 - everything the user's code raises is the run's result
        traceback.print_exc()
        result = WorkerStatus(
            attempt=attempt, status=RunStatus.failed, error=describe(exc), traceback=traceback.format_exc()
        )
    finally:
        capture.stop()
    # On disk first: if the server is down, the executor reads it when it returns.
    tmp = run_dir / f"result-{attempt}.json.tmp"
    tmp.write_text(json.dumps(result.model_dump(mode="json")))
    tmp.replace(run_dir / f"result-{attempt}.json")
    reporter.finish(result, run_dir / f"pending-{attempt}.jsonl")
    sys.stdout.flush()
    return 0
