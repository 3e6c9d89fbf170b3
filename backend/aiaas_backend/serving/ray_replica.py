"""The Ray Serve deployment that holds one run's model: a replica answers one batch per call.

It speaks the local replica's frames (a tensor frame in; a status byte and a
tensor frame or a JSON error out), so the same router batches for both
runtimes. torch and the user's code are imported in the replica only: the API
server just names this class.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import serve

from ..artifacts import RunFolder


@serve.deployment(name="model")
class ModelReplica:
    def __init__(self, api_url: str, run_id: str, token: str, threads: int) -> None:
        import torch

        from ..worker.remote_files import RemoteFiles
        from .replica import load_model

        torch.set_num_threads(max(1, threads))
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # The run's code and weights through the API, into a folder of this node (no shared
        # file system); loaded, they are not needed on disk any more.
        folder = Path(tempfile.mkdtemp(prefix="aiaas-replica-"))
        try:
            files = RemoteFiles(api_url, run_id, token, kind="replica")
            for name in ("code.bin", "weights.pt"):
                if not files.fetch(name, folder / name):
                    raise RuntimeError(f"the aiaas API has no {name} for run {run_id}")
            self._model: Any = load_model(RunFolder(folder), run_id, self._device)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def __call__(self, frame: bytes) -> bytes:
        from aiaas_sdk import tensor_codec

        from .frames import ITEMS, error_reply
        from .hooks import answer_frame
        from .replica import predict

        if frame.startswith(ITEMS):
            return answer_frame(self._model, frame, self._device)
        try:
            array = tensor_codec.decode(frame)
        except tensor_codec.CodecError as exc:
            return error_reply(str(exc), "input")
        return predict(self._model, array, self._device)
