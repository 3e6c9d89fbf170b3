"""Kernels to run notebooks on: the installed ipykernel, and ipykernel 6 in a venv.

The dashboard's threads must keep the displaying cell's parent header on both
ipykernel 6 (a global parent) and 7 (a context variable).
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ipykernel6(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A kernelspec ``aiaas-ipykernel6``: this environment's packages plus ipykernel 6."""
    if metadata.version("ipykernel").startswith("6."):
        return {}
    root = tmp_path_factory.mktemp("ipykernel6")
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    # system_site_packages reaches the base interpreter's packages only; when the tests run in a
    # virtualenv, its site-packages (aiaas's editable install included) must come right after
    # the new venv's own. addsitedir, unlike a plain path line, also runs that folder's .pth files.
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (Path(site_packages) / "aiaas_outer_env.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    out = subprocess.run([str(python), "-m", "pip", "install", "-q", "ipykernel>=6.29,<7"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    spec = root / "share" / "jupyter" / "kernels" / "aiaas-ipykernel6"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (ipykernel 6)", "language": "python",
    }))
    version = subprocess.run([str(python), "-c", "import ipykernel, aiaas; print(ipykernel.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    assert version.startswith("6."), f"the ipykernel 6 environment cannot import ipykernel 6 and aiaas: {version}"
    return {"JUPYTER_PATH": str(root / "share" / "jupyter")}


@pytest.fixture(params=["installed", "ipykernel6"])
def kernel(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """(kernel name, extra environment) for each kernel the dashboard must work on."""
    if request.param == "installed":
        return "python3", {}
    extra = request.getfixturevalue("ipykernel6")
    return ("aiaas-ipykernel6", extra) if extra else ("python3", {})


