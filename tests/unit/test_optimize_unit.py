"""The pieces of optimise-at-deploy that need no server: rows, one-line errors, the tolerance check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from aiaas_backend.errors import ApiError
from aiaas_backend.serving.optimize import OptimizeError, Predict, apply, measure, one_line, sample_rows
from aiaas_backend.serving.optimize_jobs import check_tolerance

REPORT = {"speedup": 1.5, "max_abs_deviation": 0.02, "baseline_ms": 3.0, "optimized_ms": 2.0, "batch_rows": 64.0,
          "rows": 256, "inputs": "synthetic"}


def test_rows_fit_the_signature_and_stay_valid_token_ids() -> None:
    lm = nn.Sequential(nn.Embedding(50, 8), nn.Embedding(30, 8))
    rows, source = sample_rows(lm, {"dtype": "int64", "shape": [12]}, 100)
    assert source == "synthetic" and rows.shape == (100, 12) and rows.dtype == torch.int64
    assert 0 <= int(rows.min()) and int(rows.max()) < 30
    floats, _ = sample_rows(nn.Linear(4, 2), {"dtype": "bfloat16", "shape": [4]}, 8)
    assert floats.dtype == torch.float32 and floats.shape == (8, 4)
    with pytest.raises(OptimizeError, match="example_input_array"):
        sample_rows(nn.Linear(4, 2), None, 8)


def test_example_input_array_is_preferred() -> None:
    model = nn.Linear(4, 2)
    model.example_input_array = torch.arange(12.0).view(3, 4)
    rows, source = sample_rows(model, {"dtype": "float32", "shape": [4]}, 7)
    assert source == "example_input_array" and torch.equal(rows[3], model.example_input_array[0])


def test_one_line_names_the_root_cause_without_colour_codes() -> None:
    try:
        try:
            raise ValueError("\x1b[96mthe real reason\x1b[0m\nand a page of detail")
        except ValueError as inner:
            raise RuntimeError("export failed, step 1/3") from inner
    except RuntimeError as exc:
        assert one_line(exc) == "ValueError: the real reason"


def test_int8_without_linear_layers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match="has none"):
        apply(nn.Sequential(nn.ReLU()), "int8", torch.zeros(2, 4), tmp_path)


def test_int8_deviation_is_measured(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    rows = torch.randn(64, 16)
    report = measure(Predict(model).eval(), apply(model, "int8", rows[:2], tmp_path), rows, 16, budget_s=0.05)
    assert 0 < report["max_abs_deviation"] < 0.5 and report["speedup"] > 0 and report["batch_rows"] == 16


def test_tolerance_check_keeps_both_numbers() -> None:
    public = check_tolerance(REPORT, "int8", None)
    assert public["tolerance"] == 0.05 and public["max_abs_deviation"] == 0.02 and public["speedup"] == 1.5
    with pytest.raises(ApiError) as info:
        check_tolerance(REPORT, "int8", 0.01)
    assert info.value.status_code == 400 and info.value.code == "optimize_tolerance_exceeded"
    assert info.value.extra == {"speedup": 1.5, "max_abs_deviation": 0.02, "tolerance": 0.01}
    assert "0.02" in info.value.detail and "1.50x" in info.value.detail


SHIPPED = '''
import torch
from torch import nn

FACTOR = 3.0


def scale(t):
    return t * FACTOR


class Shipped(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return scale(torch.relu(self.lin(x)))
'''

COMPILE_IT = '''
import pickle, sys, tempfile
from pathlib import Path
import torch
from aiaas_backend.serving.optimize import apply
model = pickle.loads(Path(sys.argv[1]).read_bytes()).eval()
assert "shipped_models" not in sys.modules
x = torch.rand(3, 4)
out = apply(model, "compile", x[:2], Path(tempfile.mkdtemp()), 1, export=True)(x)
assert torch.allclose(out, model(x)), (out, model(x))
print("compiled")
'''


def test_compile_traces_a_class_shipped_by_value(tmp_path: Path) -> None:
    """Its module does not exist where it is unpickled; dynamo used to fail importing it by name."""
    import subprocess
    import sys

    import cloudpickle

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "shipped_models.py").write_text(SHIPPED)
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        import shipped_models

        cloudpickle.register_pickle_by_value(shipped_models)
        (tmp_path / "model.pkl").write_bytes(cloudpickle.dumps(shipped_models.Shipped()))
    finally:
        sys.path.remove(str(tmp_path / "src"))
        sys.modules.pop("shipped_models", None)
    done = subprocess.run([sys.executable, "-c", COMPILE_IT, str(tmp_path / "model.pkl")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


# Importing inductor runs torch's own torch.utils.mkldnn, which uses torch.jit.script_method.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_model_serves_every_batch_size_without_compiling_again(tmp_path: Path) -> None:
    """A replica decodes each batch into a fresh tensor; graphs warmed up on slices of the sample
    rows were guarded on the slice's base and compiled again on the first request."""
    from aiaas_backend.serving.optimize import warm_up

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    rows = torch.randn(64, 8)
    compiled = apply(model, "compile", rows[:2], tmp_path, 1, export=True)
    warm_up(compiled, rows)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for x in (torch.randn(1, 8), torch.randn(3, 8), torch.randn(64, 8), rows[5:22], rows[7:8]):
            with torch.inference_mode():  # as the replica runs its model, on tensors made outside
                assert torch.allclose(compiled(x), model(x), atol=1e-5)
        with torch.inference_mode():  # a collate or decode_request that ran under inference mode
            x = torch.randn(5, 8)
            assert torch.allclose(compiled(x), model(x), atol=1e-5)
