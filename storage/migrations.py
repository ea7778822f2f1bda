"""Named, transactional schema migrations for the local store, recorded in `schema_migrations`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage import spatialite

if TYPE_CHECKING:
    from storage.store import Store


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[Any], None]


def _geometry(conn: Any, table: str, column: str, geometry_type: str) -> None:
    conn.execute("SELECT AddGeometryColumn(?, ?, 4326, ?, 'XY')", (table, column, geometry_type))
    conn.execute("SELECT CreateSpatialIndex(?, ?)", (table, column))


def run_script(conn: Any, script: str) -> None:
    """Execute each statement separately: `executescript` would COMMIT the open transaction."""
    # Comments go first: a semicolon inside one must not split a statement.
    # Trigger bodies hold semicolons too, so SQLite itself says when a statement is complete.
    complete = spatialite.sqlite_module().complete_statement
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    statement = ""
    for chunk in code.split(";"):
        statement += chunk + ";"
        if complete(statement):
            if statement.strip(" \n;"):
                conn.execute(statement)
            statement = ""


def _fleet_tables(conn: Any) -> None:
    # `fid` is an explicit INTEGER PRIMARY KEY so VACUUM can never renumber the rowids that
    # the R*Tree spatial indexes point at; `id` is the CRDT record id (a UUID string).
    # `data` holds the whole record as JSON, so fields this version does not know survive.
    run_script(
        conn,
        """
        CREATE TABLE vehicles (
            fid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            name TEXT, plate TEXT, vin TEXT, device_id TEXT, driver_id TEXT, status TEXT,
            speed_limit_kph REAL, notes TEXT, created_at TEXT, updated_at TEXT,
            data TEXT NOT NULL, invalid_reason TEXT
        );
        CREATE INDEX vehicles_device_id ON vehicles(device_id);
        CREATE INDEX vehicles_driver_id ON vehicles(driver_id);

        CREATE TABLE drivers (
            fid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            name TEXT, phone TEXT, email TEXT, license_number TEXT, license_expiry TEXT,
            status TEXT, notes TEXT, created_at TEXT, updated_at TEXT,
            data TEXT NOT NULL, invalid_reason TEXT
        );

        CREATE TABLE routes (
            fid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            name TEXT, vehicle_id TEXT, stops TEXT, corridor_m REAL, planned_start TEXT,
            notes TEXT, created_at TEXT, updated_at TEXT,
            data TEXT NOT NULL, invalid_reason TEXT
        );
        CREATE INDEX routes_vehicle_id ON routes(vehicle_id);

        CREATE TABLE geofences (
            fid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            name TEXT, kind TEXT, speed_limit_kph REAL, active INTEGER, notes TEXT,
            center_lon REAL, center_lat REAL, radius_m REAL, created_at TEXT, updated_at TEXT,
            data TEXT NOT NULL, invalid_reason TEXT
        );

        -- The latest fix per vehicle: what the live map and vehicle bbox queries read.
        CREATE TABLE latest_fixes (
            fid INTEGER PRIMARY KEY, vehicle_id TEXT NOT NULL UNIQUE,
            fix_time REAL NOT NULL, lon REAL NOT NULL, lat REAL NOT NULL,
            speed_kph REAL, course REAL
        );

        -- Field outbox: fixes recorded on this device, uploaded in batches.
        CREATE TABLE positions (
            fid INTEGER PRIMARY KEY,
            device_id TEXT NOT NULL, vehicle_id TEXT, fix_time REAL NOT NULL,
            lat REAL NOT NULL, lon REAL NOT NULL, speed_kph REAL, course REAL, altitude REAL,
            accuracy REAL, attributes TEXT,
            upload_state TEXT NOT NULL DEFAULT 'pending'
                CHECK (upload_state IN ('pending', 'uploaded', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, uploaded_at REAL,
            UNIQUE (device_id, fix_time)
        );
        CREATE INDEX positions_pending ON positions(upload_state, fid);
        -- Fixes are points: a bare R*Tree kept by SQL triggers indexes them at about twice the
        -- insert rate of a SpatiaLite geometry column with its spatial-index triggers.
        CREATE VIRTUAL TABLE positions_rtree USING rtree(fid, min_lon, max_lon, min_lat, max_lat);
        CREATE TRIGGER positions_rtree_insert AFTER INSERT ON positions BEGIN
            INSERT INTO positions_rtree VALUES (new.fid, new.lon, new.lon, new.lat, new.lat);
        END;
        CREATE TRIGGER positions_rtree_delete AFTER DELETE ON positions BEGIN
            DELETE FROM positions_rtree WHERE fid = old.fid;
        END;
        CREATE INDEX positions_vehicle_time ON positions(vehicle_id, fix_time);

        CREATE TABLE events (
            fid INTEGER PRIMARY KEY,
            vehicle_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('geofence_enter', 'geofence_exit', 'overspeed',
                                               'route_deviation', 'route_return')),
            event_time REAL NOT NULL, geofence_id TEXT, route_id TEXT,
            lon REAL, lat REAL, speed_kph REAL, attributes TEXT,
            source TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'server'))
        );
        -- Not a UNIQUE constraint: NULLs are distinct there, so events without a geofence or a
        -- route would never be recognised as duplicates.
        CREATE UNIQUE INDEX events_dedupe
            ON events(vehicle_id, kind, event_time, ifnull(geofence_id, ''), ifnull(route_id, ''));
        CREATE INDEX events_time ON events(event_time);

        -- Sync metadata: small key/value facts (tenant, server, watermarks, client id).
        CREATE TABLE sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

        -- The local CRDT update log; the document is rebuilt from it on start.
        CREATE TABLE crdt_log (
            seq INTEGER PRIMARY KEY,
            payload BLOB NOT NULL,
            origin TEXT NOT NULL CHECK (origin IN ('local', 'remote', 'snapshot')),
            created_at REAL NOT NULL,
            acked INTEGER NOT NULL DEFAULT 0
        );
        """
    )
    _geometry(conn, "routes", "geometry", "LINESTRING")
    _geometry(conn, "geofences", "geometry", "MULTIPOLYGON")
    _geometry(conn, "latest_fixes", "geom", "POINT")


MIGRATIONS: tuple[Migration, ...] = (Migration("0001_fleet_tables", _fleet_tables),)


def applied(store: Store) -> list[str]:
    return [row[0] for row in store.query("SELECT name FROM schema_migrations ORDER BY name")]


def apply_pending(store: Store, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction; return their names."""
    with store.transaction() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
    done = set(applied(store))
    newly: list[str] = []
    for migration in migrations:
        if migration.name in done:
            continue
        with store.transaction() as conn:
            migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (migration.name, time.time())
            )
        newly.append(migration.name)
    return newly
