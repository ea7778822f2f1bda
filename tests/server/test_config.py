"""Settings come from the environment; production is the default; the development secret survives restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_stub.config import ConfigError, Settings, default_database_url

from .conftest import run_cli


def test_defaults_use_the_embedded_store_under_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings.from_env({"WEBHOST_ENV": "development"})
    assert settings.environment == "development"
    assert settings.database_url == default_database_url()
    assert settings.database_url.startswith(f"sqlite:///{tmp_path}")
    assert settings.database_url.endswith("/server/fleet-server.sqlite")
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8000, None)
    assert (settings.access_token_ttl, settings.refresh_token_ttl) == (900, 30 * 24 * 3600)
    assert settings.max_message_bytes == 8 * 1024 * 1024
    assert settings.trusted_proxies == ()
    assert (settings.login_max_failures, settings.login_max_failures_per_account, settings.login_max_failures_per_ip,
            settings.login_window_seconds) == (5, 20, 20, 300.0)


def test_environment_overrides_each_setting(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://u:pw@db/fleet",
        "REDIS_URL": "redis://cache:6379/0",
        "WEBHOST_SECRET_KEY": "k" * 40,
        "HOST": "0.0.0.0",
        "PORT": "9001",
        "WEBHOST_TRUSTED_PROXIES": "10.0.0.7, 192.168.1.0/24,fd00::/8",
        "WEBHOST_LOGIN_MAX_FAILURES": "3",
        "WEBHOST_LOGIN_MAX_FAILURES_PER_ACCOUNT": "12",
        "WEBHOST_LOGIN_MAX_FAILURES_PER_IP": "40",
        "WEBHOST_LOGIN_WINDOW_SECONDS": "60",
    }
    settings = Settings.from_env(env)
    assert settings.environment == "production"
    assert settings.trusted_proxies == ("10.0.0.7/32", "192.168.1.0/24", "fd00::/8")
    assert (settings.login_max_failures, settings.login_max_failures_per_account, settings.login_max_failures_per_ip,
            settings.login_window_seconds) == (3, 12, 40, 60.0)
    assert settings.database_url == "postgresql://u:pw@db/fleet"
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.secret_key == "k" * 40
    assert (settings.host, settings.port) == ("0.0.0.0", 9001)


def test_development_secret_is_generated_once_next_to_the_embedded_db(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'srv' / 'db.sqlite'}", "WEBHOST_ENV": "development"}
    first = Settings.from_env(env)
    second = Settings.from_env(env)
    key_file = tmp_path / "srv" / "secret_key"
    assert first.secret_key == second.secret_key == key_file.read_text().strip()
    assert len(first.secret_key) >= 32
    assert key_file.stat().st_mode & 0o077 == 0


def test_development_secret_for_postgres_lives_in_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings.from_env({"DATABASE_URL": "postgresql://localhost/fleet", "WEBHOST_ENV": "Development "})
    assert (tmp_path / "webhost-fleet" / "server" / "secret_key").read_text().strip() == settings.secret_key


def test_production_without_secret_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WEBHOST_SECRET_KEY is required outside development"):
        Settings.from_env({"WEBHOST_ENV": "production", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("unset", [{}, {"WEBHOST_ENV": ""}])
def test_without_webhost_env_the_server_is_in_production_and_needs_a_secret(tmp_path: Path,
                                                                             unset: dict[str, str]) -> None:
    # Only development, said explicitly, may run on a secret generated on this one host.
    with pytest.raises(ConfigError, match="WEBHOST_SECRET_KEY is required outside development"):
        Settings.from_env({**unset, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    assert not (tmp_path / "secret_key").exists()
    settings = Settings.from_env({**unset, "WEBHOST_SECRET_KEY": "k" * 40, "DATABASE_URL": "postgresql://x/y"})
    assert (settings.environment, settings.secret_key) == ("production", "k" * 40)


@pytest.mark.parametrize("name", ["prod", "staging", "dev", "test", "production-eu"])
def test_unknown_webhost_env_is_a_config_error_even_with_a_secret(tmp_path: Path, name: str) -> None:
    for env in ({}, {"WEBHOST_SECRET_KEY": "k" * 40}):
        with pytest.raises(ConfigError, match=f"WEBHOST_ENV must be development or production, got '{name}'"):
            Settings.from_env({**env, "WEBHOST_ENV": name, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("proxies", ["10.0.0.300", "proxy.internal", "10.0.0.0/33"])
def test_a_bad_trusted_proxy_names_the_variable(proxies: str) -> None:
    with pytest.raises(ConfigError, match="WEBHOST_TRUSTED_PROXIES must list IP addresses or networks"):
        Settings.from_env({"WEBHOST_TRUSTED_PROXIES": proxies, "WEBHOST_SECRET_KEY": "k" * 40,
                           "DATABASE_URL": "postgresql://x/y"})


@pytest.mark.parametrize("port", ["http", "0", "70000"])
def test_bad_port_names_the_variable(port: str) -> None:
    with pytest.raises(ConfigError, match="PORT must be an integer"):
        Settings.from_env({"PORT": port, "WEBHOST_SECRET_KEY": "k" * 40, "DATABASE_URL": "postgresql://x/y"})


def test_short_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        Settings.from_env({"WEBHOST_SECRET_KEY": "short", "DATABASE_URL": "postgresql://x/y"})


def test_repr_hides_the_secret_and_database_password() -> None:
    settings = Settings(database_url="postgresql://fleet:hunter2@db/fleet", secret_key="s" * 40)
    assert "hunter2" not in repr(settings)
    assert "s" * 40 not in repr(settings)


@pytest.mark.parametrize(("env", "message"), [
    ({"WEBHOST_ENV": ""}, "WEBHOST_SECRET_KEY is required outside development"),
    ({"WEBHOST_ENV": "staging"}, "WEBHOST_ENV must be development or production, got 'staging'"),
])
def test_serve_refuses_to_start_unless_development_is_said_explicitly(tmp_path: Path, env: dict[str, str],
                                                                       message: str) -> None:
    result = run_cli("serve", "--port", "1", database_url=f"sqlite:///{tmp_path}/db.sqlite", tmp_path=tmp_path, **env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"webhost-server: error: {message}"
    assert not (tmp_path / "secret_key").exists() and not (tmp_path / "db.sqlite").exists()
