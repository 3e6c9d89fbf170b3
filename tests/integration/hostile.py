"""Modules a hostile user could submit: each tries to reach what is not its own.

Shipped by value (a local module beside the tests). Each probe prints one line,
``PROBE <name>: blocked (<why>)`` or ``PROBE <name>: LEAKED <what>``, so a test reads the
verdicts from the run's logs.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


def _data() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(16, 8), torch.randn(16, 1)), batch_size=8)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return _data()


def _verdict(name: str, attempt) -> None:
    try:
        got = attempt()
    except Exception as exc:  # noqa: BLE001 - any refusal is the point
        print(f"PROBE {name}: blocked ({type(exc).__name__}: {exc})", flush=True)
    else:
        print(f"PROBE {name}: LEAKED {str(got)[:200]!r}", flush=True)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4096)


def _write(path: str) -> str:
    with open(path, "w") as f:
        f.write("pwned")
    return path


def _connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        return f"connected to 127.0.0.1:{port}"


def _walk_up() -> list[str]:
    """Walk up from the working directory, as the issue's attacker did, looking for the
    database, checkpoints, config files and keys (the system's and the Python environment's
    own files, which the sandbox shows on purpose, are no secret)."""
    wanted = ("aiaas.db", "final.ckpt", "weights.pt", "config.toml", "id_rsa", "code.bin")
    mine = os.path.abspath(os.getcwd())
    found = []
    for root, dirs, files in os.walk("/"):
        shown = ("/usr", "/proc", "/sys", "/dev", mine, sys.prefix, sys.base_prefix)
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in shown]
        found += [os.path.join(root, f) for f in files if f in wanted]
    if not found:
        raise FileNotFoundError("nothing of anyone else's anywhere it can look")
    return found


def _server_environment() -> list[str]:
    names = [k for k in os.environ if k.startswith(("AIAAS_DATABASE", "SECRET"))]
    if not names:
        raise LookupError("none of the server's environment")
    return names


class Prober(_Tiny):
    """Tries every door at the start of training, then trains normally: each door is named in
    ``targets`` (host paths and numbers the test knows)."""

    def __init__(self, targets: dict) -> None:
        super().__init__()
        self.targets = targets

    def on_train_start(self) -> None:
        t = self.targets
        _verdict("read_database", lambda: _read(t["database"]))
        _verdict("read_other_checkpoint", lambda: _read(t["other_checkpoint"]))
        _verdict("list_other_runs", lambda: os.listdir(t["runs"]))
        _verdict("read_config", lambda: _read(t["config"]))
        _verdict("read_ssh_key", lambda: _read(t["ssh_key"]))
        _verdict("list_home", lambda: os.listdir(t["home"]))
        _verdict("write_data_dir", lambda: _write(os.path.join(t["data_dir"], "pwned")))
        _verdict("write_root", lambda: _write("/pwned"))
        _verdict("walk_up", _walk_up)
        _verdict("signal_server", lambda: os.kill(t["server_pid"], signal.SIGTERM))
        _verdict("signal_other_worker", lambda: os.kill(t["other_worker_pid"], signal.SIGKILL))
        _verdict("connect_postgres", lambda: _connect(5432))
        _verdict("connect_api_tcp", lambda: _connect(t["api_port"]))
        _verdict("environment", _server_environment)
        # Its own folder stays writable: a run that behaves keeps working.
        with open("mine.txt", "w") as f:
            f.write("ok")


class ForkBomb(_Tiny):
    def training_step(self, batch, batch_idx):
        children = 0
        while True:
            pid = os.fork()  # bounded by the process limit: fails with EAGAIN
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
            if children > 100_000:
                raise AssertionError("the process limit did not hold")


class MemoryHog(_Tiny):
    def __init__(self, megabytes: int) -> None:
        super().__init__()
        self.megabytes = megabytes

    def training_step(self, batch, batch_idx):
        hog = bytearray(self.megabytes * 1024 * 1024)  # past the memory limit: refused
        return super().training_step(batch, batch_idx) + len(hog) * 0


class DiskFiller(_Tiny):
    """Writes files into its own folder, each below the quota, together past it."""

    def training_step(self, batch, batch_idx):
        chunk = os.urandom(1024 * 1024)
        for n in range(10_000):
            with open(f"filler-{n}.bin", "wb") as f:
                for _ in range(8):
                    f.write(chunk)
            time.sleep(0.05)
        raise AssertionError("the disk limit did not hold")


class TmpFiller(_Tiny):
    """Writes a scratch file into /tmp, 16 MiB in 1 MiB writes."""

    def training_step(self, batch, batch_idx):
        chunk = os.urandom(1024 * 1024)
        with open("/tmp/scratch.bin", "wb") as f:
            for _ in range(16):
                f.write(chunk)
                f.flush()
        raise AssertionError("/tmp took 16 MiB")


class _Big(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(4 * 1024 * 1024), torch.zeros(1)  # 16 MiB


class SharedMemoryLoader(_Tiny):
    """A DataLoader worker process hands batches back through /dev/shm, 16 MiB each."""

    def training_step(self, batch, batch_idx):
        return self.net(batch[0][:, :8]).sum()

    def train_dataloader(self):
        return DataLoader(_Big(), batch_size=1, num_workers=1)


class Sleeper(_Tiny):
    def training_step(self, batch, batch_idx):
        time.sleep(3600)


class Steady(_Tiny):
    """Another user's long run, logging as it goes, that a hostile one might try to kill."""

    def training_step(self, batch, batch_idx):
        time.sleep(0.2)
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss)
        return loss

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4000, 8), torch.randn(4000, 1)), batch_size=8)


class Marked(_Tiny):
    """Another user's honest run, with something in its logs and checkpoint to keep private."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def on_train_start(self) -> None:
        print(self.marker, flush=True)


class PeekingModel(_Tiny):
    """Served: its forward tries to read the database on every batch."""

    def __init__(self, database: str) -> None:
        super().__init__()
        self.database = database

    def forward(self, x):
        try:
            with open(self.database, "rb") as f:
                leaked = f.read(16)
        except OSError:
            return self.net(x)
        raise RuntimeError(f"LEAKED {leaked!r}")


# -- served: the same doors, tried from a serving replica's load path and forward ------------
SERVED_PROBES = ("read_database", "read_other_checkpoint", "list_other_runs", "read_config", "read_ssh_key",
                 "list_home", "write_data_dir", "write_root", "write_own_folder", "walk_up", "signal_server",
                 "signal_other_replica", "connect_postgres", "connect_api_tcp", "environment")


def _served_folder() -> str:
    """The run folder a replica serves from, as it sees it (its ``--run-dir``)."""
    return sys.argv[sys.argv.index("--run-dir") + 1] if "--run-dir" in sys.argv else os.getcwd()


def _served_probes(t: dict) -> list[bool]:
    """Every door from inside a replica; True where it held. A replica's own folder (the run's
    checkpoint) is read-only, so writing there is a door too."""
    attempts = {
        "read_database": lambda: _read(t["database"]),
        "read_other_checkpoint": lambda: _read(t["other_checkpoint"]),
        "list_other_runs": lambda: os.listdir(t["runs"]),
        "read_config": lambda: _read(t["config"]),
        "read_ssh_key": lambda: _read(t["ssh_key"]),
        "list_home": lambda: os.listdir(t["home"]),
        "write_data_dir": lambda: _write(os.path.join(t["data_dir"], "pwned")),
        "write_root": lambda: _write("/pwned"),
        "write_own_folder": lambda: _write(os.path.join(_served_folder(), "pwned")),
        "walk_up": _walk_up,
        "signal_server": lambda: os.kill(t["server_pid"], signal.SIGTERM),
        "signal_other_replica": lambda: os.kill(t["other_replica_pid"], signal.SIGKILL),
        "connect_postgres": lambda: _connect(5432),
        "connect_api_tcp": lambda: _connect(t["api_port"]),
        "environment": _server_environment,
    }
    held = []
    for name in SERVED_PROBES:
        try:
            got = attempts[name]()
        except Exception as exc:  # noqa: BLE001 - any refusal is the point
            print(f"PROBE {name}: blocked ({type(exc).__name__}: {exc})", flush=True)
            held.append(True)
        else:
            print(f"PROBE {name}: LEAKED {str(got)[:200]!r}", flush=True)
            held.append(False)
    return held


class ServedProber(_Tiny):
    """Served: tries every door while its weights load (verdicts in the replica's output) and
    in every forward, answering one column per door: 1 where it held, 0 where it leaked."""

    def __init__(self, targets: dict) -> None:
        super().__init__()
        self.targets = targets

    def load_state_dict(self, *args, **kwargs):
        print("PROBES at load", flush=True)
        _served_probes(self.targets)
        return super().load_state_dict(*args, **kwargs)

    def forward(self, x):
        held = torch.tensor(_served_probes(self.targets), dtype=torch.float32)
        return held.repeat(x.shape[0], 1)

    def training_step(self, batch, batch_idx):
        x, y = batch  # trains its layer without the probes: they are for serving
        return F.mse_loss(self.net(x), y)


class LoadEscaper(_Tiny):
    """Served: refuses to load unless it can read the database, as a model that needs the
    escape to work would; the replica must fail, with a message saying where to look."""

    def __init__(self, database: str) -> None:
        super().__init__()
        self.database = database

    def load_state_dict(self, *args, **kwargs):
        _read(self.database)  # raises inside the sandbox
        return super().load_state_dict(*args, **kwargs)


def _worker_token() -> tuple[str, str, str]:
    """(API URL, this run's id, its worker token): what any run's code can find in its process."""
    import gc

    reporter = next(o for o in gc.get_objects() if type(o).__name__ == "Reporter")
    return reporter._api_url, reporter._run_id, reporter._http.headers["authorization"]


class FileThief(_Tiny):
    """With its own run's worker token, tries to read and overwrite another run's stored files."""

    def __init__(self, other_run: str) -> None:
        super().__init__()
        self.other_run = other_run

    def on_train_start(self) -> None:
        import hashlib

        import httpx

        api, own, auth = _worker_token()

        def probe(name: str, method: str, run: str, file: str, body: bytes | None = None,
                  digest: str | None = None) -> None:
            headers = {"Authorization": auth}
            if body is not None:
                headers["X-Content-SHA256"] = digest or hashlib.sha256(body).hexdigest()
            resp = httpx.request(method, f"{api}/v1/worker/runs/{run}/files/{file}", content=body, headers=headers)
            print(f"PROBE {name}: {resp.status_code} {resp.content[:60]!r}", flush=True)

        probe("own_code", "GET", own, "code.bin")
        probe("other_code", "GET", self.other_run, "code.bin")
        probe("other_checkpoint", "GET", self.other_run, "resume/last.ckpt")
        probe("other_weights_write", "PUT", self.other_run, "weights.pt", b"pwned")
        probe("own_code_write", "PUT", own, "code.bin", b"pwned")
        probe("own_bad_digest", "PUT", own, "weights.pt", b"pwned", "0" * 64)
        probe("own_other_file", "GET", own, "output.log")
