"""Helpers for the position tests: vehicles and geofences over REST, batches, reads, direct DB access."""

from __future__ import annotations

import asyncio
import gzip
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import orjson

from server_stub.db import Database, open_database
from server_stub.testing import LiveServer

T = TypeVar("T")
# A quiet spot in Berlin; 0.001 degree of latitude is ~111 m.
BASE_LON, BASE_LAT = 13.40, 52.50


def now_s() -> float:
    return float(int(time.time()))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def client(server: LiveServer, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def create_vehicle(http: httpx.Client, name: str, device_id: str | None = None, **fields: Any) -> str:
    attrs = {"name": name, **({"device_id": device_id} if device_id else {}), **fields}
    response = http.post("/api/v1/vehicles", json={"data": {"type": "vehicles", "attributes": attrs}})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def square(lon: float, lat: float, half: float) -> dict[str, Any]:
    """A square Polygon centred on (lon, lat), `half` degrees from centre to side."""
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half], [lon - half, lat + half],
            [lon - half, lat - half]]
    return {"type": "Polygon", "coordinates": [ring]}


def create_geofence(http: httpx.Client, name: str, geometry: dict[str, Any], **fields: Any) -> str:
    attrs = {"name": name, "geometry": geometry, **fields}
    response = http.post("/api/v1/geofences", json={"data": {"type": "geofences", "attributes": attrs}})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def post_batch(http: httpx.Client, positions: list[Any], *, compress: bool = False) -> dict[str, Any]:
    body = orjson.dumps({"positions": positions})
    headers = {"Content-Type": "application/json"}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    response = http.post("/api/v1/positions", content=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def read_positions(http: httpx.Client, vehicle_id: str | None, start: float, end: float,
                   fmt: str = "json", **params: Any) -> httpx.Response:
    query = {"from": iso(start), "to": iso(end), "format": fmt, **params}
    if vehicle_id is not None:
        query["vehicle_id"] = vehicle_id
    response = http.get("/api/v1/positions", params=query)
    assert response.status_code == 200, response.text
    return response


def stored(http: httpx.Client, vehicle_id: str | None, start: float | None = None,
           end: float | None = None) -> list[dict[str, Any]]:
    now = now_s()
    data: list[dict[str, Any]] = read_positions(
        http, vehicle_id, now - 20 * 86400 if start is None else start, now + 600 if end is None else end
    ).json()["data"]
    return data


def events(http: httpx.Client, vehicle_id: str | None = None, **params: Any) -> list[dict[str, Any]]:
    now = now_s()
    query: dict[str, Any] = {"from": iso(now - 20 * 86400), "to": iso(now + 600), **params}
    if vehicle_id is not None:
        query["vehicle_id"] = vehicle_id
    response = http.get("/api/v1/events", params=query)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def track(vehicle_id: str, start: float, points: list[tuple[float, float]], *, step: float = 10.0,
          speed_kph: float | None = 30.0) -> list[dict[str, Any]]:
    """Fixes along (lon, lat) points, `step` seconds apart."""
    return [{"vehicle_id": vehicle_id, "fix_time": iso(start + i * step), "lon": lon, "lat": lat,
             "speed_kph": speed_kph} for i, (lon, lat) in enumerate(points)]


def line(lon1: float, lat1: float, lon2: float, lat2: float, n: int) -> list[tuple[float, float]]:
    return [(lon1 + (lon2 - lon1) * i / (n - 1), lat1 + (lat2 - lat1) * i / (n - 1)) for i in range(n)]


def close(a: float | None, b: float | None, tolerance: float = 1e-4) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def with_db(server: LiveServer, action: Callable[[Database], Awaitable[T]]) -> T:
    """Run `action` against the server's database on a connection of its own."""

    async def run() -> T:
        db = await open_database(server.settings.database_url)
        try:
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(run())
