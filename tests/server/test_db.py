"""The one database API behaves the same on SQLite and Postgres: dict rows, `?` placeholders,
transactions that commit or roll back, backend-neutral errors and spatial helpers."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import shapely
from shapely.geometry import LineString

from server_stub import accounts
from server_stub.db import (
    Database,
    DatabaseUnavailable,
    DatabaseURLError,
    NestedTransactionError,
    UniqueViolation,
    as_geojson_sql,
    geom_from_wkb,
    json_param,
    open_database,
    parse_json,
    parse_time,
    time_param,
    utcnow,
)
from server_stub.partitions import storage_mode

pytestmark = pytest.mark.anyio


async def test_rows_come_back_as_dicts_with_question_mark_placeholders(db: Database) -> None:
    rows = await db.fetch("SELECT ? AS a, ? AS b", (1, "x"))
    assert rows == [{"a": 1, "b": "x"}]
    assert await db.fetchone("SELECT 1 AS one WHERE 1 = ?", (2,)) is None
    assert await db.fetchval("SELECT ? || '%' AS pct", ("50",)) == "50%"


async def test_transaction_commits_at_exit_and_rolls_back_on_error(db: Database) -> None:
    kept, dropped = str(uuid.uuid4()), str(uuid.uuid4())
    async with db.transaction() as tx:
        assert await tx.execute("INSERT INTO customers (id, name, plan) VALUES (?, ?, ?)", (kept, "Kept", "pro")) == 1
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO customers (id, name, plan) VALUES (?, ?, ?)", (dropped, "Dropped", "pro"))
            assert await tx.fetchval("SELECT name FROM customers WHERE id = ?", (dropped,)) == "Dropped"
            raise RuntimeError("boom")
    assert await db.fetchval("SELECT name FROM customers WHERE id = ?", (kept,)) == "Kept"
    assert await db.fetchone("SELECT * FROM customers WHERE id = ?", (dropped,)) is None


async def test_savepoint_rolls_back_only_its_block(db: Database) -> None:
    outer, inner = str(uuid.uuid4()), str(uuid.uuid4())
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO customers (id, name) VALUES (?, ?)", (outer, "Outer"))
        with pytest.raises(UniqueViolation):
            async with tx.savepoint():
                await tx.execute("INSERT INTO customers (id, name) VALUES (?, ?)", (inner, "Inner"))
                await tx.execute("INSERT INTO customers (id, name) VALUES (?, ?)", (outer, "Again"))
    assert await db.fetchval("SELECT count(*) FROM customers WHERE id IN (?, ?)", (outer, inner)) == 1


async def test_execute_reports_rowcount_and_executemany_inserts_all(db: Database) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await db.executemany("INSERT INTO customers (id, name) VALUES (?, ?)", [(i, "Bulk") for i in ids])
    changed = await db.execute("UPDATE customers SET plan = ? WHERE id IN (?, ?, ?)", ("starter", *ids))
    assert changed == 3


async def test_unique_violation_is_backend_neutral(db: Database) -> None:
    tenant_id = str(uuid.uuid4())
    await db.execute("INSERT INTO customers (id, name) VALUES (?, ?)", (tenant_id, "One"))
    with pytest.raises(UniqueViolation):
        await db.execute("INSERT INTO customers (id, name) VALUES (?, ?)", (tenant_id, "Two"))


async def test_timestamps_json_and_booleans_round_trip(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Round trip")
    when = utcnow()
    key_id = str(uuid.uuid4())
    async with db.transaction(tenant.id) as tx:
        await tx.execute(
            "INSERT INTO api_keys (id, customer_id, name, prefix, key_hash, scopes, role, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, tenant.id, "k", "whk_abcd", uuid.uuid4().hex, json_param(["read"]), "field", time_param(db, when)),
        )
        row = await tx.fetchone("SELECT scopes, created_at FROM api_keys WHERE id = ?", (key_id,))
    assert row is not None
    assert parse_json(row["scopes"]) == ["read"]
    created = parse_time(row["created_at"])
    assert created is not None and abs((created - when).total_seconds()) < 0.001
    assert await db.fetchval("SELECT disabled FROM customers WHERE id = ?", (tenant.id,)) in (False, 0)


async def test_geometry_helpers_store_wkb_and_read_geojson(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Spatial")
    line = LineString([(5.0, 52.0), (5.1, 52.1)])
    async with db.transaction(tenant.id) as tx:
        await tx.execute(
            f"INSERT INTO routes (customer_id, id, name, geometry) VALUES (?, ?, ?, {geom_from_wkb(db)})",
            (tenant.id, "r1", "Route", shapely.to_wkb(line)),
        )
        geojson = await tx.fetchval(
            f"SELECT {as_geojson_sql(db, 'geometry')} FROM routes WHERE customer_id = ? AND id = ?", (tenant.id, "r1")
        )
    assert shapely.from_geojson(geojson).equals(line)


async def test_extensions_report_the_spatial_extension(db: Database) -> None:
    extensions = await db.extensions()
    if db.dialect == "postgres":
        assert extensions["postgis"] and extensions["postgis"].startswith("3.")
        # Enabled exactly when gps_positions became a hypertable (the partitioned half leaves it off).
        assert (extensions["timescaledb"] is not None) == (await storage_mode(db) == "timescale")
    else:
        assert extensions["spatialite"] and extensions["spatialite"][0].isdigit()


def test_sql_helpers_speak_each_dialect() -> None:
    assert geom_from_wkb("postgres") == "ST_GeomFromWKB(?, 4326)"
    assert geom_from_wkb("sqlite", ":g") == "GeomFromWKB(:g, 4326)"
    assert as_geojson_sql("postgres", "geometry") == "ST_AsGeoJSON(geometry)"
    assert as_geojson_sql("sqlite", "geometry") == "AsGeoJSON(geometry)"


async def test_unsupported_url_names_the_accepted_forms() -> None:
    with pytest.raises(DatabaseURLError, match=r"postgresql://.*sqlite:///") as caught:
        await open_database("mysql://root:hunter2@localhost/fleet")
    assert "hunter2" not in str(caught.value)


async def test_unreachable_postgres_fails_fast_with_the_address() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1:1/nowhere"):
        await open_database("postgresql://postgres@127.0.0.1:1/nowhere")


async def test_sqlite_url_creates_missing_parent_folders(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'a' / 'b' / 'server.sqlite'}")
    try:
        assert await db.fetchval("SELECT 1") == 1
        assert await db.fetchval("PRAGMA journal_mode") == "wal"
    finally:
        await db.close()
    assert (tmp_path / "a" / "b" / "server.sqlite").exists()


async def test_sqlite_refuses_direct_use_inside_its_own_transaction(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'server.sqlite'}")
    try:
        async with db.transaction(customer_id="ignored-on-sqlite") as tx:
            assert tx.customer_id == "ignored-on-sqlite"
            with pytest.raises(NestedTransactionError, match="use the Tx"):
                await db.fetch("SELECT 1")
        assert await db.fetchval("SELECT 2") == 2
    finally:
        await db.close()
