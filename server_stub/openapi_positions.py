"""OpenAPI paths of the position endpoints (ingest, reads, events, OsmAnd, reports, imports)."""

from __future__ import annotations

from typing import Any

from storage.events import EVENT_KINDS

_ERRORS = {"$ref": "#/components/schemas/Errors"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_FIX = {
    "type": "object",
    "required": ["fix_time", "lat", "lon"],
    "description": "vehicle_id, or a device_id registered on a vehicle of the caller's tenant, names the vehicle",
    "properties": {
        "vehicle_id": {"type": ["string", "null"]},
        "device_id": {"type": ["string", "null"]},
        "fix_time": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
                     "description": "ISO 8601 (no zone: UTC), Unix seconds or Unix milliseconds"},
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "speed_kph": _NUMBER_OR_NULL, "course": _NUMBER_OR_NULL, "altitude": _NUMBER_OR_NULL,
        "accuracy": _NUMBER_OR_NULL, "attributes": {"type": ["object", "null"]},
    },
}
_EVENT = {"type": "object", "properties": {
    "id": {"type": "integer"}, "vehicle_id": {"type": "string"}, "kind": {"type": "string", "enum": list(EVENT_KINDS)},
    "event_time": {"type": "string", "format": "date-time"}, "geofence_id": {"type": ["string", "null"]},
    "lon": {"type": "number"}, "lat": {"type": "number"}, "speed_kph": _NUMBER_OR_NULL,
    "attributes": {"type": "object"}}}
_INGEST_RESULT = {"type": "object", "properties": {
    "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
    "rejected": {"type": "array", "items": {"type": "object", "properties": {
        "index": {"type": "integer"}, "reason": {"type": "string"}}}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/vnd.api+json": {"schema": _ERRORS}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


_RANGE = [
    _query("from", "start, inclusive (ISO 8601 or Unix seconds/ms); default: 24 h before `to`"),
    _query("to", "end, exclusive (ISO 8601 or Unix seconds/ms); default: now"),
]
_JSON = "application/json"


def paths() -> dict[str, Any]:
    report = {"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}},
                                               "meta": {"type": "object"}}}
    return {
        "/api/v1/positions": {
            "post": {
                "summary": "Upload a batch of fixes (idempotent on vehicle and fix_time; gzip accepted)",
                "requestBody": {"required": True, "content": {_JSON: {"schema": {
                    "type": "object", "required": ["positions"],
                    "properties": {"positions": {"type": "array", "items": _FIX}}}}}},
                "responses": {"200": {"description": "counts; each refused fix with its reason",
                                      "content": {_JSON: {"schema": _INGEST_RESULT}}},
                              "400": _error("not a batch"), "401": _error("no or bad token"),
                              "403": _error("may not upload positions"), "413": _error("body or batch too large")},
            },
            "get": {
                "summary": "Fixes of a vehicle in a time range (the plan's retention applies)",
                "parameters": [_query("vehicle_id", "the vehicle (required for gpx)"), *_RANGE,
                               _query("format", "json (default), geojson, gpx (GPX 1.1) or csv",
                                      {"type": "string", "enum": ["json", "geojson", "gpx", "csv"]}),
                               _query("limit", "at most this many fixes (default 10000)",
                                      {"type": "integer", "minimum": 1, "maximum": 100_000})],
                "responses": {"200": {"description": "fixes in time order", "content": {
                    _JSON: {"schema": {"type": "object", "properties": {
                        "data": {"type": "array", "items": _FIX}, "meta": {"type": "object"}}}},
                    "application/geo+json": {"schema": {"type": "object"}},
                    "application/gpx+xml": {"schema": {"type": "string"}},
                    "text/csv": {"schema": {"type": "string"}}}},
                    "400": _error("bad parameter"), "401": _error("no or bad token")},
            },
        },
        "/api/v1/events": {"get": {
            "summary": "Geofence enter/exit and overspeed events computed on ingest",
            "parameters": [_query("vehicle_id", "only this vehicle"), *_RANGE,
                           _query("kind", "only this kind", {"type": "string", "enum": list(EVENT_KINDS)})],
            "responses": {"200": {"description": "events in time order", "content": {_JSON: {"schema": {
                "type": "object", "properties": {"data": {"type": "array", "items": _EVENT}}}}}},
                "400": _error("bad parameter")},
        }},
        "/api/v1/osmand": {
            method: {
                "summary": "OsmAnd / Traccar Client protocol (no token: the device id must be registered)",
                "security": [],
                "parameters": [_query("id", "device id (or deviceid)"), _query("lat", "latitude"),
                               _query("lon", "longitude"), _query("location", "lat,lon instead of lat and lon"),
                               _query("timestamp", "Unix seconds, Unix ms or ISO 8601; default: now"),
                               _query("speed", "knots"), _query("bearing", "degrees (or heading)"),
                               _query("altitude", "metres"), _query("accuracy", "metres"),
                               _query("batt", "battery %; any other parameter is kept as an attribute")],
                "responses": {"200": {"description": "stored (or a duplicate)"}, "400": _error("bad position"),
                              "403": _error("account disabled"), "404": _error("unknown device"),
                              "409": _error("device id registered more than once")},
            } for method in ("get", "post")
        },
        "/api/v1/reports/trips": {"get": {
            "summary": "Trips (>= 500 m and >= 300 s between stops)",
            "parameters": [_query("vehicle_id", "the vehicle", required=True), *_RANGE],
            "responses": {"200": {"description": "trips", "content": {_JSON: {"schema": report}}},
                          "400": _error("bad parameter")},
        }},
        "/api/v1/reports/stops": {"get": {
            "summary": "Stops (>= 300 s below 3.7 km/h)",
            "parameters": [_query("vehicle_id", "the vehicle", required=True), *_RANGE],
            "responses": {"200": {"description": "stops", "content": {_JSON: {"schema": report}}},
                          "400": _error("bad parameter")},
        }},
        "/api/v1/import/gpx": {"post": {
            "summary": "Import the track points of a GPX file as a vehicle's positions",
            "parameters": [_query("vehicle_id", "the vehicle", required=True)],
            "requestBody": {"required": True, "content": {"application/gpx+xml": {"schema": {"type": "string"}}}},
            "responses": {"200": {"description": "ingest counts", "content": {_JSON: {"schema": _INGEST_RESULT}}},
                          "400": _error("not GPX"), "404": _error("no such vehicle")},
        }},
        "/api/v1/import/geojson": {"post": {
            "summary": "Import a FeatureCollection: polygons (or points with radius_m) as geofences, lines as routes",
            "parameters": [_query("collection", "import everything as this collection",
                                  {"type": "string", "enum": ["geofences", "routes"]})],
            "requestBody": {"required": True, "content": {"application/geo+json": {"schema": {"type": "object"}}}},
            "responses": {"201": {"description": "records created; each refused feature with its reason"},
                          "200": {"description": "nothing created"}, "400": _error("not GeoJSON"),
                          "403": _error("may not change fleet data")},
        }},
    }
