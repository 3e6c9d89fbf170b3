"""The SDK never sends a key in clear text to another machine, and verifies certificates."""

from __future__ import annotations

import socket

import pytest

import aiaas
from aiaas_sdk import _tls, config
from aiaas_sdk.wire_keys import parse_duration


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("AIAAS_CONFIG", str(tmp_path / "config.toml"))
    for var in ("AIAAS_URL", "AIAAS_API_KEY", "AIAAS_CA_BUNDLE", "AIAAS_ALLOW_INSECURE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: refusals must come before sending."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8765", "http://backend.example.com", "http://[2001:db8::1]:80"])
def test_a_key_over_plain_http_to_another_machine_is_refused_before_sending(url, no_network):
    for make in (aiaas.Client, aiaas.AsyncClient, aiaas.connect):
        with pytest.raises(aiaas.ConfigError, match="refusing to send the API key") as refused:
            make(url, "aiaas_secret")
        message = str(refused.value)
        assert "https://" in message and "allow_insecure=True" in message and "aiaas_secret" not in message
        assert refused.value.code == "insecure_transport"


def test_the_opt_in_and_the_environment(no_network, monkeypatch):
    with aiaas.Client("http://10.0.0.5:8765", "aiaas_secret", allow_insecure=True) as c:
        assert c.url == "http://10.0.0.5:8765"
    monkeypatch.setenv("AIAAS_ALLOW_INSECURE", "1")
    assert config.resolve("http://10.0.0.5", "k").allow_insecure is True
    # The argument beats the environment.
    with pytest.raises(aiaas.ConfigError):
        config.resolve("http://10.0.0.5", "k", allow_insecure=False)
    monkeypatch.setenv("AIAAS_ALLOW_INSECURE", "maybe")
    with pytest.raises(aiaas.ConfigError, match="AIAAS_ALLOW_INSECURE"):
        config.resolve("http://10.0.0.5", "k")


def test_the_config_file_cannot_opt_in(no_network, tmp_path):
    (tmp_path / "config.toml").write_text('url = "http://10.0.0.5:8765"\napi_key = "k"\nallow_insecure = true\n')
    with pytest.raises(aiaas.ConfigError, match="plain http://"):
        config.resolve()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://127.0.0.2:1", "http://localhost:8765",
                                 "http://[::1]:8765", "https://backend.example.com"])
def test_loopback_and_https_are_fine(url, no_network):
    assert config.resolve(url, "aiaas_secret").url == url


def test_without_a_key_nothing_is_refused(no_network):
    assert config.resolve("http://10.0.0.5:8765").api_key is None


def test_ca_bundle_order_and_bad_files(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text('ca_bundle = "/from/file.pem"\n')
    assert config.resolve().ca_bundle == "/from/file.pem"
    monkeypatch.setenv("AIAAS_CA_BUNDLE", "/from/env.pem")
    assert config.resolve().ca_bundle == "/from/env.pem"
    assert config.resolve(ca_bundle=tmp_path / "arg.pem").ca_bundle == str(tmp_path / "arg.pem")
    (tmp_path / "bad.pem").write_text("not a certificate")
    for bundle in (tmp_path / "missing.pem", tmp_path / "bad.pem"):
        with pytest.raises(aiaas.ConfigError, match="CA bundle"):
            aiaas.Client("https://backend.example.com", "k", ca_bundle=bundle)


def test_loopback_names():
    assert _tls.is_loopback("127.8.9.1") and _tls.is_loopback("[::1]") and _tls.is_loopback("LOCALHOST")
    assert not _tls.is_loopback("10.0.0.1") and not _tls.is_loopback("example.com")
    assert not _tls.is_loopback("127.0.0.1.example.com")


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90s", 90), ("1.5m", 90),
                                               ("2w", 14 * 86400), (45, 45.0)])
def test_key_lifetimes(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "soon", "-1d", "0s", "3y"])
def test_bad_key_lifetimes_name_the_forms(text):
    with pytest.raises(ValueError, match="like '30d'|positive"):
        parse_duration(text)
