"""The demo: a Helsinki tenant with an admin, a dispatcher and a field user, about twenty vehicles
with drivers, routes and geofences around real landmarks, and a simulator that drives them.

`webhost-server demo-data` loads it offline (through the durable update log and the projection,
exactly where a sync room would put it); `make demo` then starts the server and the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from server_stub import accounts
from server_stub.config import Settings
from server_stub.db.base import Database
from server_stub.persistence import DatabasePersistence
from server_stub.projection import Projector
from sync.document import FleetDocument
from sync.room import StoredUpdate
from sync.services import create_record

TENANT_NAME = "Demo Fleet Helsinki"
PASSWORD = "demo-fleet-2026"
USERS = {"admin": "admin@demo.webhost.example", "dispatcher": "dispatcher@demo.webhost.example",
         "field": "field@demo.webhost.example"}
VEHICLE_COUNT = 20

# Real places in central Helsinki (lon, lat), all inside the demo MBTiles the desktop app ships
# (resources/demo.mbtiles covers 24.935-24.953 E, 60.164-60.179 N), so the demo fleet is on the
# offline map. tests/server/test_demo_data.py checks every coordinate against the file's bounds.
LANDMARKS: dict[str, tuple[float, float]] = {
    "Rautatientori": (24.9441, 60.1710), "Ateneum": (24.9446, 60.1699),
    "Kaisaniemi": (24.9467, 60.1745), "Siltasaari": (24.9498, 60.1774),
    "Senaatintori": (24.9520, 60.1694), "Kauppatori": (24.9512, 60.1671),
    "Kappeli": (24.9478, 60.1676), "Stockmann": (24.9413, 60.1688),
    "Narinkkatori": (24.9372, 60.1693), "Kiasma": (24.9372, 60.1721),
    "Musiikkitalo": (24.9378, 60.1750), "Kluuvi": (24.9478, 60.1712),
    "Erottaja": (24.9437, 60.1661), "Kasarmitori": (24.9488, 60.1655),
    "Yrjönkatu": (24.9383, 60.1666), "Kaisaniemen puisto": (24.9470, 60.1765),
}


@dataclass(frozen=True)
class DemoInfo:
    tenant_id: str
    created: bool

    def __str__(self) -> str:
        lines = [f"demo tenant {TENANT_NAME!r}: {self.tenant_id}" + ("" if self.created else " (already loaded)")]
        lines += [f"  {role:<10} {email}  password: {PASSWORD}" for role, email in USERS.items()]
        return "\n".join(lines)


def _square(lon: float, lat: float, half_m: float) -> dict[str, Any]:
    dlat = half_m / 111_320
    dlon = dlat / math.cos(math.radians(lat))
    ring = [[lon - dlon, lat - dlat], [lon + dlon, lat - dlat], [lon + dlon, lat + dlat], [lon - dlon, lat + dlat]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def _tours(rng: random.Random) -> Iterator[list[str]]:
    names = sorted(LANDMARKS)
    while True:
        yield rng.sample(names, 5)


def build_fleet(document: FleetDocument, *, seed: int = 7) -> list[str]:
    """Create the demo records in one transaction; returns the vehicle ids."""
    rng = random.Random(seed)
    now = "2026-11-25T06:00:00.000Z"
    vehicle_ids: list[str] = []
    with document.transaction():
        for name, (lon, lat), kind in (("Depot Kiasma", LANDMARKS["Kiasma"], "depot"),
                                       ("Depot Kasarmitori", LANDMARKS["Kasarmitori"], "depot")):
            create_record(document, "geofences", {"name": name, "kind": kind, "geometry": _square(lon, lat, 60),
                                                  "speed_limit_kph": 20}, now=now)
        for name in ("Rautatientori", "Senaatintori", "Kauppatori", "Stockmann", "Musiikkitalo"):
            lon, lat = LANDMARKS[name]
            create_record(document, "geofences", {"name": f"Customer {name}", "kind": "customer", "radius_m": 50,
                                                  "geometry": {"type": "Point", "coordinates": [lon, lat]}}, now=now)
        lon, lat = LANDMARKS["Kappeli"]
        create_record(document, "geofences", {"name": "Esplanadi (no trucks)", "kind": "restricted",
                                              "geometry": _square(lon, lat, 40), "speed_limit_kph": 10}, now=now)
        tours = _tours(rng)
        for i in range(VEHICLE_COUNT):
            driver = create_record(document, "drivers", {
                "name": f"{rng.choice(['Aino', 'Eero', 'Helmi', 'Juha', 'Laura', 'Mikko', 'Sanna', 'Timo'])} "
                        f"{rng.choice(['Virtanen', 'Korhonen', 'Nieminen', 'Mäkinen', 'Laine', 'Koskinen'])}",
                "phone": f"+358 9 5550 {i:03d}", "license_number": f"B{rng.randrange(10**7, 10**8)}",
                "license_expiry": f"{2027 + i % 4}-0{1 + i % 9}-15"}, now=now)
            vehicle = create_record(document, "vehicles", {
                "name": f"{'Van' if i % 3 else 'Truck'} {i + 1:02d}", "plate": f"WHF-{100 + i}",
                "device_id": f"demo-{i + 1:02d}", "driver_id": driver,
                "speed_limit_kph": 50 if i % 3 else 40, "notes": "demo vehicle"}, now=now)
            stops = next(tours)
            create_record(document, "routes", {
                "name": f"Tour {i + 1:02d}: {stops[0]} → {stops[-1]}", "vehicle_id": vehicle, "corridor_m": 60,
                "geometry": {"type": "LineString", "coordinates": [list(LANDMARKS[s]) for s in stops]},
                "stops": [{"name": s, "lon": LANDMARKS[s][0], "lat": LANDMARKS[s][1]} for s in stops]}, now=now)
            vehicle_ids.append(vehicle)
    return vehicle_ids


async def load_demo(db: Database, settings: Settings) -> DemoInfo:
    """Create the demo tenant, its users and its fleet; a second call changes nothing."""
    for tenant in await accounts.list_tenants(db):
        if tenant.name == TENANT_NAME:
            return DemoInfo(tenant.id, created=False)
    tenant = await accounts.create_tenant(db, TENANT_NAME, "pro")
    admin_id = ""
    for role, email in USERS.items():
        user = await accounts.create_user(db, email, PASSWORD, role, tenant.id)
        admin_id = admin_id or user.id
    document = FleetDocument()
    build_fleet(document)
    persistence = DatabasePersistence(db)
    seq = await persistence.append(tenant.id, [StoredUpdate(document.get_update(), admin_id, time.time())])
    await Projector(db).reproject(tenant.id, document, seq)
    return DemoInfo(tenant.id, created=True)


async def drive_fleet(server_url: str, email: str, password: str, *, speed_kph: float = 40.0,
                      interval_s: float = 2.0, stop: asyncio.Event | None = None) -> None:
    """The moving demo fleet: every vehicle drives its route, reporting through the real ingest API."""
    from sync.gps.simulator import RouteSimulator
    from sync.uploader import encode_batch

    stop = stop or asyncio.Event()
    async with httpx.AsyncClient(base_url=server_url, timeout=10) as http:
        login = await http.post("/api/v1/auth/token", json={"email": email, "password": password})
        login.raise_for_status()
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        routes = (await http.get("/api/v1/routes", params={"page[size]": 1000}, headers=headers)).json()["data"]
        vehicles = {v["id"]: v["attributes"] for v in
                    (await http.get("/api/v1/vehicles", params={"page[size]": 1000}, headers=headers)).json()["data"]}
        simulators = [
            iter(RouteSimulator(route["attributes"]["geometry"], speed_kph=speed_kph * (0.8 + 0.05 * (n % 8)),
                                interval_s=interval_s, device_id=vehicles[vid]["device_id"], vehicle_id=vid,
                                start_time=time.time(), seed=n, jitter_m=3.0, loop=True))
            for n, route in enumerate(routes)
            if (vid := route["attributes"].get("vehicle_id")) in vehicles
        ]
        while not stop.is_set():
            now = time.time()  # report in real time: the fleet is live on the dispatcher's map
            fixes = [dataclasses.replace(next(sim), fix_time=now) for sim in simulators]
            await http.post("/api/v1/positions", content=encode_batch(fixes),
                            headers={**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
