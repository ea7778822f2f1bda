"""A GPS simulator: a vehicle driving along a route LineString at a steady speed.

Fixes come every `interval_s` seconds of simulated time, at the point `speed x elapsed` metres
along the route (segment lengths are great-circle distances; within a segment the position is
interpolated linearly in lon/lat, which is exact enough for road-sized segments). The course
is the bearing of the segment being driven. With `jitter_m` each position is displaced by a
normal error of that many metres per axis, drawn from a generator seeded with `seed`, so the
same arguments always give the same fixes. `realtime=True` paces the fixes on the wall clock
(the demo fleet); otherwise they come as fast as they are consumed.
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shapely.geometry import LineString

from storage.positions import Fix
from sync.gps.geo import bearing_deg, distance_m, offset, valid_lon_lat

RouteLike = LineString | Mapping[str, Any] | Sequence[Sequence[float]]


def route_coordinates(route: RouteLike) -> list[tuple[float, float]]:
    """[(lon, lat), ...] from a shapely LineString, a GeoJSON LineString or a coordinate list."""
    if isinstance(route, LineString):
        raw: Any = list(route.coords)
    elif isinstance(route, Mapping):
        if route.get("type") != "LineString":
            raise ValueError(f"a route must be a LineString, not {route.get('type')!r}")
        raw = route.get("coordinates")
    else:
        raw = route
    coords = [(float(c[0]), float(c[1])) for c in raw or []]
    # Repeated vertices add nothing and have no bearing.
    deduped = [c for i, c in enumerate(coords) if i == 0 or c != coords[i - 1]]
    if len(deduped) < 2:
        raise ValueError("a route needs at least two distinct points")
    if not all(valid_lon_lat(lon, lat) for lon, lat in deduped):
        raise ValueError("route coordinates out of range")
    return deduped


class RouteSimulator:
    def __init__(self, route: RouteLike, *, speed_kph: float, interval_s: float = 1.0,
                 device_id: str = "simulator", vehicle_id: str | None = None, start_time: float | None = None,
                 seed: int = 0, jitter_m: float = 0.0, accuracy_m: float | None = 5.0, loop: bool = False,
                 realtime: bool = False, stop: threading.Event | None = None) -> None:
        if not speed_kph > 0:
            raise ValueError("speed_kph must be positive")
        if not interval_s > 0:
            raise ValueError("interval_s must be positive")
        if jitter_m < 0:
            raise ValueError("jitter_m must not be negative")
        self.coords = route_coordinates(route)
        self.speed_kph = speed_kph
        self.interval_s = interval_s
        self.device_id = device_id
        self.vehicle_id = vehicle_id
        self.start_time = start_time
        self.seed = seed
        self.jitter_m = jitter_m
        self.accuracy_m = accuracy_m
        self.loop = loop
        self.realtime = realtime
        self.stop_event = stop if stop is not None else threading.Event()
        self._starts = [0.0]  # distance along the route where each segment starts
        for (lon1, lat1), (lon2, lat2) in zip(self.coords, self.coords[1:], strict=False):
            self._starts.append(self._starts[-1] + distance_m(lon1, lat1, lon2, lat2))
        self.length_m = self._starts[-1]
        self._bearings = [bearing_deg(*a, *b) for a, b in zip(self.coords, self.coords[1:], strict=False)]

    @property
    def duration_s(self) -> float:
        """Time to drive the route once."""
        return self.length_m / (self.speed_kph / 3.6)

    def position_at(self, along_m: float) -> tuple[float, float, float]:
        """(lon, lat, course) at a distance along the route (clamped to its ends)."""
        along = min(max(along_m, 0.0), self.length_m)
        segment = min(bisect.bisect_right(self._starts, along) - 1, len(self.coords) - 2)
        start, end = self._starts[segment], self._starts[segment + 1]
        f = (along - start) / (end - start) if end > start else 0.0
        (lon1, lat1), (lon2, lat2) = self.coords[segment], self.coords[segment + 1]
        return lon1 + (lon2 - lon1) * f, lat1 + (lat2 - lat1) * f, self._bearings[segment]

    def __iter__(self) -> Iterator[Fix]:
        rng = random.Random(self.seed)
        t0 = self.start_time if self.start_time is not None else round(time.time(), 3)
        mps = self.speed_kph / 3.6
        wall0 = time.monotonic()
        k = 0
        while not self.stop_event.is_set():
            elapsed = k * self.interval_s
            along = elapsed * mps
            last = False
            if along >= self.length_m and not self.loop:
                along, elapsed, last = self.length_m, self.duration_s, True
            lon, lat, course = self.position_at(along % self.length_m if self.loop else along)
            if self.jitter_m:
                lon, lat = offset(lon, lat, rng.gauss(0.0, self.jitter_m), rng.gauss(0.0, self.jitter_m))
            if self.realtime:
                self.stop_event.wait(max(0.0, wall0 + elapsed - time.monotonic()))
                if self.stop_event.is_set():
                    return
            yield Fix(self.device_id, round(t0 + elapsed, 3), round(lat, 7), round(lon, 7), self.vehicle_id,
                      speed_kph=self.speed_kph, course=round(course, 1), accuracy=self.accuracy_m,
                      attributes={"simulated": True})
            if last:
                return
            k += 1
