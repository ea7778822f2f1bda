"""POST /api/v1/auth/token and bearer-token parsing, through a real Starlette app in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server_stub import accounts
from server_stub.auth import AuthError, LoginRateLimiter
from server_stub.config import Settings
from server_stub.db import Database
from server_stub.http_auth import json_api_error, principal_from_request, token_endpoint

from .conftest import unique_email

pytestmark = pytest.mark.anyio
PASSWORD = "long enough"


async def whoami(request: Request) -> JSONResponse:
    try:
        principal = await principal_from_request(request)
    except AuthError as exc:
        return json_api_error(exc.status, "unauthorized", exc.reason)
    return JSONResponse({"user_id": principal.user_id, "customer_id": principal.customer_id})


@pytest.fixture
async def client(db: Database, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/api/v1/auth/token", token_endpoint, methods=["POST"]), Route("/whoami", whoami)])
    app.state.db, app.state.settings, app.state.rate_limiter = db, settings, LoginRateLimiter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


@pytest.fixture
async def user(db: Database) -> accounts.User:
    tenant = await accounts.create_tenant(db, "Acme")
    return await accounts.create_user(db, unique_email(), PASSWORD, "dispatcher", tenant.id)


async def test_json_login_returns_a_bearer_pair_that_authenticates(
    client: httpx.AsyncClient, user: accounts.User
) -> None:
    response = await client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert (body["token_type"], body["expires_in"]) == ("bearer", 900)
    assert response.headers["cache-control"] == "no-store"
    me = await client.get("/whoami", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {"user_id": user.id, "customer_id": user.customer_id}
    via_query = await client.get("/whoami", params={"token": body["access_token"]})
    assert via_query.json()["user_id"] == user.id


async def test_form_login_works_like_json(client: httpx.AsyncClient, user: accounts.User) -> None:
    response = await client.post("/api/v1/auth/token", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 200
    assert response.json()["access_token"]


async def test_refresh_grant_rotates_the_pair(client: httpx.AsyncClient, user: accounts.User) -> None:
    login = (await client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})).json()
    grant = {"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}
    rotated = await client.post("/api/v1/auth/token", json=grant)
    assert rotated.status_code == 200
    assert rotated.json()["refresh_token"] != login["refresh_token"]
    reused = await client.post("/api/v1/auth/token", json=grant)
    assert reused.status_code == 401
    assert reused.json()["errors"][0]["detail"] == "refresh token reused"


async def test_bad_credentials_answer_a_json_api_401(client: httpx.AsyncClient, user: accounts.User) -> None:
    response = await client.post("/api/v1/auth/token", json={"email": user.email, "password": "wrong password"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    assert response.json() == {
        "errors": [{"status": "401", "title": "invalid credentials", "detail": "wrong email or password"}]
    }


async def test_sixth_failed_login_is_rate_limited_with_retry_after(
    client: httpx.AsyncClient, user: accounts.User
) -> None:
    attempt = {"email": user.email, "password": "wrong password"}
    for _ in range(5):
        assert (await client.post("/api/v1/auth/token", json=attempt)).status_code == 401
    limited = await client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert limited.json()["errors"][0]["status"] == "429"


async def test_disabled_account_login_is_forbidden(
    client: httpx.AsyncClient, db: Database, user: accounts.User
) -> None:
    await accounts.disable_user(db, user.id)
    response = await client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert response.status_code == 403
    assert response.json()["errors"][0]["title"] == "account disabled"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"json": ["a", "list"]},
        {"json": {"email": "a@b.co"}},
        {"json": {"grant_type": "client_credentials"}},
        {"json": {"grant_type": "refresh_token"}},
    ],
    ids=["broken-json", "not-an-object", "no-password", "unknown-grant", "no-refresh-token"],
)
async def test_malformed_token_requests_answer_400(client: httpx.AsyncClient, kwargs: dict[str, object]) -> None:
    response = await client.post("/api/v1/auth/token", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.json()["errors"][0]["title"] == "bad request"


async def test_missing_or_bad_bearer_token_is_401(client: httpx.AsyncClient) -> None:
    missing = await client.get("/whoami")
    assert missing.status_code == 401 and "missing token" in missing.json()["errors"][0]["detail"]
    bad = await client.get("/whoami", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401 and bad.json()["errors"][0]["detail"] == "bad token"
