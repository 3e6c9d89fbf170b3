"""The comparison servers: ``python _serve_baselines.py {fastapi|litserve|ray} MODEL WEIGHTS PORT MAX_BATCH THREADS``.

Each loads the same weights as the aiaas deployment, runs torch with the same
number of threads as the aiaas replica, and speaks the same cheap body:
JSON ``{"b64": <float32 bytes, base64>, "shape": [...]}`` in and out. Decoding
that is a base64 decode and ``np.frombuffer``, as cheap as aiaas's binary frame;
nested JSON lists of numbers would make the baselines pay for parsing instead.
The batching servers (LitServe, Ray Serve) batch with aiaas's settings.
"""

from __future__ import annotations

import base64
import signal
import sys
import tempfile
import threading

import numpy as np
import torch

from serving_models import MODELS

MAX_WAIT_S = 0.002  # aiaas's max_wait_ms=2 in bench_serving.py


def load(model_name: str, weights: str, threads: int) -> torch.nn.Module:
    torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1 in its actors: every system gets the same
    model = MODELS[model_name]()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def decode(body: dict) -> torch.Tensor:
    array = np.frombuffer(base64.b64decode(body["b64"]), dtype=np.float32).reshape(body["shape"])
    return torch.from_numpy(array.copy())


def encode(out: torch.Tensor) -> dict:
    array = np.ascontiguousarray(out.numpy(), dtype=np.float32)
    return {"b64": base64.b64encode(array.tobytes()).decode(), "shape": list(array.shape)}


def fastapi_server(model: torch.nn.Module, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict) -> dict:  # one request, one forward
        with torch.inference_mode():
            return encode(model(decode(body)))

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


try:
    import litserve as ls
except ImportError:  # the LitServe column is skipped
    ls = None

if ls is not None:

    class BenchAPI(ls.LitAPI):
        """Module level: LitServe starts its workers with spawn, which pickles the API."""

        def __init__(self, model_name: str, weights: str, threads: int) -> None:
            super().__init__()
            self.model_name, self.weights, self.threads = model_name, weights, threads

        def setup(self, device):
            self.model = load(self.model_name, self.weights, self.threads)

        def decode_request(self, request):
            return decode(request)

        def batch(self, inputs):
            return torch.cat(inputs)

        def predict(self, x):
            with torch.inference_mode():
                return self.model(x)

        def unbatch(self, output):
            return [row.unsqueeze(0) for row in output]

        def encode_response(self, output):
            return encode(output)


def litserve_server(model_name: str, weights: str, port: int, max_batch: int, threads: int) -> None:
    server = ls.LitServer(BenchAPI(model_name, weights, threads), accelerator="cpu", workers_per_device=1,
                          max_batch_size=max_batch, batch_timeout=MAX_WAIT_S, api_path="/predict")
    server.run(port=port, host="127.0.0.1", generate_client_file=False, log_level="warning")


def ray_server(model_name: str, weights: str, port: int, max_batch: int, threads: int) -> None:
    """One Ray Serve replica behind Ray's HTTP proxy, batching with ``@serve.batch``."""
    import ray
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
    class Bench:
        def __init__(self) -> None:
            self.model = load(model_name, weights, threads)

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=MAX_WAIT_S)
        async def forward(self, xs: list[torch.Tensor]) -> list[dict]:
            with torch.inference_mode():
                out = self.model(torch.cat(xs))
            return [encode(row.unsqueeze(0)) for row in out]

        async def __call__(self, request: Request) -> dict:
            return await self.forward(decode(await request.json()))

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    # Its own temp dir: a cluster of its own, never another session's. Ray gives its raylet a
    # fixed 30 s to register, which a busy 2-core machine can miss: try again (bench_serving
    # bounds the whole start).
    temp = tempfile.mkdtemp(prefix="aiaas-bench-ray-", dir="/tmp")
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 1024**2,
                     _temp_dir=temp)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Bench.bind(), route_prefix="/predict")
        stopped.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    kind, model_name, weights, port, max_batch, threads = sys.argv[1:7]
    if kind == "fastapi":
        fastapi_server(load(model_name, weights, int(threads)), int(port))
    elif kind == "litserve":
        litserve_server(model_name, weights, int(port), int(max_batch), int(threads))
    else:
        ray_server(model_name, weights, int(port), int(max_batch), int(threads))
