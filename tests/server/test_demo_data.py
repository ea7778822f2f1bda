"""`webhost-server demo-data`: the demo tenant, its users and its fleet, inside the demo map."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from server_stub import demo
from server_stub.testing import LiveServer, settings_for
from sync.document import FleetDocument

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


def mbtiles_bounds() -> tuple[float, ...]:
    connection = sqlite3.connect(f"file:{ROOT / 'resources' / 'demo.mbtiles'}?mode=ro", uri=True)
    try:
        (bounds,) = connection.execute("SELECT value FROM metadata WHERE name = 'bounds'").fetchone()
    finally:
        connection.close()
    return tuple(float(part) for part in bounds.split(","))


def coordinates(geometry: dict[str, Any]) -> list[list[float]]:
    found: list[list[float]] = []

    def walk(value: Any) -> None:
        if isinstance(value, list) and value and isinstance(value[0], (int, float)):
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(geometry["coordinates"])
    return found


def test_every_demo_place_is_on_the_shipped_offline_map() -> None:
    west, south, east, north = mbtiles_bounds()
    document = FleetDocument()
    vehicle_ids = demo.build_fleet(document)
    assert len(vehicle_ids) == demo.VEHICLE_COUNT
    points = [point for collection in ("routes", "geofences")
              for record in document.records(collection).values() for point in coordinates(record["geometry"])]
    assert len(points) > 100
    outside = [p for p in points if not (west <= p[0] <= east and south <= p[1] <= north)]
    assert outside == []


def test_demo_data_loads_once_and_the_dispatcher_sees_the_fleet(database_url: str, tmp_path: Path) -> None:
    first = run_cli("demo-data", database_url=database_url, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"demo tenant {demo.TENANT_NAME!r}" in first.stdout and "already loaded" not in first.stdout
    for email in demo.USERS.values():
        assert f"{email}  password: {demo.PASSWORD}" in first.stdout
    second = run_cli("demo-data", database_url=database_url, tmp_path=tmp_path)
    assert second.returncode == 0 and "(already loaded)" in second.stdout

    with LiveServer(settings_for(database_url)) as server, httpx.Client(base_url=server.url) as http:
        login = http.post("/api/v1/auth/token", json={"email": demo.USERS["dispatcher"], "password": demo.PASSWORD})
        assert login.status_code == 200
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        vehicles = http.get("/api/v1/vehicles", params={"page[size]": 100}, headers=headers).json()["data"]
        routes = http.get("/api/v1/routes", params={"page[size]": 100}, headers=headers).json()["data"]
    assert len(vehicles) == demo.VEHICLE_COUNT and len(routes) == demo.VEHICLE_COUNT
    assert {route["attributes"]["vehicle_id"] for route in routes} == {vehicle["id"] for vehicle in vehicles}
