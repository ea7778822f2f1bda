"""Settings come from the environment; the development secret survives restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_stub.config import ConfigError, Settings, default_database_url


def test_defaults_use_the_embedded_store_under_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings.from_env({})
    assert settings.database_url == default_database_url()
    assert settings.database_url.startswith(f"sqlite:///{tmp_path}")
    assert settings.database_url.endswith("/server/fleet-server.sqlite")
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8000, None)
    assert (settings.access_token_ttl, settings.refresh_token_ttl) == (900, 30 * 24 * 3600)
    assert settings.max_message_bytes == 8 * 1024 * 1024


def test_environment_overrides_each_setting(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://u:pw@db/fleet",
        "REDIS_URL": "redis://cache:6379/0",
        "WEBHOST_SECRET_KEY": "k" * 40,
        "HOST": "0.0.0.0",
        "PORT": "9001",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://u:pw@db/fleet"
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.secret_key == "k" * 40
    assert (settings.host, settings.port) == ("0.0.0.0", 9001)


def test_development_secret_is_generated_once_next_to_the_embedded_db(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'srv' / 'db.sqlite'}"}
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
    settings = Settings.from_env({"DATABASE_URL": "postgresql://localhost/fleet"})
    assert (tmp_path / "webhost-fleet" / "server" / "secret_key").read_text().strip() == settings.secret_key


def test_production_without_secret_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WEBHOST_SECRET_KEY is required outside development"):
        Settings.from_env({"WEBHOST_ENV": "production", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"})
    assert not (tmp_path / "secret_key").exists()


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
