"""Measuring an optimisation at deploy time, for the API server (which never imports torch here).

The measurement runs once per (run, method) in a one-shot sandboxed process
(:mod:`.optimize`) that sees the run's folder read-only and writes into a fresh folder of its
own; the server then moves the regular files it wrote into its cache,
``DATA_DIR/optimized/RUN/METHOD/``, a folder no user code can write. Replicas get that folder
read-only, so they serve what was measured without measuring again, and a rollback finds
its version's numbers there.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

from ..artifacts import Artifacts, read_regular
from ..errors import ApiError
from ..sandbox import LaunchSpec, Launcher, Limits

REPORT = "report.json"  # the same names as .optimize (which imports torch: not here)
DEFAULT_TOLERANCE = {"int8": 0.05, "compile": 1e-4, "onnx": 1e-4}
TIMEOUT_S = 600.0


def tolerance_for(method: str, tolerance: float | None) -> float:
    return DEFAULT_TOLERANCE[method] if tolerance is None else tolerance


class OptimizeJobs:
    """Measured optimisations of runs, cached; one measuring process per (run, method) at a time."""

    def __init__(self, artifacts: Artifacts, launcher: Launcher, cache: Path, limits: Limits,
                 log: IO[bytes], threads: int) -> None:
        self._artifacts = artifacts
        self._launcher = launcher
        self._cache = cache
        self._limits = limits
        self._log = log
        self._threads = threads
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def folder(self, run_id: str, method: str) -> Path:
        """Where a replica of ``run_id`` finds ``method``'s artifact (exists once measured)."""
        return self._cache / run_id / method

    def cached(self, run_id: str, method: str) -> dict[str, Any] | None:
        path = self.folder(run_id, method) / REPORT
        return json.loads(read_regular(path)) if path.exists() else None

    async def measure(self, run_id: str, method: str, signature: dict[str, Any] | None,
                      batch_rows: int) -> dict[str, Any]:
        """The report for ``run_id`` optimised by ``method``; raises a 400 if the optimiser fails."""
        async with self._locks.setdefault((run_id, method), asyncio.Lock()):
            report = self.cached(run_id, method)
            if report is None:
                report = await self._measure(run_id, method, signature, batch_rows)
        if "error" in report:
            raise ApiError(400, f"optimize={method!r} cannot handle this model: {report['error']}",
                           "optimize_failed")
        return report

    async def _measure(self, run_id: str, method: str, signature: dict[str, Any] | None,
                       batch_rows: int) -> dict[str, Any]:
        out = Path(tempfile.mkdtemp(prefix="aiaas-opt-"))
        try:
            spec = LaunchSpec(owner=f"opt-{run_id}", module="aiaas_backend.serving.optimize", args=[],
                              folder=self._artifacts.run_dir(run_id), folder_writable=False,
                              shared_rw={"out": out}, limits=self._limits, stdin=subprocess.DEVNULL,
                              stdout=self._log, die_with_parent=True)
            spec.args = ["--run-dir", self._launcher.folder_inside(spec), "--run", run_id, "--method", method,
                         "--out", self._launcher.shared_inside(spec, "out"), "--signature", json.dumps(signature),
                         "--batch", str(min(batch_rows, 256)), "--threads", str(self._threads)]
            proc = self._launcher.start(spec)
            try:
                code = await asyncio.wait_for(asyncio.to_thread(proc.wait), TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                Launcher.kill(Launcher.user_pid(proc))
                raise
            try:
                report = json.loads(read_regular(out / REPORT))
            except (OSError, ValueError):
                return {"error": f"the measuring process exited with code {code} without a report; "
                                 "see replicas.log in the backend's data dir"}
            if "error" not in report:
                self._keep(out, self.folder(run_id, method))
            return report
        except TimeoutError:
            return {"error": f"measuring took over {TIMEOUT_S:.0f} s"}
        finally:
            shutil.rmtree(out, ignore_errors=True)

    @staticmethod
    def _keep(out: Path, dest: Path) -> None:
        """Move what the sandbox wrote into the cache: regular files only (no links), readable by
        any replica's uid, the report last so that its presence means the folder is complete."""
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for entry in os.scandir(out):
            if entry.name != REPORT and entry.is_file(follow_symlinks=False):
                shutil.copyfile(entry.path, tmp / entry.name, follow_symlinks=False)
        shutil.copyfile(out / REPORT, tmp / REPORT, follow_symlinks=False)
        for path in (tmp, *tmp.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)


def check_tolerance(report: dict[str, Any], method: str, tolerance: float | None) -> dict[str, Any]:
    """The report as stored on the deployment, or a 400 with both numbers when the optimised
    model's outputs stray further than ``tolerance`` from the model's."""
    limit = tolerance_for(method, tolerance)
    public = {"method": method, "speedup": report["speedup"], "max_abs_deviation": report["max_abs_deviation"],
              "tolerance": limit, "baseline_ms": report["baseline_ms"], "optimized_ms": report["optimized_ms"],
              "batch_rows": int(report["batch_rows"]), "rows": report["rows"], "inputs": report["inputs"]}
    if report["max_abs_deviation"] > limit:
        raise ApiError(
            400, f"optimize={method!r} changes the model's outputs by up to {report['max_abs_deviation']:.3g} "
            f"(tolerance {limit:g}; speed-up {report['speedup']:.2f}x): raise optimize_tolerance if that is "
            "acceptable, or deploy without optimize", "optimize_tolerance_exceeded",
            extra={"speedup": report["speedup"], "max_abs_deviation": report["max_abs_deviation"],
                   "tolerance": limit})
    return public
