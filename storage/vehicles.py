"""Vehicles of the tenant, mirrored from the document, with their latest fix for the map."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NewType

from storage.repository import Repository, check_bbox

VehicleId = NewType("VehicleId", str)


@dataclass(frozen=True, slots=True)
class Vehicle:
    id: VehicleId
    name: str | None
    plate: str | None
    vin: str | None
    device_id: str | None
    driver_id: str | None
    status: str | None
    speed_limit_kph: float | None
    notes: str | None
    created_at: str | None
    updated_at: str | None
    data: dict[str, Any]
    invalid_reason: str | None


@dataclass(frozen=True, slots=True)
class LatestFix:
    vehicle_id: VehicleId
    fix_time: float
    lon: float
    lat: float
    speed_kph: float | None
    course: float | None


class VehicleRepository(Repository[Vehicle]):
    table = "vehicles"
    record_type = Vehicle
    columns = ("name", "plate", "vin", "device_id", "driver_id", "status", "speed_limit_kph", "notes",
               "created_at", "updated_at")
    search_columns = ("name", "plate", "vin", "device_id")

    def by_device(self, device_id: str) -> Vehicle | None:
        rows = self._store.query(f"{self._select} WHERE device_id = ? ORDER BY id LIMIT 1", (device_id,))
        return self._record(rows[0]) if rows else None

    def record_fix(self, fix: LatestFix) -> None:
        """Keep the newest fix per vehicle; an older fix arriving late never moves the marker back."""
        self.record_fixes([fix])

    def record_fixes(self, fixes: Iterable[LatestFix]) -> None:
        """record_fix for many vehicles in one statement (a live feed batch: thousands a second)."""
        rows = [(f.vehicle_id, f.fix_time, f.lon, f.lat, f.speed_kph, f.course, f.lon, f.lat) for f in fixes]
        if not rows:
            return
        with self._store.transaction() as conn:
            conn.executemany(
                "INSERT INTO latest_fixes (vehicle_id, fix_time, lon, lat, speed_kph, course, geom) "
                "VALUES (?, ?, ?, ?, ?, ?, MakePoint(?, ?, 4326)) "
                "ON CONFLICT(vehicle_id) DO UPDATE SET fix_time = excluded.fix_time, lon = excluded.lon, "
                "lat = excluded.lat, speed_kph = excluded.speed_kph, course = excluded.course, "
                "geom = excluded.geom WHERE excluded.fix_time > latest_fixes.fix_time",
                rows,
            )

    def latest_fix(self, vehicle_id: str) -> LatestFix | None:
        rows = self._store.query(
            "SELECT vehicle_id, fix_time, lon, lat, speed_kph, course FROM latest_fixes WHERE vehicle_id = ?",
            (vehicle_id,),
        )
        return LatestFix(*rows[0]) if rows else None

    def latest_fixes(self) -> list[LatestFix]:
        rows = self._store.query("SELECT vehicle_id, fix_time, lon, lat, speed_kph, course FROM latest_fixes")
        return [LatestFix(*row) for row in rows]

    def in_bbox(self, bbox: Any) -> list[Vehicle]:
        """Vehicles whose latest fix lies in the box (vehicles have no geometry of their own)."""
        min_lon, min_lat, max_lon, max_lat = check_bbox(bbox)
        sql = (
            f"{self._select} WHERE id IN (SELECT vehicle_id FROM latest_fixes WHERE fid IN "
            "(SELECT pkid FROM idx_latest_fixes_geom WHERE xmin <= ? AND xmax >= ? AND ymin <= ? AND ymax >= ?)"
            # The R*Tree stores 32-bit floats rounded outwards; the exact test trims the edges.
            " AND lon BETWEEN ? AND ? AND lat BETWEEN ? AND ?) ORDER BY name"
        )
        params = (max_lon, min_lon, max_lat, min_lat, min_lon, max_lon, min_lat, max_lat)
        return [self._record(r) for r in self._store.query(sql, params)]
