"""Synthetic tenant documents of a given size, shared by the benchmarks and the demo."""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

from sync.document import FleetDocument
from sync.services import create_record

CENTER_LON, CENTER_LAT = 13.40, 52.52


def polygon(rng: random.Random, vertices: int, radius_deg: float = 0.01) -> dict[str, Any]:
    lon = CENTER_LON + rng.uniform(-0.3, 0.3)
    lat = CENTER_LAT + rng.uniform(-0.2, 0.2)
    ring = []
    for i in range(vertices):
        angle = 2 * math.pi * i / vertices
        r = radius_deg * rng.uniform(0.8, 1.0)
        ring.append([round(lon + r * math.cos(angle), 6), round(lat + r * math.sin(angle), 6)])
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def line(rng: random.Random, points: int) -> dict[str, Any]:
    lon, lat = CENTER_LON + rng.uniform(-0.3, 0.3), CENTER_LAT + rng.uniform(-0.2, 0.2)
    coords = []
    for _ in range(points):
        lon += rng.uniform(-0.002, 0.002)
        lat += rng.uniform(-0.002, 0.002)
        coords.append([round(lon, 6), round(lat, 6)])
    return {"type": "LineString", "coordinates": coords}


def fill(document: FleetDocument, *, vehicles: int, drivers: int, geofences: int, routes: int,
         geofence_vertices: int = 100, seed: int = 1) -> None:
    """Add records through the validated service API, in one transaction."""
    rng = random.Random(seed)
    now = "2026-11-01T08:00:00.000Z"
    driver_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(drivers)]
    vehicle_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(vehicles)]
    with document.transaction():
        for i, driver_id in enumerate(driver_ids):
            create_record(document, "drivers", {"name": f"Driver {i}", "phone": f"+49 30 {i:07d}",
                                                "license_number": f"B{i:08d}"}, record_id=driver_id, now=now)
        for i, vehicle_id in enumerate(vehicle_ids):
            create_record(document, "vehicles", {
                "name": f"Vehicle {i}", "plate": f"B-WH {i}", "vin": f"WVWZZZ1JZ{i:08d}",
                "device_id": f"dev-{i:06d}", "driver_id": driver_ids[i % drivers] if drivers else None,
                "speed_limit_kph": 80}, record_id=vehicle_id, now=now)
        for i in range(geofences):
            create_record(document, "geofences", {"name": f"Fence {i}", "kind": "customer",
                                                  "geometry": polygon(rng, geofence_vertices)}, now=now)
        for i in range(routes):
            create_record(document, "routes", {"name": f"Route {i}", "geometry": line(rng, 50),
                                               "vehicle_id": vehicle_ids[i % vehicles] if vehicles else None},
                          now=now)
