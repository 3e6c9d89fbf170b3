"""Training through the backend works as Trainer.fit does locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning
import torch
from torch import nn

import aiaas

from .models import PrintingCallback, RegressionData, Regressor, ScheduledRegressor

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture(scope="module")
def backend(any_backend):
    """Every test here runs on the local executor and again on the Ray executor."""
    return any_backend


def test_notebook_module_trains_remotely_like_trainer_fit(backend, tmp_path):
    env = {**os.environ, "AIAAS_URL": backend.url, "AIAAS_API_KEY": backend.key}
    # Run from an empty dir: nothing but __main__ defines the module.
    out = subprocess.run([sys.executable, str(SCRIPTS / "notebook_parity.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["module_of_class"] == "__main__"
    assert set(result["remote_final"]) == {"train_loss", "val_loss", "val_acc"}
    for key, value in result["local_final"].items():
        assert result["remote_final"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert len(result["remote_points"]) == len(result["local_points"]) > 18
    for (rn, rv, rs), (ln, lv, ls) in zip(result["remote_points"], result["local_points"]):
        assert (rn, rs) == (ln, ls)
        assert rv == pytest.approx(lv, rel=1e-6, abs=1e-7)


def test_datamodule_validation_test_scheduler_and_user_callbacks(client):
    torch.manual_seed(0)
    run = client.train(
        ScheduledRegressor(lr=0.1, gamma=0.5), datamodule=RegressionData(), test=True, max_epochs=3,
        callbacks=[PrintingCallback("hello-from-callback")], gradient_clip_val=1.0, name="scheduled",
    ).wait()
    assert run.status is aiaas.RunStatus.succeeded
    assert {"train_loss", "val_loss", "test_loss"} <= set(run.final_metrics)
    lrs = sorted({round(p.value, 6) for p in run.metrics("lr")}, reverse=True)
    assert lrs == [0.1, 0.05, 0.025]  # StepLR halved it after each epoch
    logs = run.logs()
    for epoch in range(3):
        assert f"hello-from-callback epoch={epoch}" in logs
    assert run.data.trainer_kwargs == {"max_epochs": 3, "gradient_clip_val": 1.0}


def test_pytorch_lightning_module_trains_with_its_own_trainer(client):
    class PLRegressor(pytorch_lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(8, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    from .models import regression_data

    loader = torch.utils.data.DataLoader(regression_data(), batch_size=32)
    run = client.train(PLRegressor(), train_dataloaders=loader, max_epochs=2, name="pl").wait()
    assert run.data.environment["lightning_package"] == "pytorch_lightning"
    assert len(run.metrics("train_loss")) == 8  # 4 batches x 2 epochs, every step logged
    assert run.final_metrics["train_loss"] < run.metrics("train_loss")[0].value


def test_checkpoints_download_and_load(client, tmp_path):
    torch.manual_seed(0)
    run = client.train(Regressor(), max_epochs=2, name="ckpt").wait()
    assert run.data.has_checkpoint
    lightning_path = run.download_checkpoint(tmp_path / "final.ckpt")
    weights_path = run.download_checkpoint(tmp_path / "weights.pt", kind="weights")
    restored = Regressor.load_from_checkpoint(lightning_path)
    state = torch.load(weights_path, weights_only=True)
    assert set(state) == {"net.weight", "net.bias"}
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, state[name])
    x = torch.randn(4, 8)
    restored.eval()
    loss = torch.nn.functional.mse_loss(restored(x), x @ torch.linspace(-1, 1, 8).unsqueeze(1))
    assert loss.item() < 1.0
    with pytest.raises(ValueError, match="kind must be"):
        run.download_checkpoint(tmp_path / "x", kind="onnx")


def test_checkpoint_every_n_epochs_is_the_runs_own_interval(backend, client):
    """On both executors a 1-worker run keeps its resumable checkpoint at the epochs it names."""
    run = client.train(Regressor(), max_epochs=3, checkpoint_every_n_epochs=2, name="every-2").wait()
    assert run.data.checkpoint_every_n_epochs == 2
    resume = backend.data_dir / "artifacts" / "runs" / run.id / "resume" / "last.ckpt"
    # Taken at the end of the second epoch (index 1) only: the third is not a multiple of 2.
    assert torch.load(resume, weights_only=False)["epoch"] == 1
    with pytest.raises(aiaas.InvalidInput, match="checkpoint_every_n_epochs"):
        client.train(Regressor(), max_epochs=1, checkpoint_every_n_epochs=0)


def test_runs_are_listed_newest_first_and_found_again(client):
    first = client.train(Regressor(), max_epochs=1, name="first")
    second = client.train(Regressor(), max_epochs=1, name="second")
    second.wait()
    first.wait()
    ids = [r.id for r in client.runs()]
    assert ids.index(second.id) < ids.index(first.id)
    again = client.run(first.id)
    assert (again.id, again.name, again.status) == (first.id, "first", aiaas.RunStatus.succeeded)
    assert again.metrics() == first.metrics()


def test_async_client_has_the_same_surface(backend):
    import asyncio

    async def main():
        async with aiaas.AsyncClient(backend.url, backend.key) as aclient:
            run = await aclient.train(Regressor(), max_epochs=1, name="async")
            await run.wait()
            again = await aclient.run(run.id)
            return run, again, await run.metrics("train_loss"), await aclient.runs()

    run, again, points, runs = asyncio.run(main())
    assert run.status is aiaas.RunStatus.succeeded and again.id == run.id
    assert len(points) == 8 and run.id in [r.id for r in runs]
