"""Fixtures for the server tests: a migrated database on SQLite (fresh file per test) and on
Postgres (a throw-away database per test module), plus settings and a subprocess CLI runner."""

from __future__ import annotations

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


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """A new, empty Postgres database for the duration of the block; dropped (forcibly) afterwards."""
    name = f"webhost_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"Postgres not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with throwaway_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server' / 'fleet-server.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url


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
    env.update(DATABASE_URL=database_url, XDG_DATA_HOME=str(tmp_path / "xdg"), **extra_env)
    return subprocess.run(
        [*command, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
