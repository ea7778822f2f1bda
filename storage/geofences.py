"""Geofences as MULTIPOLYGON 4326; circles are kept as a polygon plus their centre and radius."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NewType

from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from storage import geometry
from storage.repository import Repository

GeofenceId = NewType("GeofenceId", str)


@dataclass(frozen=True, slots=True)
class Geofence:
    id: GeofenceId
    name: str | None
    kind: str | None
    speed_limit_kph: float | None
    active: int | None
    notes: str | None
    center_lon: float | None
    center_lat: float | None
    radius_m: float | None
    created_at: str | None
    updated_at: str | None
    data: dict[str, Any]
    invalid_reason: str | None


class GeofenceRepository(Repository[Geofence]):
    table = "geofences"
    record_type = Geofence
    columns = ("name", "kind", "speed_limit_kph", "active", "notes", "center_lon", "center_lat", "radius_m",
               "created_at", "updated_at")
    geometry_column = "geometry"

    def derived_columns(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        geom = fields.get("geometry")
        derived: dict[str, Any] = {"center_lon": None, "center_lat": None}
        if isinstance(geom, Mapping) and geom.get("type") == "Point":
            coords = geom.get("coordinates")
            if isinstance(coords, list) and len(coords) >= 2:
                derived["center_lon"], derived["center_lat"] = coords[0], coords[1]
        else:
            derived["radius_m"] = None  # a radius only means something on a circle
        active = fields.get("active")
        derived["active"] = True if active is None else active
        return derived

    def geometry_wkb(self, fields: Mapping[str, Any], parsed: BaseGeometry | None = None) -> bytes | None:
        return geometry.to_wkb(geometry.geofence_shape(fields, parsed))

    def geometry_wkbs(self, records: Sequence[Mapping[str, Any]],
                      parsed: Sequence[BaseGeometry | None]) -> list[bytes | None]:
        # A polygon already read becomes its one-part multipolygon whatever else the record
        # says (see geofence_shape), so those convert together; circles and the rest one by one.
        polygons = [index for index, geom in enumerate(parsed) if type(geom) is Polygon]
        if len(polygons) < geometry.BULK_MIN:
            return super().geometry_wkbs(records, parsed)
        wkbs: list[bytes | None] = [
            None if type(geom) is Polygon else self.geometry_wkb(fields, geom)
            for fields, geom in zip(records, parsed, strict=True)
        ]
        converted = geometry.polygons_as_multipolygon_wkbs([parsed[index] for index in polygons])  # type: ignore[misc]
        for index, wkb in zip(polygons, converted, strict=True):
            wkbs[index] = wkb
        return wkbs

    def containing(self, lon: float, lat: float, *, active_only: bool = True) -> list[Geofence]:
        """Geofences that contain the point: an R*Tree lookup, then an exact test on the few hits."""
        sql = (
            f"{self._select} WHERE fid IN (SELECT pkid FROM idx_geofences_geometry "
            "WHERE xmin <= ? AND xmax >= ? AND ymin <= ? AND ymax >= ?) "
            "AND ST_Contains(geometry, MakePoint(?, ?, 4326)) = 1"
        )
        if active_only:
            sql += " AND active = 1"
        rows = self._store.query(sql, (lon, lon, lat, lat, lon, lat))
        return [self._record(row) for row in rows]

    def containing_ids(self, lon: float, lat: float) -> list[str]:
        """Only the ids: the hot path of geofence event evaluation."""
        rows = self._store.query(
            "SELECT id FROM geofences WHERE fid IN (SELECT pkid FROM idx_geofences_geometry "
            "WHERE xmin <= ? AND xmax >= ? AND ymin <= ? AND ymax >= ?) "
            "AND active = 1 AND ST_Contains(geometry, MakePoint(?, ?, 4326)) = 1",
            (lon, lon, lat, lat, lon, lat),
        )
        return [row[0] for row in rows]
