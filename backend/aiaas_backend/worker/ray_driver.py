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
"""

import json
import sys
from pathlib import Path


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
                              error=f"the Ray Train worker group failed {tries} times: {first_line}",
                              traceback=str(error))
    path = artifacts.result(assignment["run_id"], assignment["attempt"])
    if not path.exists():  # rank 0 may have finished before a later failure
        artifacts.write_atomic(path, json.dumps(report.model_dump(mode="json")).encode())
    return report.error or ""


def main() -> int:
    # The imports are the slow part; do them before work arrives (a warm driver).
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..ray_cluster import NAMESPACE
    from .ray_train import train_loop

    line = sys.stdin.readline()
    if not line:
        return 0
    assignment = json.loads(line)
    from ..artifacts import Artifacts

    storage = Artifacts(Path(assignment["artifacts_root"])).ray_storage(assignment["run_id"])
    resources = {"CPU": assignment["cpus_per_worker"]}
    if assignment["use_gpu"]:
        resources["GPU"] = 1
    ray.init(address=assignment["ray_address"], namespace=NAMESPACE)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=assignment,
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
    return 0


sys.exit(main())
