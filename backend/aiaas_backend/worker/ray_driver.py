"""A run's Ray driver: ``python -m aiaas_backend.worker.ray_driver``.

The Ray executor starts one per run, as the local executor starts a worker, and
hands it the same JSON assignment line on stdin. It connects to the cluster and
runs a ``TorchTrainer`` whose workers train (:mod:`.ray_train`); it never
unpickles user code itself. The run is one Ray job: when this process ends --
or is killed to cancel the run -- Ray stops the job's workers and frees their
resources.

Rank 0 reports the result when training ends. When Ray Train gives up (after
``max_failures`` restarts) this process writes the failure where the executor
looks for a result, naming the first error a rank raised.

Started by the Ray executor with the cluster's address as its argument, a warm
driver connects while it waits for a run and starts a warm rank
(:mod:`.ray_warm`): a 1-worker CPU run trains there, without Ray Train's
per-run processes and imports. Other runs go through Ray Train as above.
"""

import json
import sys
from pathlib import Path
from typing import Any

# How long a 1-worker run waits for its CPUs on the warm rank's node before it goes
# through Ray Train instead (which places it wherever there is room, and waits for it).
_RESERVE_S = 10.0


def _failure(assignment: dict, error: BaseException) -> str:  # type: ignore[type-arg]
    from aiaas_sdk.wire import RunStatus, WorkerStatus

    from ..artifacts import Artifacts

    artifacts = Artifacts(Path(assignment["artifacts_root"]))
    recorded = artifacts.failure(assignment["run_id"], assignment["attempt"])
    tries = assignment["max_failures"] + 1
    if recorded.exists():
        report = WorkerStatus.model_validate_json(recorded.read_text())
        report.error = f"{report.error} (Ray Train tried {tries} times)" if tries > 1 else report.error
    else:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        report = WorkerStatus(attempt=assignment["attempt"], status=RunStatus.failed,
                              error=f"the run's Ray workers failed {tries} times: {first_line}",
                              traceback=str(error))
    path = artifacts.result(assignment["run_id"], assignment["attempt"])
    if not path.exists():  # rank 0 may have finished before a later failure
        artifacts.write_atomic(path, json.dumps(report.model_dump(mode="json")).encode())
    return report.error or ""


def _for_ranks(assignment: dict[str, Any]) -> dict[str, Any]:
    """What the run's Ray workers get: they may run on nodes that do not see this server's data
    dir, so with ``files_via_api`` no path into it (they use the API: remote_files.py)."""
    if not assignment.get("files_via_api"):
        return assignment
    return {k: v for k, v in assignment.items() if k not in ("artifacts_root", "resume_from")}


def _solo(ray: Any, assignment: dict[str, Any], rank: Any) -> bool:
    """Train a 1-worker CPU run on the warm rank; False if its node has no room (use Ray Train)."""
    from ray._raylet import RAY_NODE_ID_KEY
    from ray.exceptions import RayActorError
    from ray.util.placement_group import placement_group, remove_placement_group

    from ..artifacts import Artifacts
    from .ray_warm import WarmRank

    last_checkpoint = Artifacts(Path(assignment["artifacts_root"])).last_checkpoint(assignment["run_id"])
    tries = assignment["max_failures"] + 1
    error: BaseException = RuntimeError("no room for the run on the warm rank's node")
    for n in range(tries):
        # Reserve the run's CPUs where the rank runs: the rank itself holds none (so an idle
        # warm driver holds none of the cluster), the reservation keeps Ray's accounting true.
        try:
            node = ray.get(rank.node.remote())
        except RayActorError as exc:  # it could not start (an import failed): say so, try Ray Train
            print(f"aiaas: the warm rank did not start: {exc}", flush=True)
            if n == 0:
                return False
            error = exc
            rank = ray.remote(num_cpus=0)(WarmRank).remote()
            continue
        group = placement_group([{"CPU": assignment["cpus_per_worker"]}], strategy="STRICT_PACK",
                                bundle_label_selector=[{RAY_NODE_ID_KEY: node}])
        ready, _ = ray.wait([group.ready()], timeout=_RESERVE_S)
        if not ready:
            remove_placement_group(group)
            ray.kill(rank)
            if n == 0:
                return False
            rank = ray.remote(num_cpus=0)(WarmRank).remote()
            continue
        try:
            ray.get(rank.train.remote(_for_ranks(assignment), n > 0))
            return True
        except RayActorError as exc:
            error = exc
            print(f"aiaas: run {assignment['run_id']}: its Ray worker died ({exc}); "
                  f"{'starting another' if n + 1 < tries else 'giving up'}", flush=True)
        remove_placement_group(group)
        if last_checkpoint.exists():
            assignment = {**assignment, "resume_from": str(last_checkpoint)}
        rank = ray.remote(num_cpus=0)(WarmRank).remote()
    print(f"aiaas: run {assignment['run_id']} failed: {_failure(assignment, error)}", flush=True)
    return True


def _ray_train(ray: Any, assignment: dict[str, Any]) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..artifacts import Artifacts
    from .ray_train import train_loop

    storage = Artifacts(Path(assignment["artifacts_root"])).ray_storage(assignment["run_id"])
    resources = {"CPU": assignment["cpus_per_worker"]}
    if assignment["use_gpu"]:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=_for_ranks(assignment),
        scaling_config=ScalingConfig(num_workers=assignment["workers"], use_gpu=assignment["use_gpu"],
                                     resources_per_worker=resources),
        run_config=RunConfig(
            # The same name on every attempt: a requeued run's new driver finds the checkpoints.
            name=storage.name,
            storage_path=str(storage.parent),
            failure_config=FailureConfig(max_failures=assignment["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - whatever ended the group is the run's failure
        print(f"aiaas: run {assignment['run_id']} failed: {_failure(assignment, exc)}", flush=True)


def main() -> int:
    import ray

    from ..ray_cluster import NAMESPACE

    rank = None
    if len(sys.argv) > 1:
        # The executor named the cluster: join it and warm a rank while no run is here
        # (first: a 1-worker run needs nothing else from this process).
        from .ray_warm import WarmRank

        ray.init(address=sys.argv[1], namespace=NAMESPACE)
        rank = ray.remote(num_cpus=0)(WarmRank).remote()
    # The slow imports of a Ray Train run, done before it arrives too.
    import ray.train.torch  # noqa: F401

    from . import ray_train  # noqa: F401

    line = sys.stdin.readline()
    if not line:
        return 0
    assignment = json.loads(line)
    if not ray.is_initialized():
        ray.init(address=assignment["ray_address"], namespace=NAMESPACE)
    if rank is not None and assignment["workers"] == 1 and not assignment["use_gpu"]:
        if _solo(ray, assignment, rank):
            return 0
    elif rank is not None:
        ray.kill(rank)  # a group of Ray Train workers, or a GPU one: the warm rank has no use
    _ray_train(ray, assignment)
    return 0


sys.exit(main())
