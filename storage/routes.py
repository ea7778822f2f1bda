"""Planned routes (LINESTRING 4326) with their corridor width, mirrored from the document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NewType

from shapely.geometry import LineString
from shapely.geometry.base import BaseGeometry

from storage import geometry
from storage.repository import Repository

RouteId = NewType("RouteId", str)


@dataclass(frozen=True, slots=True)
class Route:
    id: RouteId
    name: str | None
    vehicle_id: str | None
    stops: str | None
    corridor_m: float | None
    planned_start: str | None
    notes: str | None
    created_at: str | None
    updated_at: str | None
    data: dict[str, Any]
    invalid_reason: str | None


class RouteRepository(Repository[Route]):
    table = "routes"
    record_type = Route
    columns = ("name", "vehicle_id", "stops", "corridor_m", "planned_start", "notes", "created_at", "updated_at")
    geometry_column = "geometry"

    def derived_columns(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        corridor = fields.get("corridor_m")
        return {"corridor_m": 100.0 if corridor is None else corridor}

    def geometry_wkb(self, fields: Mapping[str, Any], parsed: BaseGeometry | None = None) -> bytes | None:
        geom = parsed if parsed is not None else geometry.from_geojson(fields.get("geometry"))
        return geometry.to_wkb(geom) if geom is not None and geom.geom_type == "LineString" else None

    def geometry_wkbs(self, records: Sequence[Mapping[str, Any]],
                      parsed: Sequence[BaseGeometry | None]) -> list[bytes | None]:
        lines = [index for index, geom in enumerate(parsed) if type(geom) is LineString]
        if len(lines) < geometry.BULK_MIN:
            return super().geometry_wkbs(records, parsed)
        wkbs: list[bytes | None] = [
            None if type(geom) is LineString else self.geometry_wkb(fields, geom)
            for fields, geom in zip(records, parsed, strict=True)
        ]
        for index, wkb in zip(lines, geometry.to_wkbs([parsed[index] for index in lines]), strict=True):  # type: ignore[misc]
            wkbs[index] = wkb
        return wkbs

    def for_vehicle(self, vehicle_id: str) -> list[Route]:
        rows = self._store.query(f"{self._select} WHERE vehicle_id = ? ORDER BY name", (vehicle_id,))
        return [self._record(row) for row in rows]
