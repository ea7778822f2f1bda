"""The OpenAPI description of the REST API, generated from the shared document schema.

It is exact enough to fuzz against (tests/server/test_schemathesis.py): request schemas carry
the rules of sync.schema and sync.values, so schema-valid requests reach the write path, and
every answer the server gives, errors included, is described with its status and media type.
"""

from __future__ import annotations

from typing import Any

from server_stub import openapi_positions
from server_stub.http_util import MAX_PAGE_NUMBER
from server_stub.rest import MAX_PAGE_SIZE
from sync.schema import COLLECTIONS, FIELDS, FieldSpec
from sync.values import ID_PATTERN, MAX_KEY_CHARS

JSON_API = "application/vnd.api+json"
ERRORS_REF = {"$ref": "#/components/schemas/Errors"}
RECORD_ID = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}

_LON = {"type": "number", "minimum": -180, "maximum": 180}
_LAT = {"type": "number", "minimum": -90, "maximum": 90}
_POSITION = {"type": "array", "prefixItems": [_LON, _LAT], "items": {"type": "number"}, "minItems": 2,
             "maxItems": 3, "description": "[lon, lat] or [lon, lat, altitude] (RFC 7946, WGS84)"}
_RING = {"type": "array", "items": _POSITION, "minItems": 4,
         "description": "closed: the last position repeats the first"}
GEOMETRIES: dict[str, dict[str, Any]] = {
    "Point": {"type": "object", "required": ["type", "coordinates"],
              "properties": {"type": {"enum": ["Point"]}, "coordinates": _POSITION}},
    "LineString": {"type": "object", "required": ["type", "coordinates"],
                   "properties": {"type": {"enum": ["LineString"]},
                                  "coordinates": {"type": "array", "items": _POSITION, "minItems": 2}}},
    "Polygon": {"type": "object", "required": ["type", "coordinates"],
                "properties": {"type": {"enum": ["Polygon"]},
                               "coordinates": {"type": "array", "items": _RING, "minItems": 1}}},
    "MultiPolygon": {"type": "object", "required": ["type", "coordinates"],
                     "properties": {"type": {"enum": ["MultiPolygon"]}, "coordinates": {
                         "type": "array", "minItems": 1, "items": {"type": "array", "items": _RING, "minItems": 1}}}},
}
_STOP = {"type": "object", "required": ["name", "lon", "lat"], "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 200}, "lon": _LON, "lat": _LAT}}
_KIND_TYPES: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "bool": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "email": {"type": "string", "format": "email"},
    "stops": {"type": "array", "items": _STOP},
}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    if spec.kind == "geometry":
        kinds = [{"$ref": f"#/components/schemas/{kind}"} for kind in spec.geometry_types or GEOMETRIES]
        return {"description": "GeoJSON geometry (RFC 7946, WGS84)", **(kinds[0] if len(kinds) == 1 else
                                                                         {"oneOf": kinds})}
    schema: dict[str, Any] = dict(_KIND_TYPES.get(spec.kind) or {"type": "string"})
    if spec.choices:
        schema["enum"] = list(spec.choices)
    if spec.max_length is not None:
        schema["maxLength"] = spec.max_length
    if spec.exclusive_minimum is not None:
        schema["exclusiveMinimum"] = spec.exclusive_minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    if spec.references:
        schema["description"] = f"id of one of the tenant's {spec.references}"
    if spec.required and schema.get("type") == "string":
        schema["minLength"] = 1
        schema["pattern"] = r"\S"  # a name of blanks is no name
    return schema


def _attributes(collection: str) -> dict[str, Any]:
    """A record's fields as a write must give them: other fields are kept too (any JSON value)."""
    properties = {name: _field_schema(spec) for name, spec in FIELDS[collection].items()}
    required = [name for name, spec in FIELDS[collection].items() if spec.required]
    return {"type": "object", "properties": properties, "required": required,
            "propertyNames": {"minLength": 1, "maxLength": MAX_KEY_CHARS}}


def _changes(collection: str) -> dict[str, Any]:
    """A PATCH: only the fields to change; null removes one."""
    properties = {name: {"anyOf": [_field_schema(spec), {"type": "null"}]} if not spec.required
                  else _field_schema(spec) for name, spec in FIELDS[collection].items()}
    return {"type": "object", "properties": properties,
            "propertyNames": {"minLength": 1, "maxLength": MAX_KEY_CHARS}}


def _write(collection: str, attributes: dict[str, Any], *, create: bool) -> dict[str, Any]:
    data = {"type": "object", "required": ["type", "attributes"] if create else ["type"], "properties": {
        "type": {"type": "string", "enum": [collection]},
        "id": {**RECORD_ID, "description": "the record id (a UUID, say); the server makes one when left out"
               if create else "the id in the URL, if given"},
        "attributes": attributes}}
    return {"type": "object", "required": ["data"], "properties": {"data": data}}


def _resource(collection: str) -> dict[str, Any]:
    """A record as read: its fields as stored. A record that breaks a rule (written offline, say)
    is kept and flagged in meta, so read attributes are only promised to be an object."""
    return {"type": "object", "required": ["type", "id", "attributes", "meta", "links"], "properties": {
        "type": {"type": "string", "enum": [collection]},
        "id": {"type": "string"},
        "attributes": {"type": "object", "description": f"the fields of #/components/schemas/{collection}"},
        "meta": {"type": "object", "required": ["valid", "projection_error"], "properties": {
            "valid": {"type": "boolean"}, "projection_error": {"type": ["string", "null"]}}},
        "links": {"type": "object", "required": ["self"], "properties": {"self": {"type": "string"}}}}}


def error(description: str, media_type: str = JSON_API) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": ERRORS_REF}}}


# Answers every authenticated JSON:API operation can give.
AUTH_ERRORS = {"401": error("no, bad or expired token"), "403": error("the account may not do this")}
TOO_LARGE = error("the body is over the endpoint's cap (refused before it is read whole)")


def _json_api(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON_API: {"schema": schema}}}


def _collection_paths(collection: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{collection}Resource"}
    one = {"type": "object", "required": ["data"], "properties": {"data": ref}}
    page = {"type": "object", "required": ["data", "links", "meta"], "properties": {
        "data": {"type": "array", "items": ref},
        "links": {"type": "object", "required": ["self"], "properties": {
            "self": {"type": "string"}, "next": {"type": "string"}, "prev": {"type": "string"}}},
        "meta": {"type": "object", "required": ["total", "page"], "properties": {
            "total": {"type": "integer", "minimum": 0}, "page": {"type": "object", "properties": {
                "number": {"type": "integer"}, "size": {"type": "integer"}}}}}}}
    params = [
        {"name": "filter[updated_since]", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "page[size]", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}},
        {"name": "page[number]", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                           "maximum": MAX_PAGE_NUMBER}},
    ]
    if collection in ("routes", "geofences"):
        params.append({"name": "filter[bbox]", "in": "query", "description": "min_lon,min_lat,max_lon,max_lat",
                       "schema": {"type": "string"}})
    singular = collection[:-1]
    write_errors = {**AUTH_ERRORS, "400": error("not a JSON:API document, or a value the system cannot store"),
                    "409": error("data.type does not match, the id is taken, or data.id differs from the URL"),
                    "413": TOO_LARGE, "415": error("unsupported Content-Encoding"),
                    "422": error("a field breaks a rule of the schema")}
    created = {**_json_api(one, "created"), "headers": {"Location": {"schema": {"type": "string"}}}}
    return {
        f"/api/v1/{collection}": {
            "get": {"summary": f"List {collection}", "parameters": params,
                    "responses": {"200": _json_api(page, "a page"), "400": error("bad query"), **AUTH_ERRORS}},
            "post": {"summary": f"Create a {singular}", "requestBody": {"required": True, "content": {
                JSON_API: {"schema": {"$ref": f"#/components/schemas/{collection}Create"}},
                "application/json": {"schema": {"$ref": f"#/components/schemas/{collection}Create"}}}},
                "responses": {"201": created, **write_errors}},
        },
        f"/api/v1/{collection}/{{id}}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": f"Get a {singular}",
                    "responses": {"200": _json_api(one, "found"), "404": error("not found"), **AUTH_ERRORS}},
            "patch": {"summary": f"Change fields of a {singular}", "requestBody": {"required": True, "content": {
                JSON_API: {"schema": {"$ref": f"#/components/schemas/{collection}Update"}},
                "application/json": {"schema": {"$ref": f"#/components/schemas/{collection}Update"}}}},
                "responses": {"200": _json_api(one, "updated"), "404": error("not found"), **write_errors}},
            "delete": {"summary": f"Delete a {singular}", "responses": {
                "204": {"description": "deleted"}, "404": error("not found"), **AUTH_ERRORS}},
        },
    }


def _token_path() -> dict[str, Any]:
    password = {"type": "object", "required": ["email", "password"], "properties": {
        "grant_type": {"type": "string", "enum": ["password"]}, "email": {"type": "string", "minLength": 1},
        "password": {"type": "string", "minLength": 1}}}
    refresh = {"type": "object", "required": ["grant_type", "refresh_token"], "properties": {
        "grant_type": {"type": "string", "enum": ["refresh_token"]}, "refresh_token": {"type": "string",
                                                                                     "minLength": 1}}}
    request = {"oneOf": [password, refresh]}
    tokens = {"type": "object", "required": ["access_token", "token_type", "expires_in", "refresh_token"],
              "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string", "enum": ["bearer"]},
                             "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"}}}
    return {"post": {
        "summary": "Exchange email and password (or a refresh token) for tokens",
        "security": [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": request},
                                                      "application/x-www-form-urlencoded": {"schema": request}}},
        "responses": {
            "200": {"description": "tokens", "content": {"application/json": {"schema": tokens}}},
            "400": error("not JSON or a form, or a field is missing"),
            "401": error("invalid credentials"),
            "403": error("account disabled"),
            "413": error("the body is over 16 kB (refused before it is read whole)"),
            "429": {**error("too many attempts"), "headers": {"Retry-After": {"schema": {"type": "string"}}}},
        }}}


def document() -> dict[str, Any]:
    error_item = {"type": "object", "required": ["status", "title", "detail"], "properties": {
        "status": {"type": "string"}, "title": {"type": "string"}, "detail": {"type": "string"},
        "source": {"type": "object", "properties": {"pointer": {"type": "string",
                                                                "description": "RFC 6901, into the request body"}}}}}
    schemas: dict[str, Any] = {
        "Errors": {"type": "object", "required": ["errors"], "properties": {
            "errors": {"type": "array", "minItems": 1, "items": error_item}}},
        **GEOMETRIES,
    }
    paths: dict[str, Any] = {}
    for collection in COLLECTIONS:
        attributes = _attributes(collection)
        schemas[collection] = {"type": "object", "properties": {
            "type": {"type": "string", "enum": [collection]}, "id": RECORD_ID, "attributes": attributes}}
        schemas[f"{collection}Create"] = _write(collection, attributes, create=True)
        schemas[f"{collection}Update"] = _write(collection, _changes(collection), create=False)
        schemas[f"{collection}Resource"] = _resource(collection)
        paths.update(_collection_paths(collection))
    paths["/api/v1/auth/token"] = _token_path()
    paths.update(openapi_positions.paths())
    paths["/health"] = {"get": {"summary": "Database, extensions and version", "security": [], "responses": {
        "200": {"description": "healthy (or degraded: Redis unreachable)", "content": {"application/json": {
            "schema": {"type": "object", "required": ["status", "version"], "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]}, "version": {"type": "string"}}}}}},
        "503": {"description": "database unreachable", "content": {"application/json": {"schema": {
            "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}}}}}}}
    _name_operations(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "WebHost Fleet API", "version": "1"},
        # Relative: the document describes whichever server serves it (behind any proxy path).
        "servers": [{"url": "/", "description": "the server that serves this document"}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


_VERBS = {"get": "get", "post": "create", "patch": "update", "put": "replace", "delete": "delete"}


def _name_operations(paths: dict[str, Any]) -> None:
    """Give every operation a stable operationId from its method and path, so generated clients
    get names like `getVehiclesById` or `createPositions` (explicit ids are kept)."""
    for path, operations in paths.items():
        words = [part for part in path.removeprefix("/api/v1").split("/") if part]
        name = "".join(
            "By" + part.strip("{}").title().replace("_", "") if part.startswith("{") else
            part.replace("-", "_").title().replace("_", "")
            for part in words
        )
        for method, operation in operations.items():
            if method in _VERBS and isinstance(operation, dict):
                paged = any(p.get("name", "").startswith("page[") for p in operation.get("parameters", []))
                operation.setdefault("operationId", ("list" if method == "get" and paged else _VERBS[method]) + name)
