import pytest

from aiaas_sdk import config


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("AIAAS_CONFIG", str(tmp_path / "config.toml"))
    for var in ("AIAAS_URL", "AIAAS_API_KEY", "AIAAS_TIMEOUT", "AIAAS_CA_BUNDLE", "AIAAS_ALLOW_INSECURE"):
        monkeypatch.delenv(var, raising=False)


def test_argument_beats_environment_beats_file_beats_default(monkeypatch):
    assert config.resolve() == config.Settings(config.DEFAULT_URL, None, config.DEFAULT_TIMEOUT)
    config.write_config({"url": "https://file:1", "api_key": "file-key"})
    assert config.resolve() == config.Settings("https://file:1", "file-key", 30.0)
    monkeypatch.setenv("AIAAS_URL", "https://env:2/")
    monkeypatch.setenv("AIAAS_API_KEY", "env-key")
    monkeypatch.setenv("AIAAS_TIMEOUT", "5")
    assert config.resolve() == config.Settings("https://env:2", "env-key", 5.0)
    assert config.resolve("https://arg:3", "arg-key", 7) == config.Settings("https://arg:3", "arg-key", 7.0)


def test_bad_values_name_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("AIAAS_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="AIAAS_TIMEOUT"):
        config.resolve()
    monkeypatch.delenv("AIAAS_TIMEOUT")
    with pytest.raises(ValueError, match="http://"):
        config.resolve("ftp://x")
    (tmp_path / "config.toml").write_text("url = [unclosed")
    with pytest.raises(ValueError, match="config.toml is not valid TOML"):
        config.resolve()


def test_written_config_keeps_other_keys_and_is_private(tmp_path):
    config.write_config({"url": "http://a:1", "api_key": "k"})
    config.write_config({"url": "http://b:2"})
    assert config.read_config() == {"url": "http://b:2", "api_key": "k"}
    assert (tmp_path / "config.toml").stat().st_mode & 0o777 == 0o600
