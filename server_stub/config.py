"""Server settings read once from the environment (DATABASE_URL, REDIS_URL, WEBHOST_SECRET_KEY, HOST, PORT).

The server is in production unless told otherwise: without `WEBHOST_ENV=development` a missing
`WEBHOST_SECRET_KEY` is an error, so a forgotten setting can never quietly sign tokens with a
key generated on one host (which the other instances would not share).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from server_stub.db.base import TIMESCALE_MODES, TimescaleMode
from sync.quota import WriteQuota

APP_NAME = "webhost-fleet"
SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_CHARS = 32
DEVELOPMENT, PRODUCTION = "development", "production"
ENVIRONMENTS = (DEVELOPMENT, PRODUCTION)


class ConfigError(ValueError):
    """The environment does not describe a usable server configuration."""


def data_dir() -> Path:
    """The server's folder under the platform data directory (embedded DB, generated secret)."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "server"


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'fleet-server.sqlite'}"


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a `sqlite:///path` URL, or None for other URLs and in-memory databases."""
    if not database_url.startswith("sqlite:///"):
        return None
    path = database_url.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


def _persisted_secret(folder: Path) -> str:
    """Read the development secret kept in `folder`, creating it on first use."""
    path = folder / SECRET_KEY_FILE
    folder.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting together must agree on one key, so only one may create it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = path.read_text().strip()
        if len(existing) < MIN_SECRET_KEY_CHARS:
            raise ConfigError(f"{path} holds an unusable secret key; delete it to generate a new one") from None
        return existing
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def environment(env: Mapping[str, str]) -> str:
    """WEBHOST_ENV: `production` (the default) or `development`; anything else is a ConfigError.

    Unknown names (`prod`, `staging`) are refused rather than guessed: read as development they
    would silently sign tokens with a key generated on this host alone."""
    raw = env.get("WEBHOST_ENV", "").strip().lower() or PRODUCTION
    if raw not in ENVIRONMENTS:
        raise ConfigError(f"WEBHOST_ENV must be {' or '.join(ENVIRONMENTS)}, got {raw!r}")
    return raw


def _secret_key(env: Mapping[str, str], database_url: str) -> str:
    mode = environment(env)
    explicit = env.get("WEBHOST_SECRET_KEY", "")
    if explicit:
        if len(explicit) < MIN_SECRET_KEY_CHARS:
            raise ConfigError(f"WEBHOST_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} characters")
        return explicit
    if mode != DEVELOPMENT:
        raise ConfigError("WEBHOST_SECRET_KEY is required outside development")
    # Development: keep the key beside the embedded DB (or in the data dir) so tokens survive restarts.
    db_file = sqlite_path(database_url)
    return _persisted_secret(db_file.parent if db_file is not None else data_dir())


def _previous_secret_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """WEBHOST_SECRET_KEY_PREVIOUS: comma-separated secrets a rotation retired (tokens only)."""
    keys = tuple(key.strip() for key in env.get("WEBHOST_SECRET_KEY_PREVIOUS", "").split(",") if key.strip())
    if any(len(key) < MIN_SECRET_KEY_CHARS for key in keys):
        raise ConfigError(f"each WEBHOST_SECRET_KEY_PREVIOUS entry must be at least {MIN_SECRET_KEY_CHARS} characters")
    return keys


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer between {low} and {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be an integer between {low} and {high}, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between {low:g} and {high:g}, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise ConfigError(f"{name} must be a number between {low:g} and {high:g}, got {raw!r}")
    return value


def timescale_mode(env: Mapping[str, str]) -> TimescaleMode:
    """WEBHOST_TIMESCALE: `auto` (default) uses a hypertable when TimescaleDB is there, `off` never does."""
    raw = env.get("WEBHOST_TIMESCALE", "").strip().lower() or "auto"
    for mode in TIMESCALE_MODES:
        if raw == mode:
            return mode
    raise ConfigError(f"WEBHOST_TIMESCALE must be one of {', '.join(TIMESCALE_MODES)}, got {raw!r}")


def parse_trusted_proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    """WEBHOST_TRUSTED_PROXIES: comma-separated addresses or CIDR networks whose X-Forwarded-For
    and X-Forwarded-Proto headers are believed. Default none: no caller can choose its address."""
    raw = env.get("WEBHOST_TRUSTED_PROXIES", "")
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(
                f"WEBHOST_TRUSTED_PROXIES must list IP addresses or networks (CIDR), got {item!r}"
            ) from None
    return tuple(dict.fromkeys(networks))


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment; build it with `Settings.from_env()`."""

    database_url: str
    secret_key: str
    environment: str = PRODUCTION  # WEBHOST_ENV
    # Secrets being rotated out: access tokens they signed still verify until they expire.
    previous_secret_keys: tuple[str, ...] = ()
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    max_message_bytes: int = 8 * 1024 * 1024
    room_idle_seconds: float = 300.0  # a room nobody has used this long is unloaded (its state is in the DB)
    timescale: TimescaleMode = "auto"
    trusted_proxies: tuple[str, ...] = ()  # networks, as ipaddress spells them
    # Failed sign-ins within login_window_seconds, counted per (account, address), per account
    # from any address (distributed guessing) and per address for any account (password spraying).
    login_max_failures: int = 5
    login_max_failures_per_account: int = 20
    login_max_failures_per_ip: int = 20
    login_window_seconds: float = 300.0
    # One tenant's sustained sync write rate over all its sockets (0 turns pacing off): beyond
    # it the tenant's sockets are read more slowly, so its flood cannot starve other tenants.
    tenant_updates_per_second: float = 500.0
    tenant_bytes_per_second: float = 4 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `env` (default: os.environ); raises ConfigError naming the bad variable."""
        env = os.environ if env is None else env
        database_url = env.get("DATABASE_URL", "") or default_database_url()
        return cls(
            database_url=database_url,
            secret_key=_secret_key(env, database_url),
            environment=environment(env),
            previous_secret_keys=_previous_secret_keys(env),
            redis_url=env.get("REDIS_URL") or None,
            host=env.get("HOST", "") or "127.0.0.1",
            port=_int(env, "PORT", 8000, 1, 65535),
            room_idle_seconds=_float(env, "WEBHOST_ROOM_IDLE_SECONDS", 300.0, 0.0, 7 * 24 * 3600.0),
            timescale=timescale_mode(env),
            trusted_proxies=parse_trusted_proxies(env),
            login_max_failures=_int(env, "WEBHOST_LOGIN_MAX_FAILURES", 5, 1, 10_000),
            login_max_failures_per_account=_int(env, "WEBHOST_LOGIN_MAX_FAILURES_PER_ACCOUNT", 20, 1, 100_000),
            login_max_failures_per_ip=_int(env, "WEBHOST_LOGIN_MAX_FAILURES_PER_IP", 20, 1, 100_000),
            login_window_seconds=_float(env, "WEBHOST_LOGIN_WINDOW_SECONDS", 300.0, 1.0, 7 * 24 * 3600.0),
            tenant_updates_per_second=_float(env, "WEBHOST_TENANT_UPDATES_PER_SECOND", 500.0, 0.0, 1e7),
            tenant_bytes_per_second=_float(env, "WEBHOST_TENANT_BYTES_PER_SECOND", 4 * 1024 * 1024, 0.0, 1e12),
        )

    def write_quota(self) -> WriteQuota | None:
        """A fresh quota for one tenant's room, or None when pacing is off."""
        if not self.tenant_updates_per_second or not self.tenant_bytes_per_second:
            return None
        return WriteQuota(self.tenant_updates_per_second, self.tenant_bytes_per_second)

    def __repr__(self) -> str:
        # Never let the secret reach logs or tracebacks.
        url = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", self.database_url)
        return f"Settings(database_url={url!r}, host={self.host!r}, port={self.port})"
