"""Optimising a model for serving, and measuring what the optimisation costs in accuracy.

Methods: ``int8`` (torch's dynamic quantisation of Linear and LSTM layers), ``compile``
(``torch.compile``) and ``onnx`` (exported with ``torch.onnx.export``, served by ONNX Runtime).

Two users, both processes that may unpickle user code (never the API server):

* the one-shot measuring process, ``python -m aiaas_backend.serving.optimize --run-dir DIR
  --run RUN --method M --out OUT``: builds the optimised model, compares it with the model as
  trained on rows matching the run's input signature, and writes ``report.json`` (and, for
  onnx, ``model.onnx``) into OUT. The API server moves those files into its cache
  (:mod:`.optimize_jobs`);
* a replica (:func:`for_serving`): applies the same method at load, from that cache, so
  replicas never measure again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

METHODS = ("int8", "compile", "onnx")
REPORT = "report.json"
ONNX_FILE = "model.onnx"
COMPILE_CACHE = "compile-cache.bin"


class OptimizeError(Exception):
    """The optimiser cannot handle this model; the message is one line for the caller."""


class Predict(nn.Module):
    """The replica's serving path as one module: ``predict_step`` if the model has one
    (a LightningModule's default calls ``forward``), else ``forward``. Optimising this
    module, not ``forward`` alone, keeps what is measured and what is served the same."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "predict_step"):
            return self.model.predict_step(x, 0)
        return self.model(x)


class Served(nn.Module):
    """An optimised model as a replica serves it: tensor batches take the optimised path, and
    the module's own methods (``decode_request``, ``encode_response``, ``collate``,
    ``generate``) are the module's. For int8 the module is the quantised copy, so its
    ``generate`` runs quantised too; compile and onnx speed up the tensor path only."""

    def __init__(self, module: nn.Module, fast: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fast(x)

    def predict_step(self, x: torch.Tensor, batch_idx: int = 0) -> torch.Tensor:
        return self.fast(x)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


class CompiledPredict(nn.Module):
    """``torch.compile`` of :class:`Predict` that only ever sees tensors owning their storage.

    Dynamo guards an input that is a view on its base tensor: graphs compiled on slices
    (``rows[:1]``, as the warm-up and the measurement pass) failed their guards on the fresh
    tensor of the same shape that the replica decodes every batch into, and the first request
    compiled again (tens of seconds on a busy machine: a compiled deployment that answered
    almost nothing). Dynamo also guards on inference-mode tensors being so. A view, or a tensor
    made under inference mode, is copied into a plain tensor first, so every caller hits the same
    two graphs: batch size 1 (dynamo specialises sizes 0 and 1) and the dynamic one for the rest.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # dynamic=True: one graph for every batch size the router forms, not one per size.
        self.compiled = torch.compile(Predict(model).eval(), dynamic=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and (x._base is not None or x.is_inference()):
            with torch.inference_mode(False):
                x = x.clone()
        return self.compiled(x)


def warm_up(module: nn.Module, rows: torch.Tensor) -> None:
    """Run the shapes a replica serves once, so that compile's graphs exist before "ready":
    one row, and two (standing for every batch size above one)."""
    _run(module, rows[:1].clone())
    _run(module, rows[:2].clone())


class OnnxPredict(nn.Module):
    """An ONNX Runtime session behind the module interface the replica calls."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out, *_) = self.session.run(None, {self.input_name: x.cpu().numpy()})
        return torch.from_numpy(out)


def one_line(exc: BaseException) -> str:
    """``Type: first meaningful line`` of the exception's root cause: exporter errors run to
    pages and wrap the reason (e.g. a data-dependent branch) in a generic "export failed"."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


def _has(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> bool:
    return any(isinstance(m, kinds) for m in model.modules())


def _modules_for_dynamo(model: nn.Module) -> None:
    """Make the modules of classes shipped by value importable by name, from their own globals.

    A class from a module beside the notebook arrives by value (cloudpickle): its methods keep
    ``__module__`` (say ``serving_models``) and a globals dict of their own, but no such module
    exists here. Dynamo reads a traced function's globals by importing its module by name, and
    failed with ``No module named 'serving_models'``; a module object holding those globals
    (and the classes) answers it with the very values the methods see.
    """
    for sub in model.modules():
        for cls in type(sub).__mro__:
            name = cls.__module__
            stub = sys.modules.get(name)
            if stub is not None and not getattr(stub, "__aiaas_shipped__", False):
                continue  # a real module (torch's, the builtins, this process's __main__)
            if stub is None:
                stub = sys.modules[name] = types.ModuleType(name)
                stub.__aiaas_shipped__ = True  # type: ignore[attr-defined]
            for value in vars(cls).values():
                scope = getattr(getattr(value, "__func__", value), "__globals__", None)
                if isinstance(scope, dict) and scope.get("__name__") == name:
                    for key, item in scope.items():
                        stub.__dict__.setdefault(key, item)
            setattr(stub, cls.__name__, cls)


def apply(model: nn.Module, method: str, example: torch.Tensor, folder: Path, threads: int = 0,
          export: bool = False) -> nn.Module:
    """``model`` (eval mode, on the CPU) optimised by ``method``. ``export``: the measuring
    process, which writes ``folder/model.onnx`` for onnx; a replica (``export=False``) loads
    the artifacts the measuring process left in ``folder`` instead."""
    if method == "int8":
        if not _has(model, (nn.Linear, nn.LSTM)):
            raise OptimizeError("int8 quantises Linear and LSTM layers and this model has none; "
                                "deploy it without optimize, or try optimize='compile'")
        if _has(model, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            # Their inference fast path reads each Linear's .weight as a tensor, which a quantised
            # Linear keeps behind a method: this process serves one model, so switch it off here.
            torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings():
            # torch 2.13 still ships eager dynamic quantisation but announces its move to the
            # separate torchao package; until that is a dependency here, torch's own API it is.
            warnings.filterwarnings("ignore", message=".*(torch.ao.quantization|quantized tensor creation)")
            from torch.ao.quantization import quantize_dynamic

            return Predict(quantize_dynamic(model, {nn.Linear, nn.LSTM}, dtype=torch.qint8)).eval()
    if method == "compile":
        # Inductor names its default cache folder after the user, and a sandbox's uid has no
        # name; the sandbox's own /tmp is private and writable.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"aiaas-inductor-{os.getuid()}"))
        cache = folder / COMPILE_CACHE
        if not export and cache.exists():
            # The kernels the measuring process compiled: a replica starts without compiling again.
            torch.compiler.load_cache_artifacts(cache.read_bytes())
        _modules_for_dynamo(model)
        return CompiledPredict(model).eval()
    if method == "onnx":
        path = folder / ONNX_FILE
        if export:
            _export(Predict(model).eval(), example, path)
        return OnnxPredict(path, threads)
    raise OptimizeError(f"unknown optimize method {method!r}; choose one of {', '.join(METHODS)}")


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise OptimizeError(f"optimize='onnx' needs onnx, onnxscript and onnxruntime on the backend ({exc}): "
                            "pip install 'aiaas[optimize]' there") from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["x"],
                                        dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # noqa: BLE001 - every exporter failure is the model's: say which, in one line
        raise OptimizeError(f"ONNX export failed: {one_line(exc)}") from None
    if program is None:
        raise OptimizeError("ONNX export produced no program")
    program.save(str(path))


def sample_rows(model: nn.Module, signature: dict[str, Any] | None, n: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` input rows for measuring, and where they came from: the module's
    ``example_input_array`` when it matches the signature, else rows drawn to fit the
    signature (integer inputs stay below the smallest embedding table, so they are valid ids)."""
    g = torch.Generator().manual_seed(seed)
    example = getattr(model, "example_input_array", None)
    if isinstance(example, torch.Tensor) and example.dim() >= 1 and (
            signature is None or list(example.shape[1:]) == list(signature["shape"])):
        idx = torch.arange(n) % example.shape[0]
        return example.detach().cpu()[idx].clone(), "example_input_array"
    if signature is None:
        raise OptimizeError("the run recorded no input signature (shape and dtype of a row), so there are no "
                            "rows to measure the optimisation on; set example_input_array on the module and "
                            "train it again")
    shape, dtype = (n, *signature["shape"]), signature["dtype"]
    if dtype in ("float32", "float64", "float16", "bfloat16"):
        x = torch.randn(shape, generator=g)
        return x.to(torch.float64 if dtype == "float64" else torch.float32), "synthetic"
    if dtype == "bool":
        return torch.randint(0, 2, shape, generator=g).bool(), "synthetic"
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return torch.randint(0, min(sizes) if sizes else 2, shape, generator=g).to(getattr(torch, dtype)), "synthetic"


def _run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = module(x)
    if not isinstance(out, torch.Tensor):
        raise OptimizeError(f"the model returned {type(out).__name__}; only tensor outputs can be optimised")
    return out


def _median_ms(modules: list[nn.Module], x: torch.Tensor, budget_s: float) -> list[float]:
    """Median time of one call of each module. The calls alternate, so a neighbour's load on
    a shared machine slows both sides alike instead of whichever ran second."""
    for module in modules:
        for _ in range(3):  # warm-up: lazy init, allocator, compile's first call
            _run(module, x)
    times: list[list[float]] = [[] for _ in modules]
    end = time.perf_counter() + budget_s
    while len(times[0]) < 7 or (time.perf_counter() < end and len(times[0]) < 500):
        for module, kept in zip(modules, times):
            t0 = time.perf_counter()
            _run(module, x)
            kept.append((time.perf_counter() - t0) * 1000)
    return [statistics.median(kept) for kept in times]


def measure(base: nn.Module, optimised: nn.Module, rows: torch.Tensor, batch_rows: int,
            budget_s: float = 1.0) -> dict[str, float]:
    """Largest absolute output difference over ``rows`` (in batches of ``batch_rows``, and one
    single row) and the speed-up at ``batch_rows`` (median time, unoptimised / optimised)."""
    deviation = 0.0
    # Fresh tensors, not views: what a replica passes (see CompiledPredict), and no copy timed.
    chunks = [rows[:1].clone(), *(chunk.clone() for chunk in rows.split(batch_rows))]
    for chunk in chunks:
        want, got = _run(base, chunk), _run(optimised, chunk)
        if tuple(want.shape) != tuple(got.shape):
            raise OptimizeError(f"the optimised model returned shape {tuple(got.shape)} where the model returns "
                                f"{tuple(want.shape)}")
        diff = (got.double() - want.double()).abs()
        deviation = max(deviation, float(diff.max()) if diff.numel() else 0.0)
    x = rows[:batch_rows].clone()
    base_ms, opt_ms = _median_ms([base, optimised], x, budget_s)
    return {"max_abs_deviation": deviation, "baseline_ms": base_ms, "optimized_ms": opt_ms,
            "speedup": base_ms / opt_ms if opt_ms > 0 else float("inf"), "batch_rows": float(x.shape[0])}


def for_serving(model: nn.Module, method: str, folder: Path, threads: int = 0) -> nn.Module:
    """The optimised model a replica serves, warmed up (compile compiles here, before the
    replica says it is ready, not on the first request)."""
    signature = json.loads((folder / REPORT).read_text()).get("signature")
    rows, _ = sample_rows(model, signature, 2)
    optimised = apply(model.cpu().eval(), method, rows, folder, threads)
    warm_up(optimised, rows)
    module = optimised.model if isinstance(optimised, Predict) else model
    return Served(module, optimised)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--signature", default="null", help="the run's input signature, as JSON")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..artifacts import RunFolder
    from .replica import load_model

    report: dict[str, Any] = {"method": args.method, "signature": json.loads(args.signature)}
    try:
        model = load_model(RunFolder(args.run_dir), args.run, torch.device("cpu"))
        rows, source = sample_rows(model, report["signature"], max(args.rows, args.batch))
        base = Predict(model).eval()
        try:
            optimised = apply(model, args.method, rows[:2], args.out, args.threads, export=True)
        except OptimizeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the optimiser's refusal of this model
            raise OptimizeError(f"{args.method} could not optimise the model: {one_line(exc)}") from None
        try:
            report.update(measure(base, optimised, rows, args.batch))
        except OptimizeError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. compile failing on the first call
            raise OptimizeError(f"the {args.method}-optimised model failed on rows of shape "
                                f"{tuple(rows.shape[1:])}: {one_line(exc)}") from None
        report.update(rows=int(rows.shape[0]), inputs=source, threads=torch.get_num_threads())
        if args.method == "compile":
            # The graphs a replica warms up with (for_serving), into the cache it loads: else the
            # replica compiles them again at load, minutes on a busy machine.
            warm_up(optimised, rows)
            saved = torch.compiler.save_cache_artifacts()
            if saved is not None:
                (args.out / COMPILE_CACHE).write_bytes(saved[0])
    except OptimizeError as exc:
        report["error"] = str(exc)
    tmp = args.out / (REPORT + ".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, args.out / REPORT)
    print(f"optimize {args.run} {args.method}: {json.dumps(report)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
