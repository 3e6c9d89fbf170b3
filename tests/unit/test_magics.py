"""The %aiaas magic in an in-process IPython shell (no kernel needed)."""

import pytest
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython


@pytest.fixture(scope="module")
def shell():
    ip = start_ipython()
    yield ip


def test_load_twice_unload_and_usage(shell):
    shell.run_line_magic("load_ext", "aiaas")
    shell.run_line_magic("load_ext", "aiaas")
    magic = shell.find_line_magic("aiaas")
    assert magic is not None
    assert "%aiaas train MODEL [--datamodule DM]" in magic.__doc__  # what %aiaas? shows
    with pytest.raises(UsageError, match="needs a command"):
        shell.run_line_magic("aiaas", "")
    with pytest.raises(UsageError, match="train: the following arguments are required: model"):
        shell.run_line_magic("aiaas", "train")
    with pytest.raises(UsageError, match="no variable 'nothing_here'"):
        shell.run_line_magic("aiaas", "train nothing_here")
    shell.run_line_magic("unload_ext", "aiaas")
    assert shell.find_line_magic("aiaas") is None


def test_unreachable_backend_is_one_line(shell, monkeypatch):
    shell.run_line_magic("load_ext", "aiaas")
    with pytest.raises(UsageError) as raised:
        shell.run_line_magic("aiaas", "connect http://127.0.0.1:9 --key aiaas_x")
    assert "could not be reached" in str(raised.value) and "\n" not in str(raised.value)
    shell.run_line_magic("unload_ext", "aiaas")


def test_commands_use_the_notebooks_latest_connection(shell, monkeypatch):
    """`client = aiaas.connect("local")` then `%aiaas runs` lists that backend's runs, not the config's."""
    import aiaas

    monkeypatch.setenv("AIAAS_URL", "http://127.0.0.1:7")
    shell.run_line_magic("load_ext", "aiaas")
    client = aiaas.connect("http://127.0.0.1:9", api_key="aiaas_x", timeout=2)
    try:
        with pytest.raises(UsageError, match=r"127\.0\.0\.1:9\b"):
            shell.run_line_magic("aiaas", "runs")
    finally:
        client.close()
        shell.run_line_magic("unload_ext", "aiaas")
