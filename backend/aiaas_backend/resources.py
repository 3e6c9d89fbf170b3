"""What a run asks for, read from its Trainer kwargs, checked against what the backend has."""

from __future__ import annotations

from typing import Any

from .errors import ApiError

_GPU_ACCELERATORS = {"gpu", "cuda"}


def _count(devices: Any, available: int) -> int:
    if devices in ("auto", None):
        return 1  # a shared backend: "auto" means one GPU, not all of them
    if devices in (-1, "-1"):
        return available
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str):
        parts = [p for p in devices.split(",") if p.strip()]
        return len(parts) if len(parts) > 1 or devices.strip().endswith(",") else int(parts[0]) if parts else 0
    if isinstance(devices, int) and devices > 0:
        return devices
    raise ApiError(400, f"devices={devices!r} is not a device count, a list of devices, -1 or 'auto'", "bad_devices")


def gpus_needed(trainer_kwargs: dict[str, Any], available: int) -> int:
    """How many GPUs a run needs; refuses what this backend can never give."""
    accelerator = str(trainer_kwargs.get("accelerator", "auto")).lower()
    if int(trainer_kwargs.get("num_nodes", 1) or 1) > 1:
        raise ApiError(400, "num_nodes > 1 needs a backend started with `--executor ray`; this one runs local "
                       "processes", "needs_ray")
    if accelerator == "cpu" or (accelerator == "auto" and available == 0):
        processes = _count(trainer_kwargs.get("devices", "auto"), 1)
        if processes > 1:
            raise ApiError(400, f"devices={trainer_kwargs['devices']!r} on the CPU asks for {processes} training "
                           "processes, but this backend runs one process per run; use devices=1, or a backend "
                           "started with `--executor ray` (DDP across Ray workers)", "needs_ray")
        return 0
    if accelerator not in _GPU_ACCELERATORS | {"auto"}:
        raise ApiError(400, f"accelerator={accelerator!r} is not available on this backend; use 'cpu', 'gpu' or "
                       "'auto'", "bad_accelerator")
    if available == 0:
        raise ApiError(400, "this backend has no GPU; use accelerator='cpu' (or 'auto'), or connect to a GPU backend",
                       "no_gpu")
    try:
        needed = _count(trainer_kwargs.get("devices", "auto"), available)
    except ValueError:
        raise ApiError(400, f"devices={trainer_kwargs.get('devices')!r} is not a device count", "bad_devices") from None
    if needed > available:
        raise ApiError(400, f"the run asks for {needed} GPUs but this backend has {available}; ask for at most "
                       f"{available}", "too_many_gpus")
    return needed


def ray_workers(trainer_kwargs: dict[str, Any], *, cpus: float, gpus: int,
                cpus_per_worker: float, check: bool = True) -> tuple[int, bool]:
    """Ray Train workers (one DDP process each) and whether they use GPUs, from Lightning's
    ``devices`` (per node) times ``num_nodes``; refuses what the cluster can never hold."""
    accelerator = str(trainer_kwargs.get("accelerator", "auto")).lower()
    if accelerator not in _GPU_ACCELERATORS | {"auto", "cpu"}:
        raise ApiError(400, f"accelerator={accelerator!r} is not available on this backend; use 'cpu', 'gpu' or "
                       "'auto'", "bad_accelerator")
    use_gpu = accelerator in _GPU_ACCELERATORS or (accelerator == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise ApiError(400, "the Ray cluster has no GPU; use accelerator='cpu' (or 'auto'), or add GPU nodes",
                       "no_gpu")
    nodes = trainer_kwargs.get("num_nodes", 1)
    nodes = 1 if nodes is None else nodes
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ApiError(400, f"num_nodes={nodes!r} is not a node count; use a whole number >= 1", "bad_devices")
    capacity = gpus if use_gpu else int(cpus // cpus_per_worker)
    try:
        per_node = _count(trainer_kwargs.get("devices", "auto"), max(1, capacity // nodes))
    except ValueError:
        raise ApiError(400, f"devices={trainer_kwargs.get('devices')!r} is not a device count", "bad_devices") from None
    workers = per_node * nodes
    if check and workers > capacity:
        unit = "GPUs" if use_gpu else f"CPUs ({cpus_per_worker:g} per worker)"
        raise ApiError(400, f"the run asks for {workers} Ray workers (devices={per_node} x num_nodes={nodes}) but the "
                       f"Ray cluster has room for {capacity} by its {unit}; ask for fewer or add nodes",
                       "too_many_workers")
    return workers, use_gpu
