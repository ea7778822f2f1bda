"""Shared pieces of the position endpoints: JSON:API errors, capped (gzip) bodies, time-range parameters."""

from __future__ import annotations

import time
import zlib
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from server_stub.auth import AuthError, Principal
from server_stub.http_auth import json_api_error, principal_from_request
from server_stub.positions import FixRejected, parse_timestamp

if TYPE_CHECKING:
    from server_stub.positions import PositionService

MAX_BODY_BYTES = 32 * 1024 * 1024  # after decompression
DEFAULT_RANGE_SECONDS = 24 * 3600.0


class ApiError(Exception):
    """A request-level failure answered as a JSON:API error document."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail

    def response(self) -> JSONResponse:
        return json_api_error(self.status, self.title, self.detail)


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
    return tenant


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, gunzipped when sent with Content-Encoding: gzip; 413 beyond `limit` bytes."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise ApiError(415, "unsupported encoding", f"Content-Encoding {encoding!r} is not supported; use gzip")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
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


def time_param(request: Request, name: str, default: float) -> float:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return parse_timestamp(value, name)
    except FixRejected as exc:
        raise ApiError(400, "bad parameter", str(exc)) from None


def time_range(request: Request) -> tuple[float, float]:
    """`from` (inclusive) and `to` (exclusive): ISO 8601 or Unix seconds/ms; the last 24 h by default."""
    end = time_param(request, "to", time.time() + 1.0)
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
