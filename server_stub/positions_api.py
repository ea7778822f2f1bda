"""The position endpoints: batch ingest, reads and exports, events, and the wiring of their siblings.

`POST /api/v1/positions` takes `{"positions": [fix, …]}` (optionally gzip) and answers
`{"accepted": n, "duplicates": n, "rejected": [{"index": i, "reason": "…"}]}`: good fixes are
kept even when others in the batch are refused, and a re-sent batch only counts duplicates.
`GET /api/v1/positions?vehicle_id=&from=&to=&format=json|geojson|gpx|csv` reads them back.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from server_stub import imports, live, osmand, reports
from server_stub.auth import AuthError
from server_stub.db.base import Database
from server_stub.exports import to_csv, to_geojson, to_gpx, to_json
from server_stub.http_util import (
    ApiError,
    content_disposition,
    error_response,
    int_param,
    json_ok,
    method_route,
    principal,
    read_body,
    service,
    tenant_of,
    text_param,
    time_range,
)
from server_stub.positions import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, BatchTooLarge, PositionService, iso
from storage.events import EVENT_KINDS

FORMATS = ("json", "geojson", "gpx", "csv")


async def start(state: State, db: Database) -> PositionService:
    """Create the position service (partition upkeep included) for an app; call from its lifespan."""
    positions = PositionService(db, publish=live.publisher(state))
    await positions.start()
    state.positions = positions
    return positions


async def ingest_positions(request: Request) -> Response:
    try:
        who = await principal(request, ingest=True)
        tenant = tenant_of(request, who)
        body = await read_body(request)
        try:
            # orjson without the whole-body policy: parse_fix applies it to what it stores (ids and
            # attributes), so one bad fix is one rejection and the hot path walks no value twice.
            payload: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "bad body", f"the body is not valid JSON: {exc}") from None
        batch = payload.get("positions") if isinstance(payload, dict) else None
        if not isinstance(batch, list):
            raise ApiError(400, "bad body", 'expected {"positions": [{…}, …]}')
        try:
            result = await service(request).ingest(tenant, batch)
        except BatchTooLarge as exc:
            raise ApiError(413, "batch too large", str(exc)) from None
    except (ApiError, AuthError) as exc:
        return error_response(exc)
    return Response(orjson.dumps(result.body()), media_type="application/json")


async def read_positions(request: Request) -> Response:
    try:
        who = await principal(request)
        tenant = tenant_of(request, who)
        fmt = request.query_params.get("format", "json")
        if fmt not in FORMATS:
            raise ApiError(400, "bad parameter", f"format must be one of {', '.join(FORMATS)}")
        vehicle_id = text_param(request, "vehicle_id")
        if vehicle_id is None and fmt == "gpx":
            raise ApiError(400, "bad parameter", "vehicle_id is required for GPX (one track per vehicle)")
        start, end = time_range(request)
        limit = int_param(request, "limit", DEFAULT_QUERY_LIMIT, 1, MAX_QUERY_LIMIT)
        positions = service(request)
        fixes = await positions.fixes(tenant, vehicle_id, start, end, limit + 1)
        vehicle = await positions.vehicle(tenant, vehicle_id) if fmt == "gpx" and vehicle_id else None
    except (ApiError, AuthError) as exc:
        return error_response(exc)
    truncated = len(fixes) > limit
    fixes = fixes[:limit]
    headers = {"X-Truncated": "true"} if truncated else {}
    stem = f"positions-{vehicle_id or 'all'}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(start))}"
    if fmt == "geojson":
        return Response(to_geojson(fixes), media_type="application/geo+json", headers=headers)
    if fmt == "gpx":
        name = (vehicle or {}).get("name") or vehicle_id or "track"
        headers["Content-Disposition"] = content_disposition(f"{stem}.gpx")
        return Response(to_gpx(fixes, name=str(name), created=time.time()), media_type="application/gpx+xml",
                        headers=headers)
    if fmt == "csv":
        headers["Content-Disposition"] = content_disposition(f"{stem}.csv")
        return Response(to_csv(fixes), media_type="text/csv; charset=utf-8", headers=headers)
    meta = {"count": len(fixes), "limit": limit, "truncated": truncated, "from": iso(start), "to": iso(end)}
    return Response(to_json(fixes, meta), media_type="application/json", headers=headers)


async def latest_positions(request: Request) -> Response:
    """GET /api/v1/positions/latest[?vehicle_id=a,b]: the newest fix of every vehicle (or of those
    named), whatever its age: what a map needs when it opens."""
    try:
        who = await principal(request)
        tenant = tenant_of(request, who)
        named = text_param(request, "vehicle_id")
        wanted = {part.strip() for part in named.split(",") if part.strip()} if named else None
        fixes = await service(request).latest_fixes(tenant)
    except (ApiError, AuthError) as exc:
        return error_response(exc)
    if wanted is not None:
        fixes = [fix for fix in fixes if fix.vehicle_id in wanted]
    return Response(to_json(fixes, {"count": len(fixes)}), media_type="application/json")


async def read_events(request: Request) -> Response:
    try:
        who = await principal(request)
        tenant = tenant_of(request, who)
        kind = request.query_params.get("kind") or None
        if kind is not None and kind not in EVENT_KINDS:
            raise ApiError(400, "bad parameter", f"kind must be one of {', '.join(EVENT_KINDS)}")
        start, end = time_range(request)
        limit = int_param(request, "limit", DEFAULT_QUERY_LIMIT, 1, MAX_QUERY_LIMIT)
        events = await service(request).events(tenant, text_param(request, "vehicle_id"), start, end, kind,
                                               limit + 1)
    except (ApiError, AuthError) as exc:
        return error_response(exc)
    return json_ok({"data": events[:limit], "meta": {"count": min(len(events), limit), "truncated": len(events) > limit,
                                                     "from": iso(start), "to": iso(end)}})


# Before rest.routes in the app: its /api/v1/{collection} pattern would shadow these.
routes: list[BaseRoute] = [
    method_route("/api/v1/positions", {"GET": read_positions, "POST": ingest_positions}),
    Route("/api/v1/positions/latest", latest_positions, methods=["GET"]),
    Route("/api/v1/events", read_events, methods=["GET"]),
    Route("/api/v1/osmand", osmand.osmand_endpoint, methods=["GET", "POST"]),
    Route("/api/v1/reports/trips", reports.trips_endpoint, methods=["GET"]),
    Route("/api/v1/reports/stops", reports.stops_endpoint, methods=["GET"]),
    Route("/api/v1/import/gpx", imports.import_gpx, methods=["POST"]),
    Route("/api/v1/import/geojson", imports.import_geojson, methods=["POST"]),
    WebSocketRoute("/api/v1/live", live.live_endpoint),
]
