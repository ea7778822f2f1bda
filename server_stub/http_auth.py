"""Starlette pieces for authentication: the token endpoint, bearer-token parsing and JSON:API errors."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from server_stub import accounts, auth
from server_stub.auth import AuthError, LoginRateLimiter, Principal
from server_stub.config import Settings
from server_stub.db import Database

JSON_API = "application/vnd.api+json"


def json_api_error(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON:API error document with one error."""
    body = {"errors": [{"status": str(status), "title": title, "detail": detail}]}
    return JSONResponse(body, status_code=status, headers=headers, media_type=JSON_API)


def client_ip(conn: HTTPConnection) -> str:
    """The caller's address for login limits. X-Forwarded-For is believed only from the proxies in
    WEBHOST_TRUSTED_PROXIES: the server runs uvicorn's proxy-header handling with exactly those
    (server_stub.cli.uvicorn_proxy_options), which puts the real client here; with none
    configured this is the peer address and no header can change it."""
    return conn.client.host if conn.client else "unknown"


def _state(conn: HTTPConnection) -> tuple[Database, Settings, LoginRateLimiter]:
    state = conn.app.state
    return state.db, state.settings, state.rate_limiter


class BadRequest(Exception):
    """The token request body is not JSON or a form, or lacks a field."""


class BodyTooLarge(Exception):
    """The token request is over its cap; answered 413 before the rest is read."""


async def _body(request: Request) -> dict[str, Any]:
    """The token request, read under a small cap before parsing: the endpoint needs no login, so
    it must never buffer whatever a client sends (413), nor recurse into hostile JSON (400)."""
    # Imported here, not at the top: http_util imports this module.
    from starlette.formparsers import MultiPartException
    from starlette.types import Message

    from server_stub.http_util import MAX_TOKEN_BODY_BYTES, ApiError, parse_json, read_body
    from sync.values import ValuePolicyError, check_value

    try:
        raw = await read_body(request, MAX_TOKEN_BODY_BYTES)
    except ApiError as exc:
        if exc.status == 413:
            raise BodyTooLarge(exc.detail) from None
        raise BadRequest(exc.detail) from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            async def replay() -> Message:  # the form parser reads the capped bytes, not the socket
                return {"type": "http.request", "body": raw, "more_body": False}

            async with Request(request.scope, replay).form(max_files=0, max_fields=16) as form:
                body: Any = {key: value for key, value in form.items() if isinstance(value, str)}
            check_value(body)
        else:
            body = parse_json(raw or b"null")
    except ApiError as exc:
        raise BadRequest(f"{exc.pointer or 'the body'}: {exc.detail}") from None
    except ValuePolicyError as exc:
        raise BadRequest(str(exc)) from None
    except MultiPartException as exc:
        raise BadRequest(f"the form is not valid: {exc.message}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} is required")
    return value


def _token_response(access: str, expires_in: int, refresh: str) -> JSONResponse:
    # Tokens must never sit in a shared cache.
    return JSONResponse(
        {"access_token": access, "token_type": "bearer", "expires_in": expires_in, "refresh_token": refresh},
        headers={"Cache-Control": "no-store"},
    )


async def _password_grant(request: Request, body: dict[str, Any]) -> JSONResponse:
    db, settings, limiter = _state(request)
    email, password = _field(body, "email"), _field(body, "password")
    ip = client_ip(request)
    try:
        await limiter.check(email, ip)
    except auth.RateLimited as exc:
        return json_api_error(429, "too many attempts", str(exc), {"Retry-After": str(exc.retry_after)})
    try:
        user = await accounts.authenticate(db, email, password)
    except accounts.InvalidCredentials as exc:
        await limiter.record_failure(email, ip)
        return json_api_error(401, "invalid credentials", str(exc))
    except accounts.AccountDisabled as exc:
        return json_api_error(403, "account disabled", str(exc))
    await limiter.record_success(email)
    access, expires_in = auth.issue_access_token(settings, user)
    return _token_response(access, expires_in, await auth.issue_refresh_token(db, settings, user))


async def _refresh_grant(request: Request, body: dict[str, Any]) -> JSONResponse:
    db, settings, _ = _state(request)
    try:
        access, refresh = await auth.rotate_refresh_token(db, settings, _field(body, "refresh_token"))
    except AuthError as exc:
        title = "invalid credentials" if exc.status == 401 else "forbidden"
        return json_api_error(exc.status, title, exc.reason)
    return _token_response(access, settings.access_token_ttl, refresh)


async def token_endpoint(request: Request) -> JSONResponse:
    """POST /api/v1/auth/token: {email, password} or {grant_type: refresh_token, refresh_token}."""
    try:
        body = await _body(request)
        grant = body.get("grant_type", "password")
        if grant == "password":
            return await _password_grant(request, body)
        if grant == "refresh_token":
            return await _refresh_grant(request, body)
        raise BadRequest(f"unsupported grant_type {grant!r}; use password or refresh_token")
    except BodyTooLarge as exc:
        return json_api_error(413, "body too large", str(exc))
    except BadRequest as exc:
        return json_api_error(400, "bad request", str(exc))


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token from `Authorization: Bearer …`, or `?token=` (browsers cannot set websocket headers)."""
    header = conn.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return conn.query_params.get("token") or None


async def principal_from_request(request: HTTPConnection) -> Principal:
    """The authenticated caller of an HTTP request or websocket; raises AuthError (401/403)."""
    token = bearer_token(request)
    if token is None:
        raise AuthError(401, "missing token: send Authorization: Bearer <token>")
    db, settings, _ = _state(request)
    return await auth.resolve_token(db, settings, token)
