"""The payload format: framing, hashing, version checks, local modules shipped by value."""

import subprocess
import sys
import textwrap

import pytest

from aiaas_sdk import packaging


def _pack(obj):
    return packaging.pack({"model": obj}, lightning_package="lightning")


def test_round_trip_and_manifest():
    blob = _pack({"weights": [1, 2, 3]})
    manifest = packaging.read_manifest(blob)
    assert manifest["python"] == ".".join(map(str, sys.version_info[:3]))
    assert manifest["lightning_package"] == "lightning" and len(manifest["sha256"]) == 64
    assert packaging.unpack(blob)["model"] == {"weights": [1, 2, 3]}
    # Installed packages (torch here) are not shipped: they travel by reference.
    shipped = packaging.read_manifest(blob)["by_value_modules"].split(",")
    assert not [m for m in shipped if m.split(".")[0] in ("torch", "numpy", "lightning")], shipped


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"garbage" + b, "not an aiaas payload"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "SHA-256"),
    ],
)
def test_damaged_payloads_are_refused_without_unpickling(mangle, message):
    with pytest.raises(packaging.PayloadError, match=message):
        packaging.read_manifest(mangle(_pack([1])))


def test_incompatibilities_name_both_versions():
    client = {"python": "3.11.7", "torch": "2.13.0+cpu", "lightning": "2.6.6", "cloudpickle": "3.1.2",
              "lightning_package": "lightning"}
    assert packaging.incompatibilities(client, dict(client, python="3.11.9", torch="2.13.1")) == []
    problems = packaging.incompatibilities(client, dict(client, python="3.12.1", lightning="missing"))
    assert problems == [
        "the backend runs Python 3.12.1 but this notebook runs Python 3.11.7",
        "the backend has no lightning installed but this notebook uses lightning 2.6.6",
    ]


def test_lightning_package_is_read_from_the_class():
    import lightning.pytorch as L
    import pytorch_lightning as PL

    assert packaging.lightning_package_of(L.LightningModule()) == "lightning"
    assert packaging.lightning_package_of(PL.LightningModule()) == "pytorch_lightning"
    with pytest.raises(TypeError, match="not a LightningModule"):
        packaging.lightning_package_of(object())


def test_a_users_own_module_travels_by_value(tmp_path, monkeypatch):
    (tmp_path / "helpers_beside_notebook.py").write_text(textwrap.dedent("""
        class Scale:
            def __init__(self, k):
                self.k = k
            def __call__(self, x):
                return self.k * x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import helpers_beside_notebook

    blob = _pack(helpers_beside_notebook.Scale(3))
    assert "helpers_beside_notebook" in packaging.read_manifest(blob)["by_value_modules"]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(blob)
    # Elsewhere, where helpers_beside_notebook cannot be imported, it still unpickles.
    code = ("import sys; from aiaas_sdk import packaging; "
            f"print(packaging.unpack(open({str(payload)!r}, 'rb').read())['model'](14))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert out.stdout.strip() == "42", out.stderr


def test_a_shipped_functions_traceback_names_the_users_file_and_source(tmp_path, monkeypatch):
    source = tmp_path / "failing_beside_notebook.py"
    source.write_text(textwrap.dedent("""
        class Boom:
            def __call__(self):
                raise ValueError("boom from the user's file")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import failing_beside_notebook

    payload = tmp_path / "payload.bin"
    payload.write_bytes(_pack(failing_beside_notebook.Boom()))
    source.unlink()  # the worker's machine has no copy of the file: its lines travel in the payload
    code = ("import traceback; from aiaas_sdk import packaging\n"
            f"model = packaging.unpack(open({str(payload)!r}, 'rb').read())['model']\n"
            "try:\n    model()\nexcept ValueError:\n    traceback.print_exc()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert f'File "{source}", line 4, in __call__' in out.stderr, out.stderr
    assert """raise ValueError("boom from the user's file")""" in out.stderr


def test_only_the_shipped_classes_own_sources_travel(tmp_path, monkeypatch):
    """Local modules the kernel imported but the model does not come from add nothing."""
    (tmp_path / "model_beside_notebook.py").write_text("class M:\n    pass\n")
    (tmp_path / "unrelated_beside_notebook.py").write_text("X = 1\n" + "# padding\n" * 20_000)
    monkeypatch.syspath_prepend(str(tmp_path))
    import model_beside_notebook
    import unrelated_beside_notebook  # noqa: F401 - imported, as a notebook would

    assert len(_pack(model_beside_notebook.M())) < 20_000
