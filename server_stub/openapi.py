"""The OpenAPI description of the REST API, generated from the shared document schema."""

from __future__ import annotations

from typing import Any

from server_stub import openapi_positions
from sync.schema import COLLECTIONS, FIELDS

_STOP = {"type": "object", "properties": {"name": {"type": "string"}, "lon": {"type": "number"},
                                          "lat": {"type": "number"}}}
_KIND_TYPES: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "bool": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "email": {"type": "string", "format": "email"},
    "geometry": {"type": "object", "description": "GeoJSON geometry (RFC 7946, WGS84)"},
    "stops": {"type": "array", "items": _STOP},
}


def _attributes(collection: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, spec in FIELDS[collection].items():
        schema: dict[str, Any] = dict(_KIND_TYPES.get(spec.kind) or {"type": "string"})
        if spec.choices:
            schema["enum"] = list(spec.choices)
        properties[name] = schema
    required = [name for name, spec in FIELDS[collection].items() if spec.required]
    return {"type": "object", "properties": properties, "required": required}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/vnd.api+json": {"schema": {
        "$ref": "#/components/schemas/Errors"}}}}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    error_item = {"type": "object", "properties": {
        "status": {"type": "string"}, "title": {"type": "string"}, "detail": {"type": "string"}}}
    schemas: dict[str, Any] = {"Errors": {"type": "object", "properties": {
        "errors": {"type": "array", "items": error_item}}}}
    for collection in COLLECTIONS:
        ref = {"$ref": f"#/components/schemas/{collection}"}
        schemas[collection] = {"type": "object", "properties": {
            "type": {"type": "string", "enum": [collection]}, "id": {"type": "string"},
            "attributes": _attributes(collection)}}
        one = {"content": {"application/vnd.api+json": {"schema": {"type": "object", "properties": {"data": ref}}}}}
        many = {"content": {"application/vnd.api+json": {"schema": {"type": "object", "properties": {
            "data": {"type": "array", "items": ref}}}}}}
        params = [
            {"name": "filter[updated_since]", "in": "query", "schema": {"type": "string", "format": "date-time"}},
            {"name": "page[size]", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "page[number]", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        ]
        if collection in ("routes", "geofences"):
            params.append({"name": "filter[bbox]", "in": "query", "description": "min_lon,min_lat,max_lon,max_lat",
                           "schema": {"type": "string"}})
        paths[f"/api/v1/{collection}"] = {
            "get": {"summary": f"List {collection}", "parameters": params,
                    "responses": {"200": {"description": "a page", **many}, "400": _error_response("bad query")}},
            "post": {"summary": f"Create a {collection[:-1]}", "requestBody": one,
                     "responses": {"201": {"description": "created", **one},
                                   "422": _error_response("validation failed")}},
        }
        paths[f"/api/v1/{collection}/{{id}}"] = {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"summary": f"Get a {collection[:-1]}", "responses": {"200": {"description": "found", **one},
                                                                          "404": _error_response("not found")}},
            "patch": {"summary": f"Change fields of a {collection[:-1]}", "requestBody": one,
                      "responses": {"200": {"description": "updated", **one}, "404": _error_response("not found"),
                                    "422": _error_response("validation failed")}},
            "delete": {"summary": f"Delete a {collection[:-1]}", "responses": {"204": {"description": "deleted"},
                                                                               "404": _error_response("not found")}},
        }
    paths["/api/v1/auth/token"] = {"post": {"summary": "Exchange email and password (or a refresh token) for tokens",
                                            "responses": {"200": {"description": "tokens"},
                                                          "401": _error_response("invalid credentials"),
                                                          "429": _error_response("too many attempts")}}}
    paths.update(openapi_positions.paths())
    paths["/health"] = {"get": {"summary": "Database, extensions and version", "responses": {"200": {
        "description": "healthy"}, "503": {"description": "database unreachable"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "WebHost Fleet API", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
