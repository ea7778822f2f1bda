"""The Postgres/PostGIS schema steps of the core migrations, with row-level security on customer_id."""

from __future__ import annotations

import logging

from server_stub.db.base import DatabaseError, PermissionDenied, Tx

log = logging.getLogger(__name__)

APP_ROLE = "webhost_app"  # the NOLOGIN role pooled connections act as (see db/postgres.py)
TENANT = "current_setting('app.customer_id', true)"
# No tenant set: the auth layer looking up a login or an API key before it knows the tenant.
SYSTEM_CONTEXT = f"coalesce({TENANT}, '') = ''"


class ExtensionMissing(DatabaseError):
    """A required Postgres extension (PostGIS) is not installed on the database server."""


def tenant_rls_sql(table: str) -> str:
    """RLS for a tenant table: rows are visible and writable only inside transaction(customer_id)."""
    return f"""
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON {table}
            USING (customer_id = {TENANT}) WITH CHECK (customer_id = {TENANT});
    """


async def extensions_and_role(tx: Tx) -> None:
    """PostGIS (required), TimescaleDB (when the server has it), and the app role RLS applies to."""
    rows = await tx.fetch("SELECT name FROM pg_available_extensions WHERE name IN ('postgis', 'timescaledb')")
    available = {row["name"] for row in rows}
    if "postgis" not in available:
        raise ExtensionMissing(
            "PostGIS is not installed on this Postgres server; install it (e.g. apt install "
            "postgresql-15-postgis-3, or use the postgis/postgis image) and run `webhost-server migrate` again"
        )
    try:
        async with tx.savepoint():
            await tx.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    except PermissionDenied as exc:
        raise ExtensionMissing(
            "PostGIS is installed but this database user may not enable it; ask a superuser to run "
            "`CREATE EXTENSION postgis;` in this database, then run `webhost-server migrate` again"
        ) from exc
    from server_stub.db.schema_positions import timescale_wanted  # it imports this module

    if "timescaledb" in available and await timescale_wanted(tx):
        try:
            async with tx.savepoint():
                await tx.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except Exception as exc:  # any failure here only means: no hypertables
            # Listed but unusable (typically not in shared_preload_libraries): positions fall back
            # to native partitioning, so this must not stop the migration.
            log.warning("timescaledb is listed but could not be enabled (%s); using native partitioning", exc)
    await tx.execute_script(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}')
               AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = session_user) THEN
                CREATE ROLE {APP_ROLE} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- roles are cluster-wide: another database's migration created it just now
        END
        $$;
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                -- Every table and sequence later migrations create is usable by the app role.
                ALTER DEFAULT PRIVILEGES IN SCHEMA public
                    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE};
                ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE};
                GRANT USAGE ON SCHEMA public TO {APP_ROLE};
                -- Readable so health checks and the admin page can show the schema version.
                GRANT SELECT ON schema_migrations TO {APP_ROLE};
            END IF;
        END
        $$;
        """
    )


ACCOUNTS = f"""
    CREATE TABLE customers (
        id text PRIMARY KEY,
        name text NOT NULL,
        plan text NOT NULL DEFAULT 'hobby' CHECK (plan IN ('hobby', 'starter', 'pro')),
        disabled boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE users (
        id text PRIMARY KEY,
        customer_id text REFERENCES customers (id),
        email text NOT NULL UNIQUE CHECK (email = lower(email)),
        password_hash text NOT NULL,
        role text NOT NULL CHECK (role IN ('platform_admin', 'admin', 'dispatcher', 'field')),
        disabled boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        CHECK ((role = 'platform_admin') = (customer_id IS NULL))
    );
    CREATE INDEX users_customer ON users (customer_id);
    CREATE TABLE api_keys (
        id text PRIMARY KEY,
        customer_id text NOT NULL REFERENCES customers (id),
        name text NOT NULL,
        prefix text NOT NULL,
        key_hash text NOT NULL UNIQUE,
        scopes jsonb NOT NULL DEFAULT '[]',
        role text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'field')),
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at timestamptz
    );
    CREATE INDEX api_keys_customer ON api_keys (customer_id);
    -- No customer_id and no RLS: a row is only reachable through the hash of a secret.
    CREATE TABLE refresh_tokens (
        id text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        token_hash text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz
    );
    CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

    -- Logins arrive before the tenant is known, so users and customers are also visible in the
    -- system context (app.customer_id unset); inside a tenant's transaction only its own rows are.
    ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
    ALTER TABLE customers FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_or_system ON customers
        USING ({SYSTEM_CONTEXT} OR id = {TENANT}) WITH CHECK ({SYSTEM_CONTEXT} OR id = {TENANT});
    ALTER TABLE users ENABLE ROW LEVEL SECURITY;
    ALTER TABLE users FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_or_system ON users
        USING ({SYSTEM_CONTEXT} OR customer_id = {TENANT}) WITH CHECK ({SYSTEM_CONTEXT} OR customer_id = {TENANT});
    {tenant_rls_sql("api_keys")}
    -- A presented key is looked up by its hash before its tenant is known: read-only, system context only.
    CREATE POLICY key_lookup ON api_keys FOR SELECT USING ({SYSTEM_CONTEXT});
"""

CRDT_LOG = f"""
    -- The durable update log and audit trail: who sent which update for which tenant, when.
    CREATE TABLE crdt_updates (
        seq bigserial PRIMARY KEY,
        customer_id text NOT NULL REFERENCES customers (id),
        user_id text,
        payload bytea NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX crdt_updates_customer_seq ON crdt_updates (customer_id, seq);
    CREATE TABLE crdt_snapshots (
        customer_id text PRIMARY KEY REFERENCES customers (id),
        payload bytea NOT NULL,
        upto_seq bigint NOT NULL,
        compacted_at timestamptz NOT NULL DEFAULT now(),
        folded_rows bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE projection_state (
        customer_id text PRIMARY KEY REFERENCES customers (id),
        watermark bigint NOT NULL DEFAULT 0
    );
    {tenant_rls_sql("crdt_updates")}
    {tenant_rls_sql("crdt_snapshots")}
    {tenant_rls_sql("projection_state")}
"""

# Projected records are never rejected (a merged update must not be refused), so nothing here is
# stricter than the document: device_id uniqueness, for one, is flagged by projection, not enforced.
_PROJECTED = """
    created_at text, updated_at text,
    data jsonb NOT NULL DEFAULT '{}', projection_error text, projected_at timestamptz,
    PRIMARY KEY (customer_id, id)
"""

FLEET_TABLES = f"""
    CREATE TABLE vehicles (
        customer_id text NOT NULL REFERENCES customers (id), id text NOT NULL,
        name text, plate text, vin text, device_id text, driver_id text, status text,
        speed_limit_kph double precision, notes text, {_PROJECTED}
    );
    CREATE INDEX vehicles_device ON vehicles (customer_id, device_id);
    CREATE TABLE drivers (
        customer_id text NOT NULL REFERENCES customers (id), id text NOT NULL,
        name text, phone text, email text, license_number text, license_expiry text, status text,
        notes text, {_PROJECTED}
    );
    CREATE TABLE routes (
        customer_id text NOT NULL REFERENCES customers (id), id text NOT NULL,
        name text, vehicle_id text, stops jsonb, corridor_m double precision, planned_start text,
        notes text, geometry geometry(LineString, 4326), {_PROJECTED}
    );
    CREATE INDEX routes_geometry ON routes USING GIST (geometry);
    CREATE INDEX routes_vehicle ON routes (customer_id, vehicle_id);
    CREATE TABLE geofences (
        customer_id text NOT NULL REFERENCES customers (id), id text NOT NULL,
        name text, kind text, speed_limit_kph double precision, active boolean, notes text,
        radius_m double precision, geometry geometry(MultiPolygon, 4326), {_PROJECTED}
    );
    CREATE INDEX geofences_geometry ON geofences USING GIST (geometry);
    {tenant_rls_sql("vehicles")}
    {tenant_rls_sql("drivers")}
    {tenant_rls_sql("routes")}
    {tenant_rls_sql("geofences")}
"""
