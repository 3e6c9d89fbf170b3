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
