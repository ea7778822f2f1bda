"""Trip and stop reports over a vehicle's fixes, with Traccar's defaults, and their endpoints.

A fix is *moving* when its speed (reported, or else derived from the previous fix) is at least
`speed_threshold_kph`. A run of non-moving fixes lasting `min_stop_duration_s` or more is a
stop; it lasts from its first fix until the vehicle moves again. Stops and gaps in the data of
`max_gap_s` or more split the track into trips; a trip counts when it covers at least
`min_trip_distance_m` in at least `min_trip_duration_s`. Shorter halts stay inside the trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server_stub.auth import AuthError
from server_stub.http_util import (
    ApiError,
    error_response,
    json_ok,
    principal,
    service,
    tenant_of,
    text_param,
    time_range,
)
from server_stub.positions import MAX_QUERY_LIMIT, Fix, iso
from storage.geometry import EARTH_RADIUS_M


@dataclass(frozen=True)
class ReportSettings:
    min_trip_distance_m: float = 500.0
    min_trip_duration_s: float = 300.0
    min_stop_duration_s: float = 300.0
    speed_threshold_kph: float = 3.7  # 2 knots
    max_gap_s: float = 3600.0  # no data for this long ends a trip


DEFAULTS = ReportSettings()


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def speeds(fixes: Sequence[Fix]) -> list[float]:
    """Each fix's speed in km/h: reported, or derived from the distance and time since the previous fix."""
    result: list[float] = []
    for i, fix in enumerate(fixes):
        if fix.speed_kph is not None:
            result.append(fix.speed_kph)
        elif i == 0:
            result.append(0.0)
        else:
            prev = fixes[i - 1]
            elapsed = fix.t - prev.t
            result.append(distance_m(prev.lat, prev.lon, fix.lat, fix.lon) / elapsed * 3.6 if elapsed > 0 else 0.0)
    return result


def _stationary_runs(moving: Sequence[bool]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for i, is_moving in enumerate(moving):
        if not is_moving and start is None:
            start = i
        elif is_moving and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(moving) - 1))
    return runs


def _stop_runs(fixes: Sequence[Fix], moving: Sequence[bool], settings: ReportSettings) -> list[tuple[int, int]]:
    found = []
    for a, b in _stationary_runs(moving):
        end = fixes[b + 1].t if b + 1 < len(fixes) else fixes[b].t
        if end - fixes[a].t >= settings.min_stop_duration_s:
            found.append((a, b))
    return found


def stops(fixes: Sequence[Fix], settings: ReportSettings = DEFAULTS) -> list[dict[str, Any]]:
    """Stops of a vehicle, in time order; `fixes` must be one vehicle's, sorted by time."""
    moving = [s >= settings.speed_threshold_kph for s in speeds(fixes)]
    result = []
    for a, b in _stop_runs(fixes, moving, settings):
        end = fixes[b + 1].t if b + 1 < len(fixes) else fixes[b].t
        result.append({"start_time": iso(fixes[a].t), "end_time": iso(end), "duration_s": end - fixes[a].t,
                       "lat": fixes[a].lat, "lon": fixes[a].lon, "points": b - a + 1})
    return result


def trips(fixes: Sequence[Fix], settings: ReportSettings = DEFAULTS) -> list[dict[str, Any]]:
    """Trips of a vehicle, in time order; `fixes` must be one vehicle's, sorted by time."""
    n = len(fixes)
    if n < 2:
        return []
    speed = speeds(fixes)
    moving = [s >= settings.speed_threshold_kph for s in speed]
    stop_runs = _stop_runs(fixes, moving, settings)
    # (last index of the trip before, first index of the trip after) for every stop and data gap.
    boundaries = [(a, b + 1) for a, b in stop_runs]
    for i in range(n - 1):
        if fixes[i + 1].t - fixes[i].t >= settings.max_gap_s and not any(a <= i <= b for a, b in stop_runs):
            boundaries.append((i, i + 1))
    boundaries.sort()
    spans: list[tuple[int, int]] = []
    start = 0
    for end, following in boundaries:
        if end > start:
            spans.append((start, end))
        start = max(start, following)
    if start < n - 1:
        spans.append((start, n - 1))
    result = []
    for s, e in spans:
        if not any(moving[s:e + 1]):
            continue
        distance = sum(distance_m(fixes[i].lat, fixes[i].lon, fixes[i + 1].lat, fixes[i + 1].lon) for i in range(s, e))
        duration = fixes[e].t - fixes[s].t
        if distance < settings.min_trip_distance_m or duration < settings.min_trip_duration_s:
            continue
        result.append({
            "start_time": iso(fixes[s].t), "end_time": iso(fixes[e].t), "duration_s": duration,
            "distance_m": round(distance, 1), "max_speed_kph": max(speed[s:e + 1]),
            "avg_speed_kph": round(distance / duration * 3.6, 2) if duration > 0 else 0.0,
            "start_lat": fixes[s].lat, "start_lon": fixes[s].lon, "end_lat": fixes[e].lat, "end_lon": fixes[e].lon,
            "points": e - s + 1,
        })
    return result


# -- endpoints --------------------------------------------------------------------------------------


async def _report(request: Request, kind: str) -> Response:
    try:
        who = await principal(request)
        tenant = tenant_of(request, who)
        vehicle_id = text_param(request, "vehicle_id")  # NUL and friends: 400, not a database error
        if not vehicle_id:
            raise ApiError(400, "bad parameter", "vehicle_id is required")
        start, end = time_range(request)
        fixes = await service(request).fixes(tenant, vehicle_id, start, end, MAX_QUERY_LIMIT + 1)
    except (ApiError, AuthError) as exc:
        return error_response(exc)
    truncated = len(fixes) > MAX_QUERY_LIMIT
    fixes = fixes[:MAX_QUERY_LIMIT]
    data = trips(fixes) if kind == "trips" else stops(fixes)
    return json_ok({"data": data, "meta": {"vehicle_id": vehicle_id, "from": iso(start), "to": iso(end),
                                           "fixes": len(fixes), "truncated": truncated, "settings": asdict(DEFAULTS)}})


async def trips_endpoint(request: Request) -> Response:
    """GET /api/v1/reports/trips?vehicle_id=&from=&to="""
    return await _report(request, "trips")


async def stops_endpoint(request: Request) -> Response:
    """GET /api/v1/reports/stops?vehicle_id=&from=&to="""
    return await _report(request, "stops")
