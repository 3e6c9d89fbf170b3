"""The command line, the README's main job and connect("local")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

import aiaas

ROOT = Path(__file__).resolve().parents[2]


def test_keys_create_prints_a_working_key_last(backend):
    key = backend.new_key("dora")
    assert key.startswith("aiaas_")
    with aiaas.Client(backend.url, key) as client:
        assert client.runs() == []


def test_server_refuses_bad_settings_with_the_key_named(tmp_path):
    out = subprocess.run([sys.executable, "-m", "aiaas_backend", "server", "--data-dir", str(tmp_path),
                          "--slots", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "slots" in out.stderr


def test_readme_main_job_runs_on_the_embedded_backend(tmp_path):
    env = {**os.environ, "AIAAS_DATA_DIR": str(tmp_path / "data"), "AIAAS_CONFIG": str(tmp_path / "config.toml")}
    env.pop("AIAAS_URL", None)
    env.pop("AIAAS_API_KEY", None)
    try:
        out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_digits.py"), "--max-epochs", "4"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
        assert out.returncode == 0, out.stderr[-3000:]
        accuracy = float(out.stdout.strip().splitlines()[-1].rsplit(":", 1)[1])
        assert accuracy > 0.85
        server = json.loads((tmp_path / "data" / "server.json").read_text())
        # The embedded backend outlives the script, and a second connect reuses it.
        assert psutil.pid_exists(server["pid"])
        reuse = subprocess.run(
            [sys.executable, "-c", "import aiaas; c = aiaas.connect('local'); print(c.url, len(c.runs()))"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )
        assert reuse.stdout.split() == [server["url"], "1"], reuse.stderr
        assert json.loads((tmp_path / "data" / "server.json").read_text())["pid"] == server["pid"]
    finally:
        info = tmp_path / "data" / "server.json"
        if info.exists():
            os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)
