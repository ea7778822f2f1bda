"""A vehicle's track over a time range: from the server when signed in (every device's fixes), merged
with the fixes this device recorded itself (the outbox), so history works offline too."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from storage import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrackPoint:
    t: float
    lon: float
    lat: float
    speed_kph: float | None
    altitude: float | None


@dataclass(frozen=True)
class Track:
    vehicle_id: str
    points: list[TrackPoint]
    source: str  # "local", "server", "server+local"
    detail: str = ""

    def coords(self) -> list[list[float]]:
        return [[p.lon, p.lat] for p in self.points]


def local_track(store: Store, vehicle_id: str, start: float, end: float) -> list[TrackPoint]:
    return [TrackPoint(f.fix_time, f.lon, f.lat, f.speed_kph, f.altitude)
            for f in store.positions.track(vehicle_id, start, end)]


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def server_track(server_url: str, token: str, vehicle_id: str, start: float, end: float, *,
                 timeout: float = 15.0, transport: httpx.BaseTransport | None = None) -> list[TrackPoint]:
    """GET /api/v1/positions?vehicle_id=…&from=…&to=… (JSON); raises httpx errors."""
    with httpx.Client(base_url=server_url.rstrip("/"), timeout=timeout, transport=transport) as http:
        response = http.get("/api/v1/positions", params={"vehicle_id": vehicle_id, "from": start, "to": end,
                                                         "format": "json", "limit": 100_000},
                            headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        rows = response.json().get("data", [])
    return [TrackPoint(_epoch(r["fix_time"]), float(r["lon"]), float(r["lat"]), r.get("speed_kph"), r.get("altitude"))
            for r in rows]


def load_track(store: Store, vehicle_id: str, start: float, end: float,
               server: Callable[[], tuple[str, str] | None] | None = None) -> Track:
    """Local fixes, plus the server's when it can be reached; one point per fix time."""
    points = {p.t: p for p in local_track(store, vehicle_id, start, end)}
    source, detail = "local", ""
    session = server() if server is not None else None
    if session is not None:
        url, token = session
        try:
            remote = server_track(url, token, vehicle_id, start, end)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            detail = f"server history unavailable ({exc}); showing this device's fixes"
            log.info("history for %s from the server failed: %s", vehicle_id, exc)
        else:
            source = "server+local" if points else "server"
            for p in remote:
                points.setdefault(p.t, p)
    return Track(vehicle_id, [points[t] for t in sorted(points)], source, detail)
