"""Migrations are versioned, recorded, transactional and idempotent on both dialects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server_stub.db import Database, open_database
from server_stub.db.base import Params, Row
from server_stub.db.migrations import (
    MIGRATIONS,
    ExtensionMissing,
    Migration,
    MigrationError,
    applied,
    migrate,
    pending,
    register,
)
from server_stub.db.schema_pg import APP_ROLE, extensions_and_role
from server_stub.db.schema_positions import TIMESCALE_TENANT_VIEW
from server_stub.partitions import positions_relation, storage_mode

from .conftest import BACKENDS, throwaway_pg_database

pytestmark = pytest.mark.anyio

TENANT_TABLES = (
    "vehicles", "drivers", "routes", "geofences", "crdt_updates", "crdt_snapshots", "projection_state", "api_keys",
    "gps_positions", "geofence_events", "vehicle_state",
)  # fmt: skip


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    else:
        with throwaway_pg_database(request.param) as url:
            yield url


async def test_migrate_applies_everything_once_and_records_versions(fresh_url: str) -> None:
    db = await open_database(fresh_url)
    try:
        names = await migrate(db)
        assert names == [m.name for m in MIGRATIONS]
        assert await migrate(db) == []
        assert await pending(db) == []
        assert await applied(db) == [(m.version, m.name) for m in MIGRATIONS]
        applied_at = await db.fetchval("SELECT applied_at FROM schema_migrations WHERE version = 1")
        assert applied_at is not None
    finally:
        await db.close()
    reopened = await open_database(fresh_url)
    try:
        assert await migrate(reopened) == []
    finally:
        await reopened.close()


async def test_every_table_exists_with_customer_id_on_tenant_tables(db: Database) -> None:
    # On a hypertable the app role reaches fixes only through the tenant view.
    positions = positions_relation(await storage_mode(db))
    for table in TENANT_TABLES:
        relation = positions if table == "gps_positions" else table
        assert await db.fetch(f"SELECT customer_id FROM {relation} WHERE 1 = 0") == []
    for table in ("customers", "users", "refresh_tokens", "schema_migrations"):
        assert await db.fetch(f"SELECT * FROM {table} WHERE 1 = 0") == []


async def test_spatial_columns_are_registered_and_indexed(db: Database) -> None:
    if db.dialect == "postgres":
        # The daily partitions of gps_positions list the parent's point column too. geometry_columns
        # shows what the app role may read: on a hypertable that is the tenant view.
        rows = await db.fetch("SELECT f_table_name, type, srid FROM geometry_columns "
                              "WHERE f_table_name NOT LIKE 'gps_positions_p%' ORDER BY f_table_name")
        assert [(r["f_table_name"], r["type"], r["srid"]) for r in rows] == sorted([
            ("geofences", "MULTIPOLYGON", 4326),
            (positions_relation(await storage_mode(db)), "POINT", 4326),
            ("routes", "LINESTRING", 4326),
        ])
        indexes = await db.fetch("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING gist%'")
        assert {r["indexname"] for r in indexes} >= {"routes_geometry", "geofences_geometry"}
    else:
        rows = await db.fetch(
            "SELECT f_table_name, geometry_type, srid, spatial_index_enabled FROM geometry_columns"
            " ORDER BY f_table_name"
        )
        # SpatiaLite codes: 6 = MULTIPOLYGON, 2 = LINESTRING.
        assert [tuple(r.values()) for r in rows] == [("geofences", 6, 4326, 1), ("routes", 2, 4326, 1)]


@pytest.mark.postgres
async def test_row_level_security_is_forced_on_every_tenant_table(pg_url: str, anyio_backend: str) -> None:
    db = await open_database(pg_url)
    try:
        await migrate(db)
        hypertable = await storage_mode(db) == "timescale"
        # TimescaleDB refuses RLS on a compressed hypertable: there the app role has no privilege on
        # gps_positions at all and goes through a security-barrier view that checks the tenant.
        guarded = {table for table in TENANT_TABLES if not (hypertable and table == "gps_positions")}
        if hypertable:
            # INSERT only (a CHECK keeps it to the transaction's tenant); reads go through the view.
            privileges = await db.fetch(
                "SELECT privilege_type FROM information_schema.role_table_grants"
                " WHERE grantee = ? AND table_name = 'gps_positions'", (APP_ROLE,))
            assert [row["privilege_type"] for row in privileges] == ["INSERT"]
            options = await db.fetchval("SELECT reloptions::text FROM pg_class WHERE relname = ?",
                                        (TIMESCALE_TENANT_VIEW,))
            assert "security_barrier=true" in options and "check_option=cascaded" in options
        rows = await db.fetch(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname IN"
            " ('vehicles', 'drivers', 'routes', 'geofences', 'crdt_updates', 'crdt_snapshots',"
            " 'projection_state', 'api_keys', 'users', 'customers', 'gps_positions', 'geofence_events',"
            " 'vehicle_state')"
        )
        assert {r["relname"] for r in rows if r["relrowsecurity"] and r["relforcerowsecurity"]} == {
            *guarded,
            "users",
            "customers",
        }
        policies = await db.fetch("SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation'")
        # Each daily partition of gps_positions carries the policy too (it guards direct access).
        tables = {p["tablename"] for p in policies}
        assert {t for t in tables if not t.startswith("gps_positions_p")} == guarded
    finally:
        await db.close()


async def test_a_failing_migration_leaves_nothing_behind(fresh_url: str) -> None:
    db = await open_database(fresh_url)
    broken = Migration(
        99,
        "broken",
        {"postgres": "CREATE TABLE half (a int); SELECT nope", "sqlite": "CREATE TABLE half (a int); SELECT nope"},
    )
    try:
        await migrate(db)
        with pytest.raises(Exception, match="nope"):
            await migrate(db, [*MIGRATIONS, broken])
        assert 99 not in {version for version, _ in await applied(db)}
        with pytest.raises(Exception, match="half"):
            await db.fetch("SELECT * FROM half")
    finally:
        await db.close()


async def test_later_migrations_are_added_as_version_name_and_steps(db: Database) -> None:
    async def create_probe(tx: Any) -> None:
        await tx.execute("CREATE TABLE probe (customer_id text NOT NULL)")

    extra = Migration(100, "probe", {"postgres": create_probe, "sqlite": "CREATE TABLE probe (customer_id TEXT)"})
    assert await migrate(db, [*MIGRATIONS, extra]) == ["probe"]
    assert await migrate(db, [*MIGRATIONS, extra]) == []
    assert (100, "probe") in await applied(db)


def test_duplicate_versions_are_refused() -> None:
    with pytest.raises(MigrationError, match="duplicate migration versions"):
        register(Migration(1, "again", {}))


async def test_a_migration_without_a_step_for_this_dialect_is_an_error(db: Database) -> None:
    lonely = Migration(200, "elsewhere", {"postgres" if db.dialect == "sqlite" else "sqlite": "SELECT 1"})
    with pytest.raises(MigrationError, match=f"has no {db.dialect} step"):
        await migrate(db, [*MIGRATIONS, lonely])


class _NoPostgis:
    """A Tx stand-in for a Postgres server whose pg_available_extensions lacks PostGIS."""

    dialect = "postgres"

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        assert "pg_available_extensions" in sql
        return []


async def test_missing_postgis_stops_migration_with_install_advice() -> None:
    with pytest.raises(ExtensionMissing, match=r"PostGIS is not installed.*postgis"):
        await extensions_and_role(_NoPostgis())  # type: ignore[arg-type]
