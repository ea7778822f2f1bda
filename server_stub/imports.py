"""Imports: a GPX track as positions, and GeoJSON features as geofences and routes.

`POST /api/v1/import/gpx?vehicle_id=` reads every track point and stores it through the same
ingest path as `POST /api/v1/positions` (same validation, same idempotency, same events).
`POST /api/v1/import/geojson` turns a FeatureCollection into records: Polygon/MultiPolygon (and
Point with a `radius_m` property) become geofences, LineString become routes, written as one
server-side transaction on the tenant document, exactly like REST writes. Properties named like
a field of the collection fill that field; a feature's string `id` becomes the record id, so
importing the same file twice creates nothing new.

Both go through the value policy (sync/values.py) like every other way in: a feature or point
holding what the document or database cannot store is refused with its reason and a JSON
pointer into the upload, and the rest of the file is imported.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from server_stub.auth import AuthError
from server_stub.exports import GpxError, parse_gpx
from server_stub.http_util import (
    ApiError,
    error_response,
    json_ok,
    principal,
    read_body,
    service,
    tenant_of,
    text_param,
    transact,
)
from server_stub.positions import BatchTooLarge
from sync.document import FleetDocument
from sync.schema import FIELDS
from sync.services import create_record
from sync.validation import ValidationError
from sync.values import ValuePolicyError, check_fields, check_record_id, check_value, json_pointer

MAX_FEATURES = 5000
_COLLECTION_OF = {"Polygon": "geofences", "MultiPolygon": "geofences", "Point": "geofences",
                  "LineString": "routes"}  # fmt: skip
_NOT_IMPORTED = {"geometry", "created_at", "updated_at"}


async def import_gpx(request: Request) -> Response:
    try:
        who = await principal(request, ingest=True)
        tenant = tenant_of(request, who)
        vehicle_id = text_param(request, "vehicle_id")
        if not vehicle_id:
            raise ApiError(400, "bad parameter", "vehicle_id is required")
        positions = service(request)
        if await positions.vehicle(tenant, vehicle_id) is None:
            raise ApiError(404, "not found", "no vehicle with that id")
        try:
            fixes = parse_gpx(await read_body(request))
        except GpxError as exc:
            raise ApiError(400, "bad GPX", str(exc)) from None
        for fix in fixes:
            fix["vehicle_id"] = vehicle_id
        try:
            result = await positions.ingest(tenant, fixes)
        except BatchTooLarge as exc:
            raise ApiError(413, "too many points", str(exc)) from None
    except (ApiError, AuthError) as exc:
        return error_response(exc)
    return json_ok({**result.body(), "points": len(fixes)})


def _feature_record(index: int, feature: Any, forced: str | None) -> tuple[str, dict[str, Any], str | None]:
    """(collection, fields, record id) for one feature; ValueError with the reason otherwise
    (a ValuePolicyError, naming the pointer into the upload, for a value that cannot be stored)."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise ValueError("not a GeoJSON Feature")
    geometry = feature.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    collection = _COLLECTION_OF.get(kind) if isinstance(kind, str) else None  # a list type is no key
    if collection is None or (forced is not None and forced != collection):
        wanted = "Polygon, MultiPolygon or Point with radius_m" if (forced or collection) == "geofences" \
            else "LineString"  # fmt: skip
        raise ValueError(f"geometry type {kind!r} cannot be imported as {forced or 'a geofence or route'} ({wanted})")
    given = feature.get("properties")
    properties: dict[str, Any] = given if isinstance(given, dict) else {}
    fields = {k: v for k, v in properties.items() if k in FIELDS[collection] and k not in _NOT_IMPORTED}
    where = json_pointer("features", index)
    check_fields(fields, where + "/properties")
    check_value(geometry, where + "/geometry")
    fields["geometry"] = geometry
    fields.setdefault("name", f"Imported {collection[:-1]} {index + 1}")
    record_id = feature.get("id")
    if not isinstance(record_id, str) or not record_id:
        return collection, fields, None  # GeoJSON allows numeric ids; the record gets a fresh one
    check_record_id(record_id, where + "/id")
    return collection, fields, record_id


async def import_geojson(request: Request) -> Response:
    try:
        who = await principal(request, write=True)
        tenant = tenant_of(request, who)
        forced = request.query_params.get("collection")
        if forced not in (None, "geofences", "routes"):
            raise ApiError(400, "bad parameter", "collection must be geofences or routes")
        try:
            # orjson, without the whole-body policy: each feature gets it, so one bad feature is one rejection.
            document = orjson.loads(await read_body(request))
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "bad body", f"the body must be GeoJSON: {exc}") from None
        if isinstance(document, dict) and document.get("type") == "Feature":
            features: Any = [document]
        elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
            features = document.get("features")
        else:
            features = None
        if not isinstance(features, list):
            raise ApiError(400, "bad body", "expected a GeoJSON FeatureCollection (or one Feature)")
        if len(features) > MAX_FEATURES:
            raise ApiError(413, "too many features", f"at most {MAX_FEATURES} features per import")
        items: list[tuple[int, str, dict[str, Any], str | None]] = []
        rejected: list[dict[str, Any]] = []
        for index, feature in enumerate(features):
            try:
                items.append((index, *_feature_record(index, feature, forced)))
            except ValuePolicyError as exc:
                rejected.append({"index": index, "reason": exc.reason, "pointer": exc.pointer})
            except ValueError as exc:
                rejected.append({"index": index, "reason": str(exc)})

        def action(doc: FleetDocument) -> list[dict[str, Any]]:
            made = []
            for index, collection, fields, record_id in items:
                try:  # create_record validates before it touches the document
                    made.append({"index": index, "type": collection,
                                 "id": create_record(doc, collection, fields, record_id=record_id)})
                except ValidationError as exc:
                    rejected.append({"index": index, "reason": str(exc)})
            return made

        created: list[dict[str, Any]] = []
        if items:
            result = await transact(request, tenant, who, action)
            created = result if isinstance(result, list) else []
    except (ApiError, AuthError) as exc:
        return error_response(exc)
    rejected.sort(key=lambda r: int(r["index"]))
    return json_ok({"created": created, "rejected": rejected}, status=201 if created else 200)
