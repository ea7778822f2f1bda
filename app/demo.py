"""A demo fleet inside the demo tiles (central Helsinki): drivers, vehicles in every map state, routes
along real streets with corridors, geofences, latest fixes and one recorded track. Used by the
screenshots, the benchmark and the tests; everything goes through LocalFleet and the store's
repositories, like any edit."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
from collections.abc import Iterator
from typing import Any

from storage import Store
from storage.positions import Fix
from storage.vehicles import LatestFix, VehicleId
from sync.mirror import Mirror
from sync.schema import new_record_id
from sync.services import create_record

BOUNDS = (24.9362, 60.1650, 24.9528, 60.1785)  # inside the demo tiles, away from their edges

ROUTES: dict[str, list[list[float]]] = {
    "Station - Hakaniemi": [
        [24.93839, 60.1698], [24.93984, 60.17027], [24.94432, 60.1704], [24.94517, 60.17064], [24.94652, 60.17105],
        [24.94743, 60.17143], [24.9478, 60.17193], [24.94867, 60.17271], [24.94984, 60.17369], [24.95024, 60.1739],
        [24.95021, 60.17662], [24.95014, 60.17794], [24.95067, 60.17841]],
    "Unioninkatu - Esplanadi": [
        [24.95028, 60.17377], [24.95047, 60.17349], [24.95088, 60.16985], [24.95104, 60.16942], [24.95098, 60.1689],
        [24.95105, 60.168], [24.95162, 60.16789], [24.94313, 60.16767], [24.94182, 60.16751], [24.93543, 60.16531]],
    "Mannerheimintie": [[24.94358, 60.16664], [24.93701, 60.17103], [24.93595, 60.17149], [24.93521, 60.17221]],
}
GEOFENCES: list[dict[str, Any]] = [
    {"name": "Central Station depot", "kind": "depot", "geometry": {"type": "Polygon", "coordinates": [[
        [24.9405, 60.1703], [24.9432, 60.1703], [24.9432, 60.1721], [24.9405, 60.1721], [24.9405, 60.1703]]]}},
    {"name": "Esplanadi (20 km/h)", "kind": "restricted", "speed_limit_kph": 20, "geometry": {
        "type": "Polygon", "coordinates": [[[24.9445, 60.1672], [24.9505, 60.1675], [24.9505, 60.1681],
                                            [24.9445, 60.1679], [24.9445, 60.1672]]]}},
    {"name": "Customer: Kluuvi", "kind": "customer", "radius_m": 90,
     "geometry": {"type": "Point", "coordinates": [24.9478, 60.1712]}},
]
DRIVERS = ["Aino Virtanen", "Mikko Korhonen", "Laura Nieminen", "Juha Mäkinen", "Sanna Hämäläinen",
           "Timo Laine", "Emilia Koskinen", "Ville Heikkinen"]


def _along(coords: list[list[float]], fraction: float) -> tuple[float, float]:
    lengths = [math.dist(a, b) for a, b in itertools.pairwise(coords)]
    target = sum(lengths) * fraction
    for (a, b), length in zip(itertools.pairwise(coords), lengths, strict=True):
        if target <= length and length > 0:
            f = target / length
            return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f
        target -= length
    return coords[-1][0], coords[-1][1]


@dataclasses.dataclass
class DemoFleet:
    vehicle_ids: list[str]
    route_ids: list[str]
    geofence_ids: list[str]
    driver_ids: list[str]
    tracked_vehicle: str | None
    track_span: tuple[float, float] | None


def populate(mirror: Mirror, *, vehicles: int = 12, seed: int = 7, now: float | None = None,
             with_track: bool = True, with_invalid: bool = True) -> DemoFleet:
    """Fill an empty store with the demo fleet (one local transaction per collection)."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    store = mirror.store
    with mirror.edit() as document:
        driver_ids = [create_record(document, "drivers", {"name": name, "phone": f"+358 40 {100 + i:03d} 2{i:03d}",
                                                          "license_number": f"FI-{4400 + i}"})
                      for i, name in enumerate(DRIVERS)]
    vehicle_ids: list[str] = []
    with mirror.edit() as document:
        for i in range(vehicles):
            fields: dict[str, Any] = {"name": f"Van {i + 1:02d}" if vehicles <= 99 else f"Unit {i + 1:05d}",
                                      "plate": f"HEL-{100 + i}", "device_id": f"demo-{i + 1:05d}",
                                      "speed_limit_kph": 50}
            if i < len(driver_ids):
                fields["driver_id"] = driver_ids[i]
            vehicle_ids.append(create_record(document, "vehicles", fields))
        if with_invalid:
            # Another replica wrote a record that breaks a rule: kept, flagged, shown as invalid.
            bad = new_record_id()
            document.put_record("vehicles", bad, {"name": "Van 99 (bad limit)", "plate": "HEL-999",
                                                  "speed_limit_kph": -30, "status": "active"})
            vehicle_ids.append(bad)
    with mirror.edit() as document:
        route_ids = [create_record(document, "routes", {"name": name, "geometry": {"type": "LineString",
                                                                                    "coordinates": coords},
                                                        "corridor_m": 40 if i == 0 else 60,
                                                        "vehicle_id": vehicle_ids[i] if i < len(vehicle_ids) else None})
                     for i, (name, coords) in enumerate(ROUTES.items())]
        geofence_ids = [create_record(document, "geofences", dict(g)) for g in GEOFENCES]

    routes = list(ROUTES.values())
    with store.transaction():
        for i, vehicle_id in enumerate(vehicle_ids):
            kind = i % 6
            if kind in (0, 1, 2):  # moving, along a route
                lon, lat = _along(routes[i % 3], rng.random())
                fix_time, speed = now - rng.uniform(1, 20), rng.uniform(15, 45)
            elif kind == 3 or kind == 4:  # stopped
                lon, lat = rng.uniform(BOUNDS[0], BOUNDS[2]), rng.uniform(BOUNDS[1], BOUNDS[3])
                fix_time, speed = now - rng.uniform(5, 120), 0.0
            else:  # offline: last heard of an hour ago
                lon, lat = rng.uniform(BOUNDS[0], BOUNDS[2]), rng.uniform(BOUNDS[1], BOUNDS[3])
                fix_time, speed = now - 3600 - rng.uniform(0, 3600), 0.0
            store.vehicles.record_fix(LatestFix(VehicleId(vehicle_id), fix_time, round(lon, 6), round(lat, 6),
                                                round(speed, 1), None))
    span = None
    tracked = vehicle_ids[0] if vehicle_ids and with_track else None
    if tracked is not None:
        fixes = list(demo_track(tracked, routes[0], start=now - 900))
        store.positions.add_many(fixes)
        span = (fixes[0].fix_time, fixes[-1].fix_time)
    return DemoFleet(vehicle_ids, route_ids, geofence_ids, driver_ids, tracked, span)


def demo_track(vehicle_id: str, coords: list[list[float]], *, start: float, speed_kph: float = 30.0,
               device_id: str = "demo-00001") -> Iterator[Fix]:
    """A drive along a route: the GPS simulator when present, with speed and altitude that vary."""
    try:
        from sync.gps.simulator import RouteSimulator
    except ImportError:  # the field pipeline is optional here: interpolate instead
        steps = 120
        for k in range(steps + 1):
            lon, lat = _along(coords, k / steps)
            yield Fix(device_id, start + k * 5, lat, lon, vehicle_id, speed_kph, None,
                      12 + 6 * math.sin(k / 9))
        return
    simulator = RouteSimulator({"type": "LineString", "coordinates": coords}, speed_kph=speed_kph, interval_s=5.0,
                               device_id=device_id, vehicle_id=vehicle_id, start_time=start)
    for k, fix in enumerate(simulator):
        wobble = 8 * math.sin(k / 5)
        yield dataclasses.replace(fix, speed_kph=round(max(0.0, speed_kph + wobble), 1),
                                  altitude=round(12 + 6 * math.sin(k / 9), 1))


def is_empty(store: Store) -> bool:
    return store.vehicles.count() == 0 and store.routes.count() == 0 and store.geofences.count() == 0
