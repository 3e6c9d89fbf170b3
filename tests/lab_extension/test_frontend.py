"""The TypeScript side of the lab extension: its vitest suite (models checked against a real
backend's OpenAPI schema), and the built extension as JupyterLab sees it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from ..conftest import ROOT

LAB = ROOT / "lab_extension"
NPM = shutil.which("npm")


def _npm(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert NPM, "npm is not on PATH: the lab extension's tests and build need Node.js 20 and npm"
    return subprocess.run([NPM, *args], cwd=LAB, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_vitest_suite_passes_against_the_backend_schema(backend, tmp_path: Path) -> None:
    schema = tmp_path / "openapi.json"
    schema.write_text(httpx.get(f"{backend.url}/openapi.json").raise_for_status().text)
    if not (LAB / "node_modules" / ".bin" / "vitest").exists():
        # `pip install -e .` installs these; a checkout without that build gets them here.
        installed = _npm("ci", "--no-audit", "--no-fund")
        assert installed.returncode == 0, installed.stderr[-3000:]
    report = tmp_path / "vitest.json"
    out = _npm("test", "--", "--reporter=default", "--reporter=json", f"--outputFile={report}",
               env={"AIAAS_OPENAPI": str(schema), "CI": "1"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    results = json.loads(report.read_text())
    # With the schema given, nothing may be skipped: the schema tests count.
    assert results["numFailedTests"] == 0 and results["numPendingTests"] == 0, results
    names = [t["fullName"] for f in results["testResults"] for t in f["assertionResults"]]
    assert any("RunPublic has every field" in n for n in names), names


def test_jupyter_lists_the_extension_enabled() -> None:
    out = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    # Jupyter writes the list to stderr; colour codes aside, our line reads "aiaas-lab v0.1.0 enabled OK".
    listing = out.stdout + out.stderr
    line = next((ln for ln in listing.splitlines() if "aiaas-lab" in ln), None)
    assert line is not None, f"aiaas-lab is not installed as a labextension (pip install -e .):\n{listing}"
    assert "enabled" in line and "OK" in line, line
    assert '(python, aiaas)' in line, line
