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
_INGEST_RESULT: dict[str, Any] = {"type": "object", "required": ["accepted", "duplicates", "rejected"], "properties": {
    "accepted": {"type": "integer", "minimum": 0}, "duplicates": {"type": "integer", "minimum": 0},
    "rejected": {"type": "array", "items": {"type": "object", "required": ["index", "reason"], "properties": {
        "index": {"type": "integer", "minimum": 0}, "reason": {"type": "string"}}}}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/vnd.api+json": {"schema": _ERRORS}}}


# Answers of every authenticated position endpoint.
_AUTH = {"401": _error("no, bad or expired token"), "403": _error("the account may not do this")}
# Answers of every endpoint that reads a body (capped while it streams in; gzip accepted).
_BODY = {"413": _error("the body is over the endpoint's cap"), "415": _error("unsupported Content-Encoding")}
_POSITION = {"type": "array", "prefixItems": [{"type": "number", "minimum": -180, "maximum": 180},
                                              {"type": "number", "minimum": -90, "maximum": 90}],
             "items": {"type": "number"}, "minItems": 2, "maxItems": 3}
_RING = {"type": "array", "items": _POSITION, "minItems": 4}
_FEATURE_GEOMETRY = {"oneOf": [
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"enum": ["Polygon"]}, "coordinates": {"type": "array", "items": _RING, "minItems": 1}}},
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"enum": ["MultiPolygon"]},
        "coordinates": {"type": "array", "items": {"type": "array", "items": _RING, "minItems": 1}, "minItems": 1}}},
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"enum": ["Point"]}, "coordinates": _POSITION}},
    {"type": "object", "required": ["type", "coordinates"], "properties": {
        "type": {"enum": ["LineString"]}, "coordinates": {"type": "array", "items": _POSITION, "minItems": 2}}},
]}
_FEATURE = {"type": "object", "required": ["type", "geometry"], "properties": {
    "type": {"enum": ["Feature"]}, "id": {"type": ["string", "number"], "description": "a string id becomes the "
                                          "record id, so importing a file twice creates nothing new"},
    "geometry": _FEATURE_GEOMETRY,
    "properties": {"type": ["object", "null"], "description": "fields of the geofence or route (name, kind, …)"}}}
_GEOJSON_UPLOAD = {"oneOf": [
    {"type": "object", "required": ["type", "features"], "properties": {
        "type": {"enum": ["FeatureCollection"]}, "features": {"type": "array", "items": _FEATURE, "maxItems": 5000}}},
    _FEATURE,
]}
_IMPORT_RESULT = {"type": "object", "required": ["created", "rejected"], "properties": {
    "created": {"type": "array", "items": {"type": "object", "required": ["index", "type", "id"], "properties": {
        "index": {"type": "integer"}, "type": {"type": "string", "enum": ["geofences", "routes"]},
        "id": {"type": "string"}}}},
    "rejected": {"type": "array", "items": {"type": "object", "required": ["index", "reason"], "properties": {
        "index": {"type": "integer"}, "reason": {"type": "string"},
        "pointer": {"type": "string", "description": "RFC 6901, into the upload"}}}}}}
_OSMAND_FORM = {"type": "object", "additionalProperties": {"type": "string"}, "properties": {
    "id": {"type": "string"}, "lat": {"type": "string"}, "lon": {"type": "string"}}}


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
                "responses": {"200": {"description": "counts; each refused fix with its reason (a value the "
                                                     "system cannot store names its JSON pointer)",
                                      "content": {_JSON: {"schema": _INGEST_RESULT}}},
                              "400": _error("not a batch"), **_AUTH, **_BODY},
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
                    "400": _error("bad parameter"), **_AUTH},
            },
        },
        "/api/v1/positions/latest": {"get": {
            "summary": "The newest fix of every vehicle, or of those named (whatever its age)",
            "parameters": [_query("vehicle_id", "comma-separated vehicle ids (default: every vehicle)")],
            "responses": {"200": {"description": "one fix per vehicle that has reported, by vehicle id", "content": {
                _JSON: {"schema": {"type": "object", "properties": {
                    "data": {"type": "array", "items": _FIX}, "meta": {"type": "object"}}}}}},
                "400": _error("bad parameter"), **_AUTH},
        }},
        "/api/v1/events": {"get": {
            "summary": "Geofence enter/exit and overspeed events computed on ingest",
            "parameters": [_query("vehicle_id", "only this vehicle"), *_RANGE,
                           _query("kind", "only this kind", {"type": "string", "enum": list(EVENT_KINDS)})],
            "responses": {"200": {"description": "events in time order", "content": {_JSON: {"schema": {
                "type": "object", "properties": {"data": {"type": "array", "items": _EVENT}}}}}},
                "400": _error("bad parameter"), **_AUTH},
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
                **({"requestBody": {"required": False, "content": {
                    "application/x-www-form-urlencoded": {"schema": _OSMAND_FORM},
                    _JSON: {"schema": {"type": "object", "description": "Traccar Client JSON: device_id and "
                                       "location.coords.latitude/longitude, timestamp, …"}}}}}
                   if method == "post" else {}),
                "responses": {"200": {"description": "stored (or a duplicate)", "content": {_JSON: {"schema": {
                                  "type": "object", "required": ["accepted", "duplicates"], "properties": {
                                      "accepted": {"type": "integer"}, "duplicates": {"type": "integer"}}}}}},
                              "400": _error("bad position"),
                              "403": _error("account disabled"), "404": _error("unknown device"),
                              "409": _error("device id registered more than once"), **_BODY},
            } for method in ("get", "post")
        },
        "/api/v1/reports/trips": {"get": {
            "summary": "Trips (>= 500 m and >= 300 s between stops)",
            "parameters": [_query("vehicle_id", "the vehicle", required=True), *_RANGE],
            "responses": {"200": {"description": "trips", "content": {_JSON: {"schema": report}}},
                          "400": _error("bad parameter"), "404": _error("no such vehicle"), **_AUTH},
        }},
        "/api/v1/reports/stops": {"get": {
            "summary": "Stops (>= 300 s below 3.7 km/h)",
            "parameters": [_query("vehicle_id", "the vehicle", required=True), *_RANGE],
            "responses": {"200": {"description": "stops", "content": {_JSON: {"schema": report}}},
                          "400": _error("bad parameter"), "404": _error("no such vehicle"), **_AUTH},
        }},
        "/api/v1/import/gpx": {"post": {
            "summary": "Import the track points of a GPX file as a vehicle's positions",
            "parameters": [_query("vehicle_id", "the vehicle", required=True)],
            "requestBody": {"required": True, "content": {"application/gpx+xml": {"schema": {"type": "string"}}}},
            "responses": {"200": {"description": "ingest counts", "content": {_JSON: {"schema": {
                              **_INGEST_RESULT, "required": [*_INGEST_RESULT["required"], "points"], "properties": {
                                  **_INGEST_RESULT["properties"], "points": {"type": "integer", "minimum": 0}}}}}},
                          "400": _error("not GPX"), "404": _error("no such vehicle"), **_AUTH, **_BODY},
        }},
        "/api/v1/import/geojson": {"post": {
            "summary": "Import a FeatureCollection: polygons (or points with radius_m) as geofences, lines as routes",
            "parameters": [_query("collection", "import everything as this collection",
                                  {"type": "string", "enum": ["geofences", "routes"]})],
            "requestBody": {"required": True, "content": {"application/geo+json": {"schema": _GEOJSON_UPLOAD},
                                                          _JSON: {"schema": _GEOJSON_UPLOAD}}},
            "responses": {"201": {"description": "records created; each refused feature with its reason",
                                  "content": {_JSON: {"schema": _IMPORT_RESULT}}},
                          "200": {"description": "nothing created", "content": {_JSON: {"schema": _IMPORT_RESULT}}},
                          "400": _error("not GeoJSON"), **_AUTH, **_BODY},
        }},
    }
