"""Schema of the position time series: `gps_positions`, `geofence_events` and `vehicle_state`.

`gps_positions` is a TimescaleDB hypertable when the extension is there, a natively range-partitioned
table (one partition per UTC day) on plain Postgres, and a plain table in SQLite. See docs/positions.md.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from server_stub.db.base import Tx, utcnow
from server_stub.db.schema_pg import APP_ROLE, TENANT, tenant_rls_sql

log = logging.getLogger(__name__)

# TimescaleDB: chunks older than this are compressed (per tenant and vehicle, newest first).
COMPRESS_AFTER_DAYS = 7
# The view the server reaches the hypertable through when TimescaleDB is in use (see below).
TIMESCALE_TENANT_VIEW = "gps_positions_tenant"

# No foreign key to customers: on the hot path it would cost a lookup and a row lock per fix,
# and hypertable chunks and dropped partitions make it more trouble than it is worth. The
# tenant comes from the authenticated principal and RLS checks it on every insert.
_POSITIONS_COLUMNS = """
    customer_id text NOT NULL,
    vehicle_id text NOT NULL,
    device_id text,
    fix_time timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    lat double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    speed_kph real,
    course real,
    altitude real,
    accuracy real,
    attributes jsonb,
    geom geometry(Point, 4326) NOT NULL,
    -- Re-sent fixes are harmless: ingest inserts ON CONFLICT DO NOTHING against this key.
    CONSTRAINT gps_positions_pkey PRIMARY KEY (customer_id, vehicle_id, fix_time)
"""

_EVENTS_AND_STATE_PG = f"""
    CREATE TABLE geofence_events (
        id bigserial PRIMARY KEY,
        customer_id text NOT NULL REFERENCES customers (id),
        vehicle_id text NOT NULL,
        kind text NOT NULL,
        event_time timestamptz NOT NULL,
        geofence_id text,
        lon double precision,
        lat double precision,
        speed_kph real,
        attributes jsonb,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    -- The same event computed twice (a re-sent batch, two instances) is stored once.
    CREATE UNIQUE INDEX geofence_events_key
        ON geofence_events (customer_id, vehicle_id, kind, event_time, coalesce(geofence_id, ''));
    CREATE INDEX geofence_events_time ON geofence_events (customer_id, event_time);
    {tenant_rls_sql("geofence_events")}

    -- Newest fix per vehicle (for the map) and the event detector's state, so enter/exit and
    -- overspeed carry on correctly across requests, restarts and server instances.
    CREATE TABLE vehicle_state (
        customer_id text NOT NULL REFERENCES customers (id),
        vehicle_id text NOT NULL,
        device_id text,
        fix_time timestamptz,
        received_at timestamptz,
        lat double precision,
        lon double precision,
        speed_kph real,
        course real,
        altitude real,
        accuracy real,
        attributes jsonb,
        detector jsonb,
        updated_at timestamptz,
        PRIMARY KEY (customer_id, vehicle_id)
    );
    {tenant_rls_sql("vehicle_state")}

    -- The OsmAnd protocol has no token: the device id is the credential and names the tenant.
    -- Outside any tenant, a vehicle row is visible only to a lookup that already knows its device
    -- id (app.device_lookup), so the system context cannot list vehicles.
    CREATE INDEX vehicles_device_lookup ON vehicles (device_id);
    CREATE POLICY device_lookup ON vehicles FOR SELECT
        USING (device_id = nullif(current_setting('app.device_lookup', true), ''));
"""


async def timescale_wanted(tx: Tx) -> bool:
    """False when the operator turned TimescaleDB off: WEBHOST_TIMESCALE=off on the server, or
    `ALTER DATABASE … SET webhost.timescale = 'off'` for everything that connects to that database."""
    if tx.timescale == "off":
        return False
    setting = await tx.fetchval("SELECT current_setting('webhost.timescale', true)")
    return str(setting or "auto").strip().lower() != "off"


async def _timescale_enabled(tx: Tx) -> bool:
    """TimescaleDB is in use when it is installed in this database (creating it when the server has it),
    unless the operator turned it off (see timescale_wanted)."""
    if not await timescale_wanted(tx):
        return False
    if await tx.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        return True
    if not await tx.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"):
        return False
    try:
        async with tx.savepoint():
            await tx.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except Exception as exc:  # listed but not loadable (shared_preload_libraries): native partitioning
        log.warning("timescaledb is listed but could not be enabled (%s); using native partitioning", exc)
        return False
    return True


async def _app_role_exists(tx: Tx) -> bool:
    return bool(await tx.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ?", (APP_ROLE,)))


async def _timescale_positions(tx: Tx) -> None:
    from server_stub.partitions import MAX_RETENTION_DAYS  # partitions imports this package's schema helpers

    await tx.execute_script(
        f"""
        CREATE TABLE gps_positions ({_POSITIONS_COLUMNS});
        SELECT create_hypertable('gps_positions', 'fix_time', chunk_time_interval => INTERVAL '1 day');
        ALTER TABLE gps_positions SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'customer_id, vehicle_id',
            timescaledb.compress_orderby = 'fix_time DESC'
        );
        SELECT add_compression_policy('gps_positions', INTERVAL '{COMPRESS_AFTER_DAYS} days');
        -- Chunks are dropped whole once older than the longest plan retention;
        -- shorter plans are cut off at query time.
        SELECT add_retention_policy('gps_positions', INTERVAL '{MAX_RETENTION_DAYS} days');

        -- TimescaleDB refuses row-level security on compressed hypertables. Tenant isolation
        -- stays in the database anyway: the app role has no privilege on the hypertable and
        -- reaches it only through this security-barrier view, which shows and accepts only the
        -- rows of the transaction's tenant (the same test the RLS policies make).
        CREATE VIEW {TIMESCALE_TENANT_VIEW} WITH (security_barrier) AS
            SELECT * FROM gps_positions WHERE customer_id = {TENANT}
            WITH CASCADED CHECK OPTION;
        """
    )
    if await _app_role_exists(tx):
        await tx.execute_script(
            f"REVOKE ALL ON gps_positions FROM {APP_ROLE};"
            f"GRANT SELECT, INSERT ON {TIMESCALE_TENANT_VIEW} TO {APP_ROLE};"
        )


async def _partitioned_positions(tx: Tx) -> None:
    from server_stub import partitions  # partitions imports this package's schema helpers

    await tx.execute_script(
        f"""
        CREATE TABLE gps_positions ({_POSITIONS_COLUMNS}) PARTITION BY RANGE (fix_time);
        {tenant_rls_sql("gps_positions")}
        """
    )
    # Yesterday to a week ahead exist from the start; the server's maintenance keeps it that way.
    today = partitions.day_of(utcnow())
    for offset in range(-1, partitions.DAYS_AHEAD + 1):
        await partitions.create_partition(tx, today + timedelta(days=offset))


async def hypertable_direct_writes(tx: Tx) -> None:
    """Migration 7: on a hypertable, the app role COPYs fixes straight in (half the work of
    staging them and INSERT … SELECT through the tenant view, and TimescaleDB batches COPY into
    chunks). Reads still go through the view only: the role gets INSERT, never SELECT, and a
    CHECK stands in for RLS's WITH CHECK, so a row for another tenant than the transaction's is
    refused by the database itself. The owner (migrations, compression jobs) is not bound by it."""
    from server_stub.partitions import storage_mode  # partitions imports this package's schema helpers

    if await storage_mode(tx) != "timescale":
        return  # native partitions keep row-level security and the staging path
    await tx.execute_script(
        f"ALTER TABLE gps_positions ADD CONSTRAINT gps_positions_tenant_write "
        f"CHECK (current_user <> '{APP_ROLE}' OR customer_id = {TENANT})"
    )
    if await _app_role_exists(tx):
        await tx.execute_script(f"GRANT INSERT ON gps_positions TO {APP_ROLE}")
        # TimescaleDB hands the grant on to the internal compressed hypertable too, which has no
        # such CHECK (compressed rows are written by the owner's jobs alone): take it back there.
        # Chunks of the hypertable itself inherit the grant together with the CHECK.
        compressed = await tx.fetchval(
            "SELECT format('%I.%I', c.schema_name, c.table_name) FROM _timescaledb_catalog.hypertable h "
            "JOIN _timescaledb_catalog.hypertable c ON c.id = h.compressed_hypertable_id "
            "WHERE h.table_name = 'gps_positions'"
        )
        if compressed:
            await tx.execute_script(f"REVOKE ALL ON {compressed} FROM {APP_ROLE}")


async def positions_pg(tx: Tx) -> None:
    if await _timescale_enabled(tx):
        await _timescale_positions(tx)
    else:
        await _partitioned_positions(tx)
    await tx.execute_script(_EVENTS_AND_STATE_PG)


POSITIONS_SQLITE = """
    -- Clustered on the idempotency key: a vehicle's track is one contiguous range.
    CREATE TABLE gps_positions (
        customer_id TEXT NOT NULL,
        vehicle_id TEXT NOT NULL,
        device_id TEXT,
        fix_time REAL NOT NULL,
        received_at REAL NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        speed_kph REAL,
        course REAL,
        altitude REAL,
        accuracy REAL,
        attributes TEXT,
        PRIMARY KEY (customer_id, vehicle_id, fix_time)
    ) WITHOUT ROWID;
    CREATE INDEX gps_positions_time ON gps_positions (customer_id, fix_time);
    CREATE TABLE geofence_events (
        id INTEGER PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        vehicle_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        event_time REAL NOT NULL,
        geofence_id TEXT,
        lon REAL,
        lat REAL,
        speed_kph REAL,
        attributes TEXT,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX geofence_events_key
        ON geofence_events (customer_id, vehicle_id, kind, event_time, coalesce(geofence_id, ''));
    CREATE INDEX geofence_events_time ON geofence_events (customer_id, event_time);
    CREATE TABLE vehicle_state (
        customer_id TEXT NOT NULL REFERENCES customers (id),
        vehicle_id TEXT NOT NULL,
        device_id TEXT,
        fix_time REAL,
        received_at REAL,
        lat REAL,
        lon REAL,
        speed_kph REAL,
        course REAL,
        altitude REAL,
        accuracy REAL,
        attributes TEXT,
        detector TEXT,
        updated_at REAL,
        PRIMARY KEY (customer_id, vehicle_id)
    );
    CREATE INDEX vehicles_device_lookup ON vehicles (device_id);
"""
