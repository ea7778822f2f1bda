"""The JSON the map bridge draws: vehicle markers with their state, geofences and routes as GeoJSON.

Plain data in, plain data out (no storage types), so the app and the tests build it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

VEHICLE_STATES = ("moving", "stopped", "offline", "invalid")
MOVING_ABOVE_KPH = 3.0
OFFLINE_AFTER_S = 600.0
DEFAULT_CORRIDOR_M = 100.0


def vehicle_state(*, invalid: bool, fix_time: float | None, speed_kph: float | None, now: float) -> str:
    """invalid beats everything; no fix or a stale one is offline; then moving or stopped by speed."""
    if invalid:
        return "invalid"
    if fix_time is None or now - fix_time > OFFLINE_AFTER_S:
        return "offline"
    return "moving" if (speed_kph or 0.0) > MOVING_ABOVE_KPH else "stopped"


@dataclass(frozen=True, slots=True)
class VehicleMarker:
    id: str
    name: str
    lon: float
    lat: float
    state: str
    speed_kph: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "lon": self.lon, "lat": self.lat, "state": self.state,
                "speed": self.speed_kph}


def move_update(vehicle_id: str, lon: float, lat: float, state: str | None = None) -> list[Any]:
    """One entry of moveVehicles(): a compact [id, lon, lat, state] (5k of them go over every second)."""
    return [vehicle_id, round(lon, 6), round(lat, 6), state]


def geofence_feature(record_id: str, fields: Mapping[str, Any], invalid_reason: str | None) -> dict[str, Any] | None:
    geometry = fields.get("geometry")
    if not isinstance(geometry, Mapping):
        return None
    return {
        "type": "Feature",
        "geometry": dict(geometry),
        "properties": {
            "id": record_id,
            "collection": "geofences",
            "name": fields.get("name") or "",
            "kind": fields.get("kind") or "other",
            "radius_m": fields.get("radius_m"),
            "active": fields.get("active", True) is not False,
            "invalid": invalid_reason,
        },
    }


def route_feature(record_id: str, fields: Mapping[str, Any], invalid_reason: str | None) -> dict[str, Any] | None:
    geometry = fields.get("geometry")
    if not isinstance(geometry, Mapping):
        return None
    corridor = fields.get("corridor_m")
    corridor_m = float(corridor) if isinstance(corridor, int | float) and not isinstance(corridor, bool) \
        else DEFAULT_CORRIDOR_M
    return {
        "type": "Feature",
        "geometry": dict(geometry),
        "properties": {
            "id": record_id,
            "collection": "routes",
            "name": fields.get("name") or "",
            "vehicle_id": fields.get("vehicle_id"),
            "corridor_m": corridor_m,
            "invalid": invalid_reason,
        },
    }


def feature_collection(features: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [f for f in features if f is not None]}
