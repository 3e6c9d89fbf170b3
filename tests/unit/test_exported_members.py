import aiaas
import aiaas_sdk


def test_public_names_are_exactly_what_we_mean_to_export():
    assert set(aiaas.__all__) == {
        "AiaasError", "AlertsPublic", "AsyncClient", "AsyncDataset", "AsyncDeployment", "AsyncRun", "AuthenticationError", "BackendUnavailable", "BadRequest",
        "Client", "ConfigError", "InvalidInput", "WaitTimeout", "Dataset", "Deployment", "DeploymentEvent", "DeploymentOverloaded", "DriftReport", "DeploymentStats", "IncompatibleEnvironment", "MetricPoint", "ModelVersion", "NotFound", "PayloadTooLarge", "QuotaExceeded", "RateLimited", "Run",
        "RunCancelled", "RunEvent", "RunFailed", "RunStatus", "ServerError", "__version__", "connect", "connect_async", "data_path",
        "load_ipython_extension", "unload_ipython_extension",
    }
    for name in aiaas.__all__:
        assert hasattr(aiaas, name), name
    assert set(aiaas_sdk.__all__) <= set(aiaas.__all__)


def test_every_error_is_an_aiaas_error():
    for name in aiaas.__all__:
        obj = getattr(aiaas, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, aiaas.AiaasError), name


def test_the_names_type_checkers_see_are_the_names_at_run_time():
    # aiaas_sdk loads its public names on first use; type checkers read the imports under
    # `if TYPE_CHECKING:`. Both views must name the same objects.
    import ast
    import importlib
    from pathlib import Path

    tree = ast.parse(Path(aiaas_sdk.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.unparse(node)
        module = importlib.import_module("." * node.level + (node.module or ""), "aiaas_sdk")
        for alias in node.names:
            seen[alias.asname or alias.name] = getattr(module, alias.name)
    assert set(seen) == set(aiaas_sdk.__all__)
    for name, obj in seen.items():
        assert getattr(aiaas_sdk, name) is obj, name
        assert getattr(aiaas, name) is obj, name


def test_dir_lists_every_public_name_before_it_is_loaded():
    import subprocess
    import sys

    code = ("import aiaas, aiaas_sdk; missing = set(aiaas.__all__) - set(dir(aiaas)); "
            "missing |= set(aiaas_sdk.__all__) - set(dir(aiaas_sdk)); print(sorted(missing))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
