"""`webhost-server` end to end in subprocesses: migrations, accounts, extensions, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from server_stub import cli
from server_stub.db.base import Params
from server_stub.db.postgres import PostgresDatabase

from .conftest import run_cli, throwaway_pg_database, timescale_missing, unique_email


def _no_traceback(result: object) -> None:
    stderr = getattr(result, "stderr", "")
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_accounts_are_created_from_the_command_line(database_url: str, tmp_path: Path) -> None:
    first = run_cli("migrate", database_url=database_url, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli("migrate", database_url=database_url, tmp_path=tmp_path)
    assert (again.returncode, again.stdout.strip()) == (0, "database is up to date")

    tenant = run_cli("create-tenant", "Acme Haulage", "--plan", "pro", database_url=database_url, tmp_path=tmp_path)
    assert tenant.returncode == 0, tenant.stderr
    tenant_id = tenant.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", tenant_id)

    email = unique_email("cli")
    user = run_cli(
        "create-user", email, "--role", "admin", "--tenant", tenant_id,
        database_url=database_url, tmp_path=tmp_path, WEBHOST_PASSWORD="from the env",
    )  # fmt: skip
    assert user.returncode == 0, user.stderr

    duplicate = run_cli(
        "create-user", email.upper(), "--role", "field", "--tenant", tenant_id, "--password", "long enough",
        database_url=database_url, tmp_path=tmp_path,
    )  # fmt: skip
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == f"webhost-server: error: a user with email {email} already exists"

    key = run_cli(
        "create-api-key", "--tenant", tenant_id, "--name", "gateway", "--scopes", "read,write",
        database_url=database_url, tmp_path=tmp_path,
    )  # fmt: skip
    assert key.returncode == 0, key.stderr
    assert re.fullmatch(r"whk_[A-Za-z0-9_-]{43}", key.stdout.strip())
    assert "will not be shown again" in key.stderr


def test_account_errors_are_one_clear_line(database_url: str, tmp_path: Path) -> None:
    assert run_cli("migrate", database_url=database_url, tmp_path=tmp_path).returncode == 0
    cases = {
        ("create-user", unique_email(), "--role", "admin", "--tenant", "nope", "--password", "long enough"): (
            "tenant nope not found"
        ),
        ("create-user", unique_email(), "--role", "admin", "--tenant", "nope", "--password", "short"): (
            "at least 8 characters"
        ),
        ("create-user", unique_email(), "--role", "field"): "no password given",
        ("create-api-key", "--tenant", "nope", "--name", "k"): "tenant nope not found",
    }
    for args, message in cases.items():
        result = run_cli(*args, database_url=database_url, tmp_path=tmp_path)
        assert result.returncode in (1, 2), result
        assert message in result.stderr
        _no_traceback(result)


def test_verify_extensions_reports_each_extension(database_url: str, tmp_path: Path) -> None:
    assert run_cli("migrate", database_url=database_url, tmp_path=tmp_path).returncode == 0
    result = run_cli("verify-extensions", database_url=database_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    if database_url.startswith("postgresql://"):
        assert re.fullmatch(r"postgis: enabled \(3\.\d+\.\d+\)", lines[0])
        if timescale_missing():
            assert lines[1].startswith("timescaledb: not ")
            assert lines[2] == "positions: native daily partitions"
        elif _storage_setting(database_url) == "off":  # the partitioned half: installed, left off
            assert re.fullmatch(r"timescaledb: installed \(2\.\d+\.\d+\), not enabled in this database yet", lines[1])
            assert lines[2] == "positions: native daily partitions"
        else:
            assert re.fullmatch(r"timescaledb: enabled \(2\.\d+\.\d+\)", lines[1])
            assert lines[2].startswith("positions: a TimescaleDB hypertable")
    else:
        assert re.fullmatch(r"spatialite: present \(\d+\.\d+\.\d+\)", lines[0])


def _storage_setting(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('webhost.timescale', true)").fetchone()
    return str(row[0] if row and row[0] else "auto")


@pytest.mark.postgres
@pytest.mark.parametrize("env, plan", [({}, "will enable timescaledb and create a hypertable"),
                                       ({"WEBHOST_TIMESCALE": "off"}, "will use native daily partitions")],
                         ids=["auto", "off"])
def test_verify_extensions_on_a_fresh_database_says_what_migrate_will_do(
        tmp_path: Path, env: dict[str, str], plan: str) -> None:
    if reason := timescale_missing():
        pytest.skip(reason)
    with throwaway_pg_database() as url:
        result = run_cli("verify-extensions", database_url=url, tmp_path=tmp_path, **env)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert re.fullmatch(r"postgis: installed \(3\.\d+\.\d+\), not enabled yet — .* migrate` enables it", lines[0])
        assert re.fullmatch(r"timescaledb: installed \(2\.\d+\.\d+\), not enabled in this database yet", lines[1])
        assert plan in lines[2]
        # ... and migrate does what it said.
        assert run_cli("migrate", database_url=url, tmp_path=tmp_path, **env).returncode == 0
        after = run_cli("verify-extensions", database_url=url, tmp_path=tmp_path, **env).stdout
        assert ("hypertable" in after) == (env == {}), after


def test_a_bad_timescale_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_cli("migrate", database_url=f"sqlite:///{tmp_path}/x.sqlite", tmp_path=tmp_path,
                     WEBHOST_TIMESCALE="maybe")
    assert result.returncode == 2
    assert "WEBHOST_TIMESCALE must be one of auto, off, got 'maybe'" in result.stderr


def test_unmigrated_database_is_reported_with_the_fix(tmp_path: Path) -> None:
    result = run_cli("create-tenant", "Acme", database_url=f"sqlite:///{tmp_path}/new.sqlite", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "run `webhost-server migrate` first" in result.stderr
    _no_traceback(result)


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@localhost/fleet", "sqlite://relative.db", "nonsense"], ids=["mysql", "two", "bare"]
)
def test_bad_database_url_is_one_line_without_traceback(url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", database_url=url, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("webhost-server: error: unsupported DATABASE_URL")
    assert "hunter2" not in result.stderr
    _no_traceback(result)


def test_database_url_option_overrides_the_environment(tmp_path: Path) -> None:
    target = tmp_path / "chosen.sqlite"
    result = run_cli(
        "migrate", "--database-url", f"sqlite:///{target}", database_url="mysql://ignored", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert target.exists()


@pytest.mark.postgres
def test_unreachable_postgres_is_one_line(tmp_path: Path) -> None:
    result = run_cli("migrate", database_url="postgresql://postgres@127.0.0.1:1/fleet", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "cannot connect to postgresql://postgres@127.0.0.1:1/fleet" in result.stderr
    _no_traceback(result)


def test_every_command_has_help(tmp_path: Path) -> None:
    for command in cli.SUBCOMMANDS:
        result = run_cli(command, "--help", database_url="sqlite:///unused", tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "--database-url" in result.stdout
        assert cli.SUBCOMMANDS[command] in result.stdout


class _FakePostgres(PostgresDatabase):
    """Answers extension queries like a Postgres server without PostGIS or TimescaleDB."""

    def __init__(self) -> None:
        pass

    async def extensions(self) -> dict[str, str | None]:
        return {"postgis": None, "timescaledb": None}

    async def available_extensions(self) -> dict[str, str | None]:
        return {"postgis": None, "timescaledb": None}

    async def timescale_preloaded(self) -> bool:
        return False

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        assert "to_regclass('public.gps_positions')" in sql
        return False  # not migrated


@pytest.mark.anyio
async def test_missing_postgis_fails_verification(anyio_backend: str) -> None:
    lines, code = await cli._extension_lines(_FakePostgres())
    assert code == 1
    assert lines[0].startswith("postgis: missing — install PostGIS")
    assert lines[1] == "timescaledb: not installed on this server"
    assert lines[2] == "positions: `webhost-server migrate` will use native daily partitions"


def test_serve_with_a_bad_database_url_fails_before_listening(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "1", database_url="mysql://nope", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "unsupported DATABASE_URL" in result.stderr
    _no_traceback(result)


def test_serve_in_production_without_a_secret_is_refused(tmp_path: Path) -> None:
    result = run_cli(
        "serve", database_url=f"sqlite:///{tmp_path}/db.sqlite", tmp_path=tmp_path, WEBHOST_ENV="production"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "webhost-server: error: WEBHOST_SECRET_KEY is required outside development"
