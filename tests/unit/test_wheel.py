"""The wheel holds the three packages, what the backend reads at run time (migrations), and the
prebuilt JupyterLab extension (so users need no Node.js)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contents(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("aiaas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("aiaas/__init__.py", "aiaas_sdk/_client.py", "aiaas_sdk/widgets/_chart.py",
                     "aiaas_backend/main.py", "aiaas_backend/migrations/env.py",
                     "aiaas_backend/migrations/script.py.mako", "aiaas_backend/migrations/versions/0001_initial.py",
                     "aiaas_backend/serving/replica.py", "aiaas_backend/worker/__main__.py"):
        assert required in names, required
    assert not [n for n in names if n.startswith(("tests/", "backend/"))]
    data = "aiaas-0.1.0.data/data/"
    lab = data + "share/jupyter/labextensions/aiaas-lab/"
    for required in (lab + "package.json", lab + "install.json", lab + "static/style.js",
                     lab + "schemas/aiaas-lab/plugin.json",
                     data + "etc/jupyter/jupyter_server_config.d/aiaas_lab.json"):
        assert required in names, required
    assert [n for n in names if n.startswith(lab + "static/remoteEntry.") and n.endswith(".js")]
    assert not [n for n in names if "node_modules" in n]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "aiaas = aiaas_backend.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
