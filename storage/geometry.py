"""GeoJSON to SpatiaLite geometry conversion, and the polygon that stands in for a circle."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE_LAT = math.pi * EARTH_RADIUS_M / 180


def from_geojson(value: Any) -> BaseGeometry | None:
    """A shapely geometry from a GeoJSON geometry object, or None when it cannot be read."""
    if not isinstance(value, Mapping):
        return None
    try:
        geom = shape(dict(value))
    except Exception:  # shapely raises several unrelated types for malformed input
        return None
    return None if geom.is_empty else geom


def circle_polygon(lon: float, lat: float, radius_m: float, segments: int = 64) -> Polygon:
    """A polygon approximating a circle on the ground (local equirectangular; fine below ~50 km)."""
    lat_scale = 1.0 / METRES_PER_DEGREE_LAT
    lon_scale = lat_scale / max(math.cos(math.radians(lat)), 1e-6)
    ring = [
        (
            lon + radius_m * math.cos(2 * math.pi * i / segments) * lon_scale,
            lat + radius_m * math.sin(2 * math.pi * i / segments) * lat_scale,
        )
        for i in range(segments)
    ]
    return Polygon(ring)


def as_multipolygon(geom: BaseGeometry) -> MultiPolygon | None:
    if isinstance(geom, MultiPolygon):
        return geom
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    return None


def geofence_shape(fields: Mapping[str, Any], parsed: BaseGeometry | None = None) -> MultiPolygon | None:
    """The area a geofence covers: its polygons, or a polygon for a Point with radius_m.
    `parsed` is fields["geometry"] already read (from_geojson would give the same), or None."""
    geom = parsed if parsed is not None else from_geojson(fields.get("geometry"))
    if geom is None:
        return None
    if geom.geom_type == "Point":
        radius = fields.get("radius_m")
        if not isinstance(radius, (int, float)) or isinstance(radius, bool) or radius <= 0:
            return None
        point = geom
        return MultiPolygon([circle_polygon(point.x, point.y, float(radius))])  # type: ignore[attr-defined]
    return as_multipolygon(geom)


def to_wkb(geom: BaseGeometry | None) -> bytes | None:
    return None if geom is None else shapely.to_wkb(geom, output_dimension=2)


# Below this many geometries, converting one by one is as fast as the array functions.
BULK_MIN = 16


def to_wkbs(geoms: Sequence[BaseGeometry]) -> list[bytes]:
    """to_wkb for each geometry, converted in one call."""
    return list(np.asarray(shapely.to_wkb(np.array(geoms, dtype=object), output_dimension=2)).tolist())


def polygons_as_multipolygon_wkbs(polygons: Sequence[Polygon]) -> list[bytes]:
    """to_wkb(as_multipolygon(p)) for each polygon, converted in one call."""
    multi = shapely.multipolygons(np.array(polygons, dtype=object), indices=np.arange(len(polygons)))
    return list(np.asarray(shapely.to_wkb(multi, output_dimension=2)).tolist())
