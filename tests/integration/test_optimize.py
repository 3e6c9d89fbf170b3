"""Optimise at deploy: int8, compile and onnx measured by the real backend, served by real replicas."""

from __future__ import annotations

import time

import httpx
import pytest
import torch

import aiaas

from .models import BranchyMLP, DigitsMLP, digits_data


@pytest.fixture(scope="module")
def runs(client, tmp_path_factory):
    """A trained digits MLP and a trained MLP with data-dependent control flow, with local copies."""
    out = {}
    for name, cls in (("digits", DigitsMLP), ("branchy", BranchyMLP)):
        torch.manual_seed(0)
        run = client.train(cls(), max_epochs=1, name=f"opt-{name}").wait()
        weights = run.download_checkpoint(tmp_path_factory.mktemp(name) / "weights.pt", kind="weights")
        local = cls()
        local.load_state_dict(torch.load(weights, weights_only=True))
        out[name] = (run, local.eval())
    return out


def _local(model, x):
    with torch.inference_mode():
        return model(x)


def _check_report(report, method):
    assert report is not None and report.method == method
    assert report.speedup > 0 and report.baseline_ms > 0 and report.optimized_ms > 0
    assert 0 <= report.max_abs_deviation <= report.tolerance
    assert report.rows >= 64 and report.inputs == "example_input_array"


@pytest.mark.parametrize("method", ["int8", "onnx", "compile"])
def test_optimized_deployment_answers_within_tolerance_and_reports(client, runs, method):
    run, local = runs["digits"]
    started = time.monotonic()
    dep = run.deploy(f"digits-{method}", optimize=method, max_batch_size=16)
    took = time.monotonic() - started
    try:
        _check_report(dep.optimization, method)
        print(f"{method}: deploy {took:.1f} s, {dep.optimization}")
        x = digits_data(40, seed=9).tensors[0]
        y = dep.predict(x)
        assert y.shape == (40, 10)
        assert (y - _local(local, x)).abs().max() <= dep.optimization.tolerance * 2
        assert dep.stats().optimization == dep.optimization
        raw = httpx.get(f"{client.url}/v1/deployments/{dep.name}",
                        headers={"Authorization": f"Bearer {client._api_key}"}).json()
        assert raw["optimize"] == method and raw["optimization"]["speedup"] == dep.optimization.speedup
        assert client.deployment(dep.name).optimization == dep.optimization
    finally:
        dep.delete()


def test_deviation_over_tolerance_is_refused_with_both_numbers(client, runs):
    run, _ = runs["digits"]
    resp = httpx.post(f"{client.url}/v1/deployments", timeout=600,
                      headers={"Authorization": f"Bearer {client._api_key}"},
                      json={"name": "too-strict", "run_id": run.id, "optimize": "int8", "optimize_tolerance": 0})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "optimize_tolerance_exceeded"
    assert body["max_abs_deviation"] > 0 and body["speedup"] > 0 and body["tolerance"] == 0
    assert "optimize_tolerance" in body["detail"] and f"{body['max_abs_deviation']:.3g}" in body["detail"]
    with pytest.raises(aiaas.BadRequest, match="changes the model's outputs by up to"):
        run.deploy("too-strict", optimize="int8", optimize_tolerance=1e-9)
    with pytest.raises(aiaas.NotFound):
        client.deployment("too-strict")


def test_unsupported_model_is_a_one_line_400_and_others_keep_serving(client, runs):
    serving = runs["digits"][0].deploy("keeps-serving", optimize="int8")
    try:
        branchy, _ = runs["branchy"]
        with pytest.raises(aiaas.BadRequest) as info:
            branchy.deploy("branchy-onnx", optimize="onnx")
        assert info.value.code == "optimize_failed" and "\n" not in info.value.message
        assert "ONNX export failed" in info.value.message
        with pytest.raises(aiaas.NotFound):
            client.deployment("branchy-onnx")
        with pytest.raises(aiaas.InvalidInput, match="optimize"):
            branchy.deploy("branchy-bad", optimize="fp4")
        assert serving.predict(torch.rand(3, 64)).shape == (3, 10)
    finally:
        serving.delete()


def test_update_and_rollback_measure_each_version(client, runs):
    (digits, local_digits), (branchy, local_branchy) = runs["digits"], runs["branchy"]
    dep = digits.deploy("versions-int8", optimize="int8", optimize_tolerance=1.0)
    try:
        first = dep.optimization
        x = torch.rand(4, 64)
        dep.update(branchy.id)
        assert dep.run_id == branchy.id and dep.optimization is not None
        assert dep.optimization.baseline_ms != first.baseline_ms  # measured for this version
        assert (dep.predict(x) - _local(local_branchy, x)).abs().max() <= 1.0
        dep.rollback()
        assert dep.run_id == digits.id and dep.optimization == first  # the cached measurement
        assert (dep.predict(x) - _local(local_digits, x)).abs().max() <= 1.0
    finally:
        dep.delete()
