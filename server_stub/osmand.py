"""`GET,POST /api/v1/osmand`: the OsmAnd / Traccar Client phone protocol.

No token: the device id (`id` or `deviceid`) is the credential. It must be the `device_id` of a
vehicle; the vehicle names the tenant. Device ids are unique across the server (server_stub/
devices.py): the tenant holding the id's claim gets the fix. Every id that cannot be used (not
registered, held by no single tenant, on several vehicles, its tenant disabled) gets the same
404, so a stranger cannot probe which ids exist. Parameters come from the query string, a form
body, or the JSON body the newer Traccar Client posts. `speed` is in knots, as Traccar reads
it; `timestamp` is Unix seconds, Unix milliseconds or ISO 8601 (the server's clock when
absent). Every other parameter is kept in the fix's attributes.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from server_stub import devices
from server_stub.exports import KNOT_KPH, MPS_KPH
from server_stub.http_util import ApiError, error_response, json_ok, parse_json, read_body, service
from sync.values import ValuePolicyError, check_fields

MAX_OSMAND_BODY = 64 * 1024
_KNOWN = {"id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading", "altitude",
          "accuracy"}


def _typed(value: str) -> Any:
    """Attribute values as Traccar keeps them: numbers and booleans when they look like one."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if number == number and abs(number) != float("inf") else value


def _number(params: dict[str, str], *names: str) -> float | None:
    for name in names:
        raw = params.get(name)
        if raw is None or raw == "":
            continue
        try:
            return float(raw)
        except ValueError:
            raise ApiError(400, "bad parameter", f"{name} must be a number, got {raw!r}") from None
    return None


def _from_traccar_json(body: Any) -> dict[str, str]:
    """The Traccar Client JSON body (`{"device_id", "location": {"coords": …}}`) as OsmAnd parameters."""
    if not isinstance(body, dict):
        raise ApiError(400, "bad body", "expected a JSON object")
    nested = body.get("location")
    location: dict[str, Any] = nested if isinstance(nested, dict) else body
    found = location.get("coords")
    coords: dict[str, Any] = found if isinstance(found, dict) else {}
    params: dict[str, str] = {}

    def put(name: str, value: Any) -> None:
        if value is not None and not isinstance(value, (dict, list)):
            params[name] = str(value).lower() if isinstance(value, bool) else str(value)

    put("id", body.get("device_id") or body.get("id"))
    put("lat", coords.get("latitude"))
    put("lon", coords.get("longitude"))
    put("timestamp", location.get("timestamp"))
    speed = coords.get("speed")
    if isinstance(speed, (int, float)) and speed >= 0:  # m/s here; -1 means unknown
        params["speed"] = repr(speed * MPS_KPH / KNOT_KPH)
    heading = coords.get("heading")
    if isinstance(heading, (int, float)) and heading >= 0:
        put("bearing", heading)
    put("altitude", coords.get("altitude"))
    put("accuracy", coords.get("accuracy"))
    battery = location.get("battery")
    if isinstance(battery, dict) and isinstance(battery.get("level"), (int, float)) and battery["level"] >= 0:
        params["batt"] = repr(round(battery["level"] * 100, 1))
        put("charge", battery.get("is_charging"))
    put("is_moving", location.get("is_moving"))
    put("odometer", location.get("odometer"))
    put("event", location.get("event"))
    return params


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.method != "POST":
        return params
    body = await read_body(request, MAX_OSMAND_BODY)
    if not body.strip():
        return params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or body.lstrip().startswith(b"{"):
        params.update(_from_traccar_json(parse_json(body)))
    else:  # application/x-www-form-urlencoded, or a bare query string in the body
        try:
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise ApiError(400, "bad body", "the form body is not UTF-8") from None
    return params


def _checked(params: dict[str, str]) -> dict[str, str]:
    """Query strings and forms can carry %00 and overlong values too: the policy of every body."""
    try:
        check_fields(params)
    except ValuePolicyError as exc:
        raise ApiError(400, "bad parameter", exc.reason, exc.pointer) from None
    return params


def fix_from_params(params: dict[str, str], now: float) -> dict[str, Any]:
    """OsmAnd parameters as one fix in the ingest wire format (without the vehicle)."""
    lat, lon = _number(params, "lat"), _number(params, "lon")
    location = params.get("location")
    if (lat is None or lon is None) and location:
        parts = location.split(",")
        if len(parts) != 2:
            raise ApiError(400, "bad parameter", "location must be 'lat,lon'")
        lat, lon = _number({"lat": parts[0].strip()}, "lat"), _number({"lon": parts[1].strip()}, "lon")
    if lat is None or lon is None:
        raise ApiError(400, "bad parameter", "lat and lon (or location=lat,lon) are required")
    timestamp = params.get("timestamp")
    speed_knots = _number(params, "speed")
    fix: dict[str, Any] = {
        "lat": lat, "lon": lon,
        "fix_time": timestamp if timestamp not in (None, "") else now,
        "speed_kph": None if speed_knots is None else speed_knots * KNOT_KPH,
        "course": _number(params, "bearing", "heading"),
        "altitude": _number(params, "altitude"),
        "accuracy": _number(params, "accuracy"),
    }
    attributes = {key: _typed(value) for key, value in params.items() if key not in _KNOWN and key != "token"}
    if attributes:
        fix["attributes"] = attributes
    return fix


async def osmand_endpoint(request: Request) -> Response:
    try:
        params = _checked(await _params(request))
        device_id = params.get("id") or params.get("deviceid")
        if not device_id:
            raise ApiError(400, "bad parameter", "id (the device id) is required")
        fix = fix_from_params(params, time.time())
        positions = service(request)
        db = request.app.state.db
        found = await devices.holder(db, device_id)
        if found is None or await db.fetchval("SELECT disabled FROM customers WHERE id = ?", (found[0],)):
            raise ApiError(404, "unknown device",
                           f"device id {device_id!r} is not registered; set it as a vehicle's device_id first")
        tenant_id, vehicle_id = found
        fix.update(vehicle_id=vehicle_id, device_id=device_id)
        result = await positions.ingest(tenant_id, [fix])
        if result.rejected:
            raise ApiError(400, "position rejected", result.rejected[0]["reason"])
    except ApiError as exc:
        return error_response(exc)
    return json_ok({"accepted": result.accepted, "duplicates": result.duplicates})
