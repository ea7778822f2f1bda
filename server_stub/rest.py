"""JSON:API resources for vehicles, drivers, routes and geofences.

Reads come from the projected tables. Writes are server-side transactions on the tenant
document (through the room's durable write path), so they reach every connected client like a
desktop edit; the response waits until the projection shows the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server_stub import devices
from server_stub.auth import AuthError, Principal
from server_stub.http_auth import json_api_error, principal_from_request
from server_stub.http_util import (
    MAX_PAGE_NUMBER,
    MAX_RECORD_BODY_BYTES,
    ApiError,
    method_route,
    read_json,
    tenant_id_param,
    transact,
)
from storage.repository import BadBBox, check_bbox
from sync.document import FleetDocument
from sync.formats import rfc7946_geometry
from sync.schema import COLLECTIONS
from sync.services import RecordNotFound, create_record, delete_record, update_record
from sync.validation import ValidationError
from sync.values import ValuePolicyError, check_fields, check_record_id, check_string

JSON_API = "application/vnd.api+json"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


# The REST layer's name for a request-level failure (one shape with http_util's).
BadRequest = ApiError


def _respond(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status, media_type=JSON_API)


def _error(exc: ApiError) -> JSONResponse:
    return exc.response()


def _validation_error(exc: ValidationError) -> JSONResponse:
    errors = [
        {"status": "422", "title": "invalid field", "detail": f"{p.field}: {p.reason}",
         "source": {"pointer": f"/data/attributes/{p.field}"}}
        for p in exc.problems
    ]
    return JSONResponse({"errors": errors}, status_code=422, media_type=JSON_API)


def tenant_of(request: Request, principal: Principal) -> str:
    """The tenant a request acts on: the principal's own; a platform admin names one."""
    if principal.customer_id is not None:
        return principal.customer_id
    tenant = request.headers.get("x-tenant-id") or request.query_params.get("tenant")
    if not tenant:
        raise BadRequest(400, "tenant required", "platform admins name the tenant with the X-Tenant-Id header")
    try:
        return tenant_id_param(tenant)
    except ApiError as exc:
        raise BadRequest(exc.status, exc.title, exc.detail) from None


def _link(base: str, collection: str, record_id: str) -> str:
    # Percent-encoded: the link also goes into the Location header, which must be plain ASCII.
    return f"{base}/api/v1/{collection}/{quote(record_id, safe=':~')}"


def _resource(collection: str, row: dict[str, Any], base: str) -> dict[str, Any]:
    data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
    if "geometry" in data:  # stored as drawn; answered as RFC 7946 wants (rings rewound)
        data = {**data, "geometry": rfc7946_geometry(data["geometry"])}
    return {
        "type": collection,
        "id": row["id"],
        "attributes": data,
        "meta": {"projection_error": row.get("projection_error"), "valid": row.get("projection_error") is None},
        "links": {"self": _link(base, collection, row["id"])},
    }


def _page(request: Request) -> tuple[int, int]:
    try:
        size = int(request.query_params.get("page[size]", DEFAULT_PAGE_SIZE))
        number = int(request.query_params.get("page[number]", 1))
    except ValueError:
        raise BadRequest(400, "bad paging", "page[size] and page[number] must be whole numbers") from None
    if not 1 <= size <= MAX_PAGE_SIZE or not 1 <= number <= MAX_PAGE_NUMBER:
        raise BadRequest(400, "bad paging",
                         f"page[size] must be 1..{MAX_PAGE_SIZE} and page[number] 1..{MAX_PAGE_NUMBER}")
    return size, number


def _filters(request: Request, collection: str, dialect: str) -> tuple[list[str], list[Any]]:
    where: list[str] = ["customer_id = ?"]
    params: list[Any] = []
    bbox = request.query_params.get("filter[bbox]")
    if bbox is not None:
        if collection not in ("routes", "geofences"):
            raise BadRequest(400, "bad filter", "filter[bbox] applies to routes and geofences")
        try:
            min_lon, min_lat, max_lon, max_lat = check_bbox(float(v) for v in bbox.split(","))
        except (ValueError, BadBBox) as exc:
            raise BadRequest(400, "bad filter", f"filter[bbox]: {exc}") from None
        if dialect == "postgres":
            where.append("geometry && ST_MakeEnvelope(?, ?, ?, ?, 4326) "
                         "AND ST_Intersects(geometry, ST_MakeEnvelope(?, ?, ?, ?, 4326))")
            params.extend([min_lon, min_lat, max_lon, max_lat] * 2)
        else:
            where.append(f"fid IN (SELECT pkid FROM idx_{collection}_geometry WHERE xmin <= ? AND xmax >= ? "
                         "AND ymin <= ? AND ymax >= ?) AND Intersects(geometry, BuildMbr(?, ?, ?, ?, 4326))")
            params.extend([max_lon, min_lon, max_lat, min_lat, min_lon, min_lat, max_lon, max_lat])
    since = request.query_params.get("filter[updated_since]")
    if since is not None:
        try:
            when = datetime.fromisoformat(since.replace("Z", "+00:00"))
            # updated_at is stored as ISO 8601 UTC text with milliseconds and "Z" (sync.services.utc_now),
            # so text order is time order only once the filter is spelled the same way: any offset, whole
            # seconds or a naive time (taken as UTC) would otherwise compare as a string.
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        except (ValueError, OverflowError):  # OverflowError: an offset pushes year 1 or 9999 out of range
            raise BadRequest(400, "bad filter", "filter[updated_since] must be an ISO 8601 date-time") from None
        where.append("updated_at >= ?")
        params.append(when.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return where, params


KNOWN_PARAMETERS = ("filter[bbox]", "filter[updated_since]", "page[size]", "page[number]")


def _check_parameters(request: Request) -> None:
    """An unknown filter or paging parameter is an error: ignoring a typo would answer unfiltered data."""
    for name in request.query_params:
        if name.startswith(("filter[", "page[")) and name not in KNOWN_PARAMETERS:
            raise BadRequest(400, "bad filter", f"unknown query parameter {name}; supported: "
                             + ", ".join(KNOWN_PARAMETERS))


async def _principal(request: Request, *, write: bool) -> Principal:
    principal = await principal_from_request(request)
    if write and not principal.can_write_fleet:
        raise AuthError(403, "this account cannot change fleet data")
    if not write and not principal.can_read_fleet:
        raise AuthError(403, "this account cannot read fleet data")
    return principal


def _collection(request: Request) -> str:
    collection = str(request.path_params["collection"])
    if collection not in COLLECTIONS:
        raise BadRequest(404, "not found", f"no resource type {collection!r}")
    return collection


def _path_id(request: Request, collection: str) -> str:
    """The record id in the URL. Ids a record can have are plain ASCII (sync.values.ID_PATTERN);
    anything a database cannot even hold (NUL, lone surrogates) names no record and is not looked up."""
    record_id = str(request.path_params["record_id"])
    try:
        check_string(record_id, "/id", limit=1024)
    except ValuePolicyError:
        raise BadRequest(404, "not found", f"no {collection} with that id") from None
    return record_id


async def _fetch_row(request: Request, tenant: str, collection: str, record_id: str) -> dict[str, Any] | None:
    db = request.app.state.db
    async with db.transaction(customer_id=tenant) as tx:
        row: dict[str, Any] | None = await tx.fetchone(
            f"SELECT id, data, projection_error FROM {collection} WHERE customer_id = ? AND id = ?", (tenant, record_id)
        )
    return row


async def list_resources(request: Request) -> Response:
    try:
        collection = _collection(request)
        principal = await _principal(request, write=False)
        tenant = tenant_of(request, principal)
        _check_parameters(request)
        size, number = _page(request)
        db = request.app.state.db
        where, params = _filters(request, collection, db.dialect)
        condition = " AND ".join(where)
        async with db.transaction(customer_id=tenant) as tx:
            total = await tx.fetchval(f"SELECT count(*) FROM {collection} WHERE {condition}", (tenant, *params))
            rows = await tx.fetch(
                f"SELECT id, data, projection_error FROM {collection} WHERE {condition} "
                "ORDER BY name, id LIMIT ? OFFSET ?",
                (tenant, *params, size, (number - 1) * size),
            )
    except BadRequest as exc:
        return _error(exc)
    except AuthError as exc:
        return json_api_error(exc.status, exc.reason, exc.reason)
    base = str(request.base_url).rstrip("/")
    links: dict[str, str] = {"self": str(request.url)}
    if number * size < int(total):
        links["next"] = str(request.url.include_query_params(**{"page[number]": number + 1, "page[size]": size}))
    if number > 1:
        links["prev"] = str(request.url.include_query_params(**{"page[number]": number - 1, "page[size]": size}))
    return _respond({"data": [_resource(collection, row, base) for row in rows], "links": links,
                     "meta": {"total": int(total), "page": {"number": number, "size": size}}})


async def get_resource(request: Request) -> Response:
    try:
        collection = _collection(request)
        principal = await _principal(request, write=False)
        tenant = tenant_of(request, principal)
        row = await _fetch_row(request, tenant, collection, _path_id(request, collection))
    except BadRequest as exc:
        return _error(exc)
    except AuthError as exc:
        return json_api_error(exc.status, exc.reason, exc.reason)
    if row is None:
        return _error(BadRequest(404, "not found", f"no {collection} with that id"))
    return _respond({"data": _resource(collection, row, str(request.base_url).rstrip("/"))})


async def _body(request: Request, collection: str, record_id: str | None) -> dict[str, Any]:
    """The JSON:API resource object of a write, checked against the value policy before anything
    reaches the document: a value pycrdt cannot hold (a lone surrogate, an integer beyond 64 bits)
    would otherwise panic inside the room's write loop and stop the tenant's writes."""
    try:
        payload = await read_json(request, MAX_RECORD_BODY_BYTES)
    except ApiError as exc:
        raise BadRequest(exc.status, exc.title, exc.detail, exc.pointer) from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("attributes", {}), dict):
        raise BadRequest(400, "bad body", "expected {\"data\": {\"type\": …, \"attributes\": {…}}}", "/data")
    if data.get("type") != collection:
        raise BadRequest(409, "type mismatch", f"data.type must be {collection!r}", "/data/type")
    if record_id is not None and data.get("id") not in (None, record_id):
        raise BadRequest(409, "id mismatch", "data.id must match the URL", "/data/id")
    try:
        if record_id is None and data.get("id") is not None:
            # A client-chosen id ends up in URLs and the Location header: refuse it before the commit.
            check_record_id(data["id"], "/data/id")
        # read_json already held the whole document to the policy; this is the record-level rule
        # (field names included) the sync socket applies, kept explicit in case the parse changes.
        check_fields(data.get("attributes", {}), "/data/attributes")
    except ValuePolicyError as exc:
        raise BadRequest(400 if exc.pointer == "/data/id" else 422, "value not allowed", exc.reason,
                         exc.pointer) from None
    return data


async def _claim_device(request: Request, collection: str, tenant: str, data: dict[str, Any]) -> None:
    """A vehicle's device id must not be one another tenant holds (server_stub/devices.py)."""
    attributes = data.get("attributes")
    if collection == "vehicles" and isinstance(attributes, dict) and "device_id" in attributes:
        try:
            await devices.claim(request.app.state.db, tenant, attributes["device_id"])
        except devices.DeviceTaken as exc:
            raise BadRequest(409, "device id taken", str(exc), "/data/attributes/device_id") from None


async def _write(request: Request, collection: str, tenant: str, principal: Principal,
                 action: Callable[[FleetDocument], object]) -> object:
    return await transact(request, tenant, principal, action)


async def create_resource(request: Request) -> Response:
    try:
        collection = _collection(request)
        principal = await _principal(request, write=True)
        tenant = tenant_of(request, principal)
        data = await _body(request, collection, None)
        await _claim_device(request, collection, tenant, data)
        requested_id = data.get("id")

        def action(document: FleetDocument) -> str:
            return create_record(document, collection, data.get("attributes", {}), record_id=requested_id)

        record_id = await _write(request, collection, tenant, principal, action)
        row = await _fetch_row(request, tenant, collection, str(record_id))
    except BadRequest as exc:
        return _error(exc)
    except AuthError as exc:
        return json_api_error(exc.status, exc.reason, exc.reason)
    except ValidationError as exc:
        if any(p.field == "id" for p in exc.problems):
            return _error(BadRequest(409, "conflict", str(exc), "/data/id"))
        return _validation_error(exc)
    assert row is not None
    resource = _resource(collection, row, str(request.base_url).rstrip("/"))
    return JSONResponse({"data": resource}, status_code=201, media_type=JSON_API,
                        headers={"Location": resource["links"]["self"]})


async def update_resource(request: Request) -> Response:
    try:
        collection = _collection(request)
        principal = await _principal(request, write=True)
        tenant = tenant_of(request, principal)
        record_id = _path_id(request, collection)
        data = await _body(request, collection, record_id)
        await _claim_device(request, collection, tenant, data)

        def action(document: FleetDocument) -> None:
            update_record(document, collection, record_id, data.get("attributes", {}))

        await _write(request, collection, tenant, principal, action)
        row = await _fetch_row(request, tenant, collection, record_id)
    except BadRequest as exc:
        return _error(exc)
    except AuthError as exc:
        return json_api_error(exc.status, exc.reason, exc.reason)
    except RecordNotFound:
        return _error(BadRequest(404, "not found", f"no {request.path_params['collection']} with that id"))
    except ValidationError as exc:
        return _validation_error(exc)
    assert row is not None
    return _respond({"data": _resource(collection, row, str(request.base_url).rstrip("/"))})


async def delete_resource(request: Request) -> Response:
    try:
        collection = _collection(request)
        principal = await _principal(request, write=True)
        tenant = tenant_of(request, principal)
        record_id = _path_id(request, collection)

        def action(document: FleetDocument) -> None:
            delete_record(document, collection, record_id)

        await _write(request, collection, tenant, principal, action)
    except BadRequest as exc:
        return _error(exc)
    except AuthError as exc:
        return json_api_error(exc.status, exc.reason, exc.reason)
    except RecordNotFound:
        return _error(BadRequest(404, "not found", f"no {request.path_params['collection']} with that id"))
    return Response(status_code=204)


routes = [
    method_route("/api/v1/{collection}", {"GET": list_resources, "POST": create_resource}),
    method_route("/api/v1/{collection}/{record_id}",
                 {"GET": get_resource, "PATCH": update_resource, "DELETE": delete_resource}),
]
