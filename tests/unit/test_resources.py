import pytest

from aiaas_backend.errors import ApiError
from aiaas_backend.resources import gpus_needed, ray_workers


@pytest.mark.parametrize(
    ("kwargs", "available", "needed"),
    [
        ({}, 0, 0),
        ({"accelerator": "cpu", "devices": 1}, 4, 0),
        ({}, 2, 1),
        ({"accelerator": "gpu", "devices": 2}, 4, 2),
        ({"accelerator": "cuda", "devices": [0, 3]}, 4, 2),
        ({"accelerator": "gpu", "devices": -1}, 4, 4),
        ({"accelerator": "gpu", "devices": "0,1"}, 4, 2),
        ({"accelerator": "gpu", "devices": "3"}, 4, 3),
    ],
)
def test_gpus_needed(kwargs, available, needed):
    assert gpus_needed(kwargs, available) == needed


@pytest.mark.parametrize(
    ("kwargs", "available", "message"),
    [
        ({"accelerator": "gpu"}, 0, "no GPU"),
        ({"accelerator": "gpu", "devices": 8}, 2, "asks for 8 GPUs but this backend has 2"),
        ({"accelerator": "tpu"}, 2, "not available"),
        ({"num_nodes": 2}, 0, "executor ray"),
        ({"accelerator": "cpu", "devices": 2}, 4, "one process per run"),
        ({"devices": 2}, 0, "executor ray"),
        ({"accelerator": "gpu", "devices": 0}, 2, "not a device count"),
    ],
)
def test_what_the_backend_cannot_give_is_refused(kwargs, available, message):
    with pytest.raises(ApiError, match=message) as raised:
        gpus_needed(kwargs, available)
    assert raised.value.status_code == 400


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (1, False)),
        ({"accelerator": "cpu", "devices": 2}, (2, False)),
        ({"accelerator": "cpu", "devices": 2, "num_nodes": 2}, (4, False)),
        ({"accelerator": "gpu", "devices": 2, "num_nodes": 2}, (4, True)),
        ({"devices": 1}, (1, False)),
    ],
)
def test_ray_workers_are_devices_times_nodes(kwargs, expected):
    gpus = 4 if kwargs.get("accelerator") == "gpu" else 0
    assert ray_workers(kwargs, cpus=4, gpus=gpus, cpus_per_worker=1) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accelerator": "cpu", "devices": 4}, "asks for 4 Ray workers .* room for 2"),
        ({"accelerator": "gpu"}, "no GPU"),
        ({"num_nodes": 0}, "not a node count"),
    ],
)
def test_what_the_ray_cluster_cannot_hold_is_refused(kwargs, message):
    with pytest.raises(ApiError, match=message) as raised:
        ray_workers(kwargs, cpus=2, gpus=0, cpus_per_worker=1)
    assert raised.value.status_code == 400
