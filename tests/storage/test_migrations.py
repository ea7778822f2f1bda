"""Schema migrations: what a fresh store contains, and that migrating is all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import platformdirs
import pytest

import storage
from storage import migrations
from storage.migrations import Migration
from storage.store import APP_NAME, default_store_path

FLEET_TABLES = (
    "vehicles", "drivers", "routes", "geofences", "positions", "events", "sync_meta", "crdt_log",
    "latest_fixes",
)

# SpatiaLite's numeric geometry_type codes for 2-D geometries.
LINESTRING = 2
MULTIPOLYGON = 6


def _table_exists(store: storage.Store, name: str) -> bool:
    return bool(store.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))


def test_fresh_store_records_the_fleet_tables_migration(store: storage.Store) -> None:
    assert migrations.applied(store) == ["0001_fleet_tables"]


def test_fresh_store_has_every_fleet_table(store: storage.Store) -> None:
    missing = [name for name in FLEET_TABLES if not _table_exists(store, name)]
    assert missing == []


def test_geometry_columns_are_registered_with_type_and_srid(store: storage.Store) -> None:
    rows = store.query(
        "SELECT f_table_name, f_geometry_column, geometry_type, srid FROM geometry_columns "
        "WHERE f_table_name IN ('routes', 'geofences')"
    )
    registered = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert registered == {
        ("routes", "geometry"): (LINESTRING, 4326),
        ("geofences", "geometry"): (MULTIPOLYGON, 4326),
    }


def test_reopening_a_store_applies_no_migration_again(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    with storage.Store(path) as first:
        first.vehicles.upsert("v1", {"name": "kept"})
        recorded = first.query("SELECT name, applied_at FROM schema_migrations")
        recorded_before = [tuple(r) for r in recorded]
    with storage.Store(path) as second:
        assert migrations.apply_pending(second) == []
        assert [tuple(r) for r in second.query("SELECT name, applied_at FROM schema_migrations")] == recorded_before
        vehicle = second.vehicles.get("v1")
        assert vehicle is not None
        assert vehicle.name == "kept"


def test_migration_failing_half_way_leaves_no_trace(store: storage.Store) -> None:
    def half_done(conn: Any) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("INSERT INTO half_done VALUES (1)")
        raise RuntimeError("migration broke half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        migrations.apply_pending(store, (Migration("0002_bad", half_done),))
    assert not _table_exists(store, "half_done")
    assert "0002_bad" not in migrations.applied(store)
    assert migrations.applied(store) == ["0001_fleet_tables"]
    # The writer is usable afterwards: the failed migration's transaction was rolled back, not left open.
    store.vehicles.upsert("v1", {"name": "after"})
    assert store.vehicles.count() == 1


def test_store_uses_write_ahead_logging(store: storage.Store) -> None:
    assert store.scalar("PRAGMA journal_mode") == "wal"


def test_default_store_path_is_per_profile_under_user_data_dir() -> None:
    data_dir = Path(platformdirs.user_data_dir(APP_NAME))
    alice = default_store_path("alice@x")
    bob = default_store_path("bob@x")
    assert alice.is_relative_to(data_dir)
    assert bob.is_relative_to(data_dir)
    assert alice != bob
    assert alice.parent != bob.parent
    assert alice.name == "fleet.sqlite"
    # The profile name must not escape the data folder or put separators into the path.
    assert default_store_path("../../etc").is_relative_to(data_dir)
    assert ".." not in default_store_path("../../etc").relative_to(data_dir).parts
