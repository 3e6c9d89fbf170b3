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
