"""A replica: loads one run's model and answers batches on a Unix socket.

``python -m aiaas_backend.serving.replica --socket PATH --run-dir DIR --run RUN_ID``

Like the worker, it is a process that unpickles user code; the API server
only moves bytes. It serves one connection (its router) one batch, or one stream, at a time.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import numpy as np
import torch

from aiaas_sdk import packaging, tensor_codec

from ..artifacts import Artifacts, RunFolder
from .frames import CANCEL, ITEMS, LEN, OK, STREAM, error_reply
from .generate import run_stream
from .hooks import answer_frame


def load_model(artifacts: Artifacts, run_id: str, device: torch.device) -> torch.nn.Module:
    payload = packaging.unpack(artifacts.code(run_id).read_bytes())
    model = payload["model"]
    state = torch.load(artifacts.final(run_id, "weights"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def predict(model: torch.nn.Module, array: np.ndarray, device: torch.device) -> bytes:
    x = torch.from_numpy(np.array(array)).to(device)
    try:
        with torch.inference_mode():
            # LightningModule.predict_step defaults to self(batch), so this is
            # "predict_step if defined, else forward".
            out = model.predict_step(x, 0) if hasattr(model, "predict_step") else model(x)
    except Exception as exc:  # noqa: BLE001 - the model's refusal goes back to the caller
        return error_reply(f"the model failed on inputs of shape {tuple(array.shape)} and dtype {array.dtype}: "
                           f"{type(exc).__name__}: {exc}", "input")
    if not isinstance(out, torch.Tensor):
        return error_reply(f"predict_step/forward must return a tensor to be served; it returned "
                           f"{type(out).__name__}", "internal")
    if out.dim() == 0 or out.shape[0] != x.shape[0]:
        return error_reply(f"the model returned shape {tuple(out.shape)} for a batch of {x.shape[0]}: "
                           "its first dimension must be the batch", "internal")
    return OK + tensor_codec.encode(out.detach().cpu().numpy())


def _read_exact(conn: socket.socket, n: int) -> bytes | None:
    chunks, remaining = [], n
    while remaining:
        chunk = conn.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def serve(sock_path: Path, model: torch.nn.Module, device: torch.device) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = sock_path.with_name(sock_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    server.bind(str(tmp))
    server.listen(1)
    # Renamed into place only when listening: the socket's existence means "ready".
    os.replace(tmp, sock_path)
    # A router that never connects (its server died while we loaded) must not leave us behind.
    server.settimeout(300)
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return
    conn.settimeout(None)
    while True:
        head = _read_exact(conn, LEN.size)
        if head is None:
            return  # the router went away
        (n,) = LEN.unpack(head)
        body = _read_exact(conn, n)
        if body is None:
            return
        kind = body[:4]
        if kind == CANCEL:
            continue  # the stream it meant to stop had already ended
        if kind == STREAM:
            try:
                run_stream(conn, model, body[4:], lambda: _read_frame(conn))
            except OSError:
                return  # the router went away mid-stream
            continue
        if kind == ITEMS:
            reply = answer_frame(model, body, device)
        else:
            try:
                reply = predict(model, tensor_codec.decode(body), device)
            except tensor_codec.CodecError as exc:
                reply = error_reply(str(exc), "input")
        conn.sendall(LEN.pack(len(reply)) + reply)


def _read_frame(conn: socket.socket) -> bytes | None:
    head = _read_exact(conn, LEN.size)
    return None if head is None else _read_exact(conn, LEN.unpack(head)[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True, type=Path)
    # The run's folder (what a sandboxed replica sees), or the artifacts root with every run.
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--run", required=True)
    parser.add_argument("--threads", type=int, default=0)
    # Serve the model optimised so, from the folder where the server cached its measured artifact.
    parser.add_argument("--optimize", choices=("int8", "compile", "onnx"))
    parser.add_argument("--optimized", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if os.environ.get("CUDA_VISIBLE_DEVICES") and torch.cuda.is_available() else "cpu")
    artifacts = RunFolder(args.run_dir) if args.run_dir else Artifacts(args.artifacts)
    model = load_model(artifacts, args.run, device)
    if args.optimize:
        from .optimize import for_serving

        device = torch.device("cpu")  # int8 kernels and our ONNX Runtime session are CPU ones
        model = for_serving(model, args.optimize, args.optimized, args.threads)
    print(f"replica for {args.run} ready on {device} with {torch.get_num_threads()} threads", flush=True)
    serve(args.socket, model, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
