"""Fixtures for the server tests: a migrated database on SQLite (fresh file per test) and on
Postgres (a throw-away database per test module), plus settings and a subprocess CLI runner."""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from server_stub.config import Settings
from server_stub.db import Database, open_database
from server_stub.db.migrations import migrate

PG_ADMIN_URL = os.environ.get("WEBHOST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "x" * 40


# How gps_positions is stored on Postgres: every Postgres test runs in both modes where the
# server offers TimescaleDB; the timescale half skips, with the reason, where it does not.
PG_STORAGE_MODES = ("timescale", "partitioned")
PG_PARAMS = [pytest.param(mode, marks=pytest.mark.postgres) for mode in PG_STORAGE_MODES]
# For a fixture over every backend: `@pytest.fixture(params=BACKENDS)` then `backend_url(request)`.
BACKENDS = ["sqlite", *PG_PARAMS]


@functools.cache
def timescale_missing() -> str | None:
    """Why TimescaleDB cannot be used on the test server, or None when it can."""
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            offered = admin.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            preload = admin.execute("SHOW shared_preload_libraries").fetchone()
    except psycopg.OperationalError as exc:
        return f"Postgres not reachable at {PG_ADMIN_URL}: {exc}"
    if offered is None:
        return "TimescaleDB is not installed on this PostgreSQL server (bootstrap installs ../shared/timescaledb)"
    if preload is None or "timescaledb" not in str(preload[0]):
        return "TimescaleDB is installed but not in shared_preload_libraries"
    return None


@contextmanager
def throwaway_pg_database(storage: str | None = None) -> Iterator[str]:
    """A new, empty Postgres database for the duration of the block; dropped (forcibly) afterwards.

    `storage` pins how gps_positions will be stored there: "timescale" (skips when the server lacks
    it), "partitioned" (the database setting webhost.timescale=off, which every connection sees),
    or None for whatever the server offers.
    """
    if storage == "timescale" and (reason := timescale_missing()):
        pytest.skip(reason)
    name = f"webhost_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"Postgres not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        if storage == "partitioned":
            admin.execute(f"ALTER DATABASE \"{name}\" SET webhost.timescale = 'off'")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pg_url_timescale() -> Iterator[str]:
    with throwaway_pg_database("timescale") as url:
        yield url


@pytest.fixture(scope="module")
def pg_url_partitioned() -> Iterator[str]:
    with throwaway_pg_database("partitioned") as url:
        yield url


@pytest.fixture(scope="module", params=PG_PARAMS)
def pg_url(request: pytest.FixtureRequest) -> str:
    """The module's Postgres database, once per storage mode."""
    url: str = request.getfixturevalue(f"pg_url_{request.param}")
    return url


def backend_url(request: pytest.FixtureRequest, folder: Path) -> str:
    """The URL for a BACKENDS parameter: a fresh SQLite file in `folder`, or the module's Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'fleet-server.sqlite'}"
    url: str = request.getfixturevalue(f"pg_url_{request.param}")
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request, tmp_path / "server")


@pytest.fixture
async def db(database_url: str, anyio_backend: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    try:
        await migrate(database)
        yield database
    finally:
        await database.close()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, secret_key=SECRET)


def unique_email(label: str = "user") -> str:
    return f"{label}-{secrets.token_hex(4)}@example.com"


def run_cli(*args: str, database_url: str, tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run `webhost-server` in a subprocess with DATABASE_URL set and a private data folder."""
    script = Path(sys.executable).parent / "webhost-server"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "server_stub.cli"]
    env = {key: value for key, value in os.environ.items() if key not in ("WEBHOST_PASSWORD", "WEBHOST_SECRET_KEY")}
    # Development mode said explicitly (the server is in production otherwise); extra_env may override.
    env.update({"DATABASE_URL": database_url, "XDG_DATA_HOME": str(tmp_path / "xdg"), "WEBHOST_ENV": "development",
                **extra_env})
    return subprocess.run(
        [*command, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
