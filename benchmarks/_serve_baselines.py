"""The comparison servers: ``python _serve_baselines.py {fastapi|litserve} MODEL WEIGHTS PORT MAX_BATCH``.

Both load the same weights as the aiaas deployment and speak JSON
``{"inputs": [[...]]}`` -> ``{"outputs": [[...]]}``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from serving_models import MODELS


def load(model_name: str, weights: str) -> torch.nn.Module:
    model = MODELS[model_name]()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def fastapi_server(model: torch.nn.Module, port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict) -> dict:  # one request, one forward
        with torch.inference_mode():
            out = model(torch.as_tensor(np.asarray(body["inputs"], dtype=np.float32)))
        return {"outputs": out.tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


try:
    import litserve as ls
except ImportError:  # the LitServe column is skipped
    ls = None

if ls is not None:

    class BenchAPI(ls.LitAPI):
        """Module level: LitServe starts its workers with spawn, which pickles the API."""

        def __init__(self, model_name: str, weights: str) -> None:
            super().__init__()
            self.model_name, self.weights = model_name, weights

        def setup(self, device):
            self.model = load(self.model_name, self.weights)

        def decode_request(self, request):
            return torch.as_tensor(np.asarray(request["inputs"], dtype=np.float32))

        def batch(self, inputs):
            return torch.cat(inputs)

        def predict(self, x):
            with torch.inference_mode():
                return self.model(x)

        def unbatch(self, output):
            return [row.unsqueeze(0) for row in output]

        def encode_response(self, output):
            return {"outputs": output.tolist()}


def litserve_server(model_name: str, weights: str, port: int, max_batch: int) -> None:
    server = ls.LitServer(BenchAPI(model_name, weights), accelerator="cpu", workers_per_device=1,
                          max_batch_size=max_batch, batch_timeout=0.005, api_path="/predict")
    server.run(port=port, host="127.0.0.1", generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    kind, model_name, weights, port, max_batch = sys.argv[1:6]
    if kind == "fastapi":
        fastapi_server(load(model_name, weights), int(port))
    else:
        litserve_server(model_name, weights, int(port), int(max_batch))
