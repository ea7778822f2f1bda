"""The SpatiaLite schema steps of the core migrations (no RLS: the application enforces tenancy)."""

from __future__ import annotations

from server_stub.db.base import DatabaseError, Tx

# SQLite has no now() as unix seconds before 3.42's unixepoch('subsec'); this works everywhere.
NOW = "((julianday('now') - 2440587.5) * 86400.0)"


async def add_geometry(tx: Tx, table: str, column: str, geometry_type: str) -> None:
    """A SpatiaLite geometry column in 4326 with its R*Tree index; raises when SpatiaLite declines."""
    # AddGeometryColumn reports failure by returning 0, not by raising.
    added = await tx.fetchval("SELECT AddGeometryColumn(?, ?, 4326, ?, 'XY')", (table, column, geometry_type))
    indexed = await tx.fetchval("SELECT CreateSpatialIndex(?, ?)", (table, column))
    if added != 1 or indexed != 1:
        raise DatabaseError(f"SpatiaLite could not add {geometry_type} column {table}.{column}")


async def check_spatialite(tx: Tx) -> None:
    """SQLite has no extensions to create; just prove SpatiaLite is loaded."""
    if not await tx.fetchval("SELECT spatialite_version()"):
        raise DatabaseError("SpatiaLite is not loaded into the server database connection")


ACCOUNTS = f"""
    CREATE TABLE customers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        plan TEXT NOT NULL DEFAULT 'hobby' CHECK (plan IN ('hobby', 'starter', 'pro')),
        disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at REAL NOT NULL DEFAULT {NOW}
    );
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        customer_id TEXT REFERENCES customers (id),
        email TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('platform_admin', 'admin', 'dispatcher', 'field')),
        disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at REAL NOT NULL DEFAULT {NOW},
        CHECK ((role = 'platform_admin') = (customer_id IS NULL))
    );
    CREATE INDEX users_customer ON users (customer_id);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL DEFAULT '[]',
        role TEXT NOT NULL CHECK (role IN ('admin', 'dispatcher', 'field')),
        created_at REAL NOT NULL DEFAULT {NOW},
        last_used_at REAL,
        revoked_at REAL
    );
    CREATE INDEX api_keys_customer ON api_keys (customer_id);
    CREATE TABLE refresh_tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL DEFAULT {NOW},
        expires_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
"""

CRDT_LOG = f"""
    -- AUTOINCREMENT: a seq is never reused after compaction deletes rows, so watermarks stay valid.
    CREATE TABLE crdt_updates (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        user_id TEXT,
        payload BLOB NOT NULL,
        received_at REAL NOT NULL DEFAULT {NOW}
    );
    CREATE INDEX crdt_updates_customer_seq ON crdt_updates (customer_id, seq);
    CREATE TABLE crdt_snapshots (
        customer_id TEXT PRIMARY KEY REFERENCES customers (id),
        payload BLOB NOT NULL,
        upto_seq INTEGER NOT NULL,
        compacted_at REAL NOT NULL DEFAULT {NOW},
        folded_rows INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE projection_state (
        customer_id TEXT PRIMARY KEY REFERENCES customers (id),
        watermark INTEGER NOT NULL DEFAULT 0
    );
"""

_PROJECTED = (
    "created_at TEXT, updated_at TEXT, data TEXT NOT NULL DEFAULT '{}', projection_error TEXT, projected_at REAL"
)

# Spatial tables get an explicit fid INTEGER PRIMARY KEY so VACUUM never renumbers the rowids
# the R*Tree points at; (customer_id, id) stays unique so upserts use ON CONFLICT on both backends.
FLEET_TABLES = f"""
    CREATE TABLE vehicles (
        customer_id TEXT NOT NULL REFERENCES customers (id), id TEXT NOT NULL,
        name TEXT, plate TEXT, vin TEXT, device_id TEXT, driver_id TEXT, status TEXT,
        speed_limit_kph REAL, notes TEXT, {_PROJECTED},
        PRIMARY KEY (customer_id, id)
    );
    CREATE INDEX vehicles_device ON vehicles (customer_id, device_id);
    CREATE TABLE drivers (
        customer_id TEXT NOT NULL REFERENCES customers (id), id TEXT NOT NULL,
        name TEXT, phone TEXT, email TEXT, license_number TEXT, license_expiry TEXT, status TEXT,
        notes TEXT, {_PROJECTED},
        PRIMARY KEY (customer_id, id)
    );
    CREATE TABLE routes (
        fid INTEGER PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id), id TEXT NOT NULL,
        name TEXT, vehicle_id TEXT, stops TEXT, corridor_m REAL, planned_start TEXT,
        notes TEXT, {_PROJECTED},
        UNIQUE (customer_id, id)
    );
    CREATE INDEX routes_vehicle ON routes (customer_id, vehicle_id);
    CREATE TABLE geofences (
        fid INTEGER PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id), id TEXT NOT NULL,
        name TEXT, kind TEXT, speed_limit_kph REAL, active INTEGER, notes TEXT,
        radius_m REAL, {_PROJECTED},
        UNIQUE (customer_id, id)
    );
"""


async def fleet_tables(tx: Tx) -> None:
    await tx.execute_script(FLEET_TABLES)
    await add_geometry(tx, "routes", "geometry", "LINESTRING")
    await add_geometry(tx, "geofences", "geometry", "MULTIPOLYGON")
