"""The LitServe side of bench_streaming.py: ``python _litserve_text.py WEIGHTS PORT MAX_BATCH THREADS``.

It serves the same TextClassifier with the module's own decode_request /
encode_response, batched by LitServe (stack rows, split outputs), JSON
``{"text": ...}`` in and ``{"label", "score"}`` out.
"""

from __future__ import annotations

import sys

import litserve as ls
import torch

from text_serving_models import TextClassifier


class TextAPI(ls.LitAPI):
    def __init__(self, weights: str, threads: int) -> None:
        super().__init__()
        self.weights, self.threads = weights, threads

    def setup(self, device):
        torch.set_num_threads(self.threads)
        self.model = TextClassifier()
        self.model.load_state_dict(torch.load(self.weights, weights_only=True))
        self.model.eval()

    def decode_request(self, request):
        return self.model.decode_request(request)

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        with torch.inference_mode():
            return self.model(x)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return self.model.encode_response(output)


if __name__ == "__main__":
    weights, port, max_batch, threads = sys.argv[1:5]
    server = ls.LitServer(TextAPI(weights, int(threads)), accelerator="cpu", workers_per_device=1,
                          max_batch_size=int(max_batch), batch_timeout=0.005, api_path="/predict")
    server.run(port=int(port), host="127.0.0.1", generate_client_file=False, log_level="warning")
