"""Shared pieces of the HTTP endpoints: JSON:API errors, capped (gzip) bodies and JSON parsed
under the value policy (sync/values.py), safe header values, query parameters."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import unicodedata
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server_stub.auth import AuthError, Principal
from server_stub.http_auth import JSON_API, json_api_error, principal_from_request
from server_stub.positions import MAX_FUTURE_SECONDS, FixRejected, parse_timestamp
from server_stub.rooms import RoomUnavailable
from sync.document import FleetDocument
from sync.room import RoomBroken, RoomClosed, WriteFailed
from sync.values import ValuePolicyError, check_record_id, check_string, loads

if TYPE_CHECKING:
    from server_stub.positions import PositionService

# Every endpoint that reads a body caps it, counted as it streams in (after decompression), so
# no client can make the server buffer more than this; each cap fits what the endpoint carries.
MAX_BODY_BYTES = 32 * 1024 * 1024  # a position batch (20,000 fixes) or an import file
MAX_RECORD_BODY_BYTES = 4 * 1024 * 1024  # one REST record: a 10,000-vertex ring is about 0.5 MB
MAX_TOKEN_BODY_BYTES = 16 * 1024  # email and password, or a refresh token; the endpoint needs no login
# The deepest page a list may ask for: OFFSET (page - 1) * size must stay a 64-bit integer.
MAX_PAGE_NUMBER = 1_000_000_000
DEFAULT_RANGE_SECONDS = 24 * 3600.0


class ApiError(Exception):
    """A request-level failure answered as a JSON:API error document; `pointer` (RFC 6901, into
    the request body) goes to the error's source.pointer."""

    def __init__(self, status: int, title: str, detail: str, pointer: str | None = None, *,
                 retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.pointer = status, title, detail, pointer
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"status": str(self.status), "title": self.title, "detail": self.detail}
        if self.pointer:
            error["source"] = {"pointer": self.pointer}
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse({"errors": [error]}, status_code=self.status, media_type=JSON_API, headers=headers)


def error_response(exc: ApiError | AuthError) -> JSONResponse:
    if isinstance(exc, AuthError):
        return json_api_error(exc.status, "unauthorized" if exc.status == 401 else "forbidden", exc.reason)
    return exc.response()


def service(request: Request) -> PositionService:
    positions: PositionService = request.app.state.positions
    return positions


async def principal(request: Request, *, ingest: bool = False, write: bool = False) -> Principal:
    who = await principal_from_request(request)
    if ingest and not who.can_ingest_positions:
        raise AuthError(403, "this account cannot upload positions")
    if write and not who.can_write_fleet:
        raise AuthError(403, "this account cannot change fleet data")
    if not ingest and not write and not who.can_read_fleet:
        raise AuthError(403, "this account cannot read fleet data")
    return who


def tenant_of(request: Request, who: Principal) -> str:
    """The principal's own tenant; a platform admin names one with X-Tenant-Id (or ?tenant=)."""
    if who.customer_id is not None:
        return who.customer_id
    tenant = request.headers.get("x-tenant-id") or request.query_params.get("tenant")
    if not tenant:
        raise ApiError(400, "tenant required", "platform admins name the tenant with the X-Tenant-Id header")
    return tenant_id_param(tenant)


def tenant_id_param(tenant: str) -> str:
    """A tenant id a platform admin named: tenant ids are UUIDs, so anything else names no tenant
    (and a NUL would reach Postgres as text, which it cannot hold)."""
    try:
        check_record_id(tenant, "/tenant")
    except ValuePolicyError as exc:
        raise ApiError(400, "bad tenant", f"X-Tenant-Id: {exc.reason}") from None
    return tenant


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, gunzipped when sent with Content-Encoding: gzip; 413 beyond `limit` bytes.

    A declared Content-Length over the limit is refused before a byte is read; otherwise the
    body is counted while it streams in and refused as soon as it passes the limit, so an
    oversize body is never buffered (nor a gzip bomb inflated) whole."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise ApiError(415, "unsupported encoding", f"Content-Encoding {encoding!r} is not supported; use gzip")
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body too large", f"the body may be at most {limit} bytes")
    too_large = ApiError(413, "body too large", f"the body may be at most {limit} bytes (after decompression)")
    parts: list[bytes] = []
    size = 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding != "identity" else None
    try:
        async for chunk in request.stream():
            if inflater is None:
                size += len(chunk)
                if size > limit:
                    raise too_large
                parts.append(chunk)
                continue
            data = chunk
            while data:
                # Bounded output per step: a gzip bomb is stopped at the limit, not after inflating.
                out = inflater.decompress(data, limit - size + 1)
                size += len(out)
                if size > limit:
                    raise too_large
                parts.append(out)
                data = inflater.unconsumed_tail
        if inflater is not None:
            tail = inflater.flush()
            size += len(tail)
            if size > limit:
                raise too_large
            parts.append(tail)
            if not inflater.eof and size:
                raise ApiError(400, "bad body", "the gzip body is truncated")
    except zlib.error as exc:
        raise ApiError(400, "bad body", f"the body is not valid gzip: {exc}") from None
    return b"".join(parts)


def parse_json(raw: bytes) -> Any:
    """JSON text under the value policy (sync.values.loads): ApiError 400 naming the offending pointer."""
    try:
        return loads(raw)
    except ValuePolicyError as exc:
        if not exc.pointer and exc.reason.startswith("not valid JSON"):
            raise ApiError(400, "bad body", f"the body is {exc.reason}") from None
        raise ApiError(400, "value not allowed", exc.reason, exc.pointer or None) from None


async def read_json(request: Request, limit: int) -> Any:
    """The body, capped at `limit` bytes (413) and parsed under the value policy (400)."""
    return parse_json(await read_body(request, limit))


def text_param(request: Request, name: str) -> str | None:
    """A free-text query parameter (an id to look up): None when absent or empty; 400 for text
    no database column can hold (NUL, lone surrogates, over-long)."""
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        check_string(value, name, limit=1024)
    except ValuePolicyError as exc:
        raise ApiError(400, "bad parameter", f"{name}: {exc.reason}") from None
    return value


_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition value for any file name (RFC 6266): an ASCII `filename` fallback
    with everything outside A-Z a-z 0-9 . _ - replaced, and the exact name as RFC 5987
    `filename*=UTF-8''…`, so quotes, semicolons, line breaks and non-Latin-1 text never reach
    the header raw (uvicorn refuses such a header and drops the connection)."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = _FILENAME_UNSAFE.sub("_", ascii_name).strip("._") or "download"
    exact = quote(filename.encode("utf-8", "surrogatepass"), safe="")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


def time_param(request: Request, name: str, default: float) -> float:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return parse_timestamp(value, name)
    except FixRejected as exc:
        raise ApiError(400, "bad parameter", str(exc)) from None


def time_range(request: Request) -> tuple[float, float]:
    """`from` (inclusive) and `to` (exclusive): ISO 8601 or Unix seconds/ms; by default the last
    24 h up to the end of the future window ingest accepts (a phone whose clock runs ahead)."""
    end = time_param(request, "to", time.time() + MAX_FUTURE_SECONDS + 1.0)
    start = time_param(request, "from", end - DEFAULT_RANGE_SECONDS)
    if start > end:
        raise ApiError(400, "bad parameter", "from must not be after to")
    return start, end


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad parameter", f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, "bad parameter", f"{name} must be between {low} and {high}")
    return value


def json_ok(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status)


# How long a write waits for its records to reach the relational tables before answering; the
# write is committed either way (the tables catch up), so a slow projection never fails it.
PROJECTION_WAIT_SECONDS = 10.0


async def transact(request: Request, tenant_id: str, who: Principal,
                   action: Callable[[FleetDocument], object]) -> object:
    """Run a server-side edit through the tenant's room (durable, broadcast like a desktop edit)
    and wait for projection. A room fault is this tenant's and temporary: 503 with Retry-After;
    a write pycrdt itself refused is the caller's: 422. Never a 500."""
    try:
        room = await request.app.state.rooms.get(tenant_id)
        result = await room.transact(action, user_id=who.user_id or who.api_key_id)
    except RoomUnavailable as exc:
        raise ApiError(503, "tenant unavailable", f"this tenant's data cannot be loaded right now: {exc}",
                       retry_after=30) from None
    except (RoomClosed, RoomBroken) as exc:
        raise ApiError(503, "try again", f"the write was not stored: {exc}", retry_after=1) from None
    except WriteFailed as exc:
        raise ApiError(422, "write refused", str(exc)) from None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(request.app.state.projector.flush(), PROJECTION_WAIT_SECONDS)
    return result


Endpoint = Callable[[Request], Awaitable[Response]]


def method_route(path: str, handlers: Mapping[str, Endpoint]) -> Route:
    """One route per path, dispatching on the method: with a route per method Starlette answers
    405 and OPTIONS with the first route's `Allow` header alone."""

    async def endpoint(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, endpoint, methods=list(handlers))
