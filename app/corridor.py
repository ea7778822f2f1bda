"""Route-corridor deviation, computed locally (the field client is usually offline): a vehicle is off
its route when its distance from the route's line is more than the route's corridor_m.

Distances are metres in a local equirectangular projection around the fix, exact enough for the
corridor widths involved (tens to thousands of metres). Events: `route_deviation` when a vehicle
leaves the corridor of a route assigned to it, `route_return` when it comes back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shapely.geometry import LineString, Point

from storage.events import Event

EARTH_M_PER_DEG = 111_320.0
DEFAULT_CORRIDOR_M = 100.0


@dataclass(frozen=True)
class WatchedRoute:
    id: str
    name: str
    vehicle_id: str | None
    coords: tuple[tuple[float, float], ...]
    corridor_m: float


def watched_route(record_id: str, fields: Mapping[str, Any]) -> WatchedRoute | None:
    geometry = fields.get("geometry")
    if not isinstance(geometry, Mapping) or geometry.get("type") != "LineString":
        return None
    try:
        coords = tuple((float(c[0]), float(c[1])) for c in geometry.get("coordinates") or [])
    except (TypeError, ValueError, IndexError):
        return None
    if len(coords) < 2:
        return None
    corridor = fields.get("corridor_m")
    corridor_m = float(corridor) if isinstance(corridor, int | float) and not isinstance(corridor, bool) \
        and corridor > 0 else DEFAULT_CORRIDOR_M
    return WatchedRoute(record_id, str(fields.get("name") or record_id), fields.get("vehicle_id"), coords, corridor_m)


def distance_m(route: WatchedRoute, lon: float, lat: float) -> float:
    scale_x = EARTH_M_PER_DEG * math.cos(math.radians(lat))
    line = LineString([((x - lon) * scale_x, (y - lat) * EARTH_M_PER_DEG) for x, y in route.coords])
    return float(line.distance(Point(0.0, 0.0)))


class CorridorWatcher:
    """Per vehicle and route: inside or outside the corridor, and the events when that changes.

    A vehicle is watched against the routes assigned to it (route.vehicle_id) and no others: the
    field window shows exactly those, so every alert names a route the driver can see.
    """

    def __init__(self, routes: Iterable[WatchedRoute] = ()) -> None:
        self.routes = list(routes)
        self._outside: dict[tuple[str, str], bool] = {}
        self.last_distance: dict[str, float] = {}

    def set_routes(self, routes: Iterable[WatchedRoute]) -> None:
        self.routes = list(routes)
        ids = {r.id for r in self.routes}
        self._outside = {k: v for k, v in self._outside.items() if k[1] in ids}

    def routes_for(self, vehicle_id: str) -> list[WatchedRoute]:
        return [r for r in self.routes if r.vehicle_id == vehicle_id]

    def process(self, vehicle_id: str, fix_time: float, lon: float, lat: float,
                speed_kph: float | None = None) -> list[Event]:
        events = []
        for route in self.routes_for(vehicle_id):
            distance = distance_m(route, lon, lat)
            self.last_distance[route.id] = distance
            key = (vehicle_id, route.id)
            outside = distance > route.corridor_m
            before = self._outside.get(key)
            self._outside[key] = outside
            if before is None and not outside:
                continue  # starting on the route is not news
            if outside and not before:
                kind = "route_deviation"
            elif before and not outside:
                kind = "route_return"
            else:
                continue
            events.append(Event(vehicle_id, kind, fix_time, route_id=route.id, lon=lon, lat=lat, speed_kph=speed_kph,
                                attributes={"distance_m": round(distance, 1), "corridor_m": route.corridor_m}))
        return events
