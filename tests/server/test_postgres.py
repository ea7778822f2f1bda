"""Postgres specifics: the pool acts as the app role, row-level security isolates tenants, COPY loads rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from server_stub import accounts
from server_stub.db import PermissionDenied
from server_stub.db.migrations import migrate
from server_stub.db.postgres import PostgresDatabase, to_pyformat

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
async def pg(pg_url: str, anyio_backend: str) -> AsyncIterator[PostgresDatabase]:
    db = await PostgresDatabase.open(pg_url)
    try:
        await migrate(db)
        yield db
    finally:
        await db.close()


async def _vehicle(tx_db: PostgresDatabase, tenant_id: str, owner_id: str) -> str:
    vehicle_id = str(uuid.uuid4())
    async with tx_db.transaction(tenant_id) as tx:
        await tx.execute(
            "INSERT INTO vehicles (customer_id, id, name) VALUES (?, ?, ?)", (owner_id, vehicle_id, "Truck")
        )
    return vehicle_id


def test_placeholders_become_pyformat_and_percent_signs_are_escaped() -> None:
    assert to_pyformat("SELECT ? WHERE x LIKE 'a%'") == "SELECT %s WHERE x LIKE 'a%%'"


async def test_pooled_connections_act_as_the_app_role(pg: PostgresDatabase) -> None:
    assert await pg.fetchval("SELECT current_user") == "webhost_app"
    async with pg.transaction() as tx:
        assert await tx.fetchval("SELECT current_user") == "webhost_app"


async def test_tenant_cannot_see_rows_of_another_tenant(pg: PostgresDatabase) -> None:
    a = await accounts.create_tenant(pg, "A")
    b = await accounts.create_tenant(pg, "B")
    b_vehicle = await _vehicle(pg, b.id, b.id)
    async with pg.transaction(a.id) as tx:
        assert await tx.fetch("SELECT * FROM vehicles WHERE id = ?", (b_vehicle,)) == []
        assert await tx.fetch("SELECT * FROM vehicles WHERE customer_id = ?", (b.id,)) == []
    async with pg.transaction(b.id) as tx:
        assert await tx.fetchval("SELECT name FROM vehicles WHERE id = ?", (b_vehicle,)) == "Truck"


async def test_tenant_cannot_write_rows_for_another_tenant(pg: PostgresDatabase) -> None:
    a = await accounts.create_tenant(pg, "A")
    b = await accounts.create_tenant(pg, "B")
    with pytest.raises(PermissionDenied, match="row-level security"):
        await _vehicle(pg, a.id, b.id)
    b_vehicle = await _vehicle(pg, b.id, b.id)
    async with pg.transaction(a.id) as tx:
        assert await tx.execute("UPDATE vehicles SET name = 'stolen' WHERE id = ?", (b_vehicle,)) == 0
        assert await tx.execute("DELETE FROM vehicles WHERE id = ?", (b_vehicle,)) == 0


async def test_fleet_tables_are_invisible_without_a_tenant(pg: PostgresDatabase) -> None:
    tenant = await accounts.create_tenant(pg, "Fail closed")
    vehicle_id = await _vehicle(pg, tenant.id, tenant.id)
    assert await pg.fetch("SELECT * FROM vehicles WHERE id = ?", (vehicle_id,)) == []
    with pytest.raises(PermissionDenied):
        await pg.execute("INSERT INTO vehicles (customer_id, id) VALUES (?, ?)", (tenant.id, str(uuid.uuid4())))


async def test_users_and_keys_of_other_tenants_are_hidden_inside_a_tenant(pg: PostgresDatabase) -> None:
    a = await accounts.create_tenant(pg, "A")
    b = await accounts.create_tenant(pg, "B")
    b_user = await accounts.create_user(pg, f"{uuid.uuid4().hex}@b.example", "password-b", "admin", b.id)
    b_key, secret = await accounts.create_api_key(pg, b.id, "b key", ["read"])
    async with pg.transaction(a.id) as tx:
        assert await tx.fetch("SELECT * FROM users WHERE id = ?", (b_user.id,)) == []
        assert await tx.fetch("SELECT * FROM api_keys WHERE id = ?", (b_key.id,)) == []
        assert await tx.fetch("SELECT * FROM customers WHERE id = ?", (b.id,)) == []
    # The system context (no tenant) is where logins and key lookups happen.
    assert (await accounts.find_api_key(pg, secret)) == b_key
    assert (await accounts.get_user(pg, b_user.id)).email == b_user.email
    # ...but it may only read keys, never change them.
    assert await pg.execute("UPDATE api_keys SET name = 'x' WHERE id = ?", (b_key.id,)) == 0
    with pytest.raises(PermissionDenied):
        await pg.execute(
            "INSERT INTO api_keys (id, customer_id, name, prefix, key_hash, role) VALUES (?, ?, ?, ?, ?, ?)",
            (str(uuid.uuid4()), b.id, "sneaky", "whk_xxxx", uuid.uuid4().hex, "admin"),
        )


async def test_copy_rows_loads_through_a_staging_table_into_a_tenant_table(pg: PostgresDatabase) -> None:
    tenant = await accounts.create_tenant(pg, "Bulk")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    async with pg.transaction(tenant.id) as tx:
        await tx.execute("CREATE TEMP TABLE staging (customer_id text, id text, name text) ON COMMIT DROP")
        copied = await tx.copy_rows("staging", ["customer_id", "id", "name"], [(tenant.id, i, "Bulk") for i in ids])
        await tx.execute("INSERT INTO vehicles (customer_id, id, name) SELECT customer_id, id, name FROM staging")
    assert copied == 3
    async with pg.transaction(tenant.id) as tx:
        assert await tx.fetchval("SELECT count(*) FROM vehicles WHERE customer_id = ?", (tenant.id,)) == 3


async def test_copy_rows_on_the_database_uses_its_own_transaction(pg: PostgresDatabase) -> None:
    async with pg.transaction() as tx:
        await tx.execute("SET LOCAL ROLE NONE")  # DDL as the owner, like a migration
        await tx.execute("CREATE TABLE copy_probe (a int, b text)")
    assert await pg.copy_rows("copy_probe", ["a", "b"], [(1, "x"), (2, None)]) == 2
    assert await pg.fetch("SELECT a, b FROM copy_probe ORDER BY a") == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
