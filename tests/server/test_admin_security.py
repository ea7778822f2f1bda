"""Security of the admin page through a real server, on SQLite and Postgres.

Each role sees only its own tenant; a tenant admin's session is refused on every page and form
of another tenant; every form needs the session's CSRF token; the session cookie is HttpOnly,
SameSite and Secure behind TLS; failed sign-ins are rate-limited; the pages load nothing from
another host.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from server_stub import accounts
from server_stub.admin import session as admin_session
from server_stub.db import open_database
from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for

from .admin_http import AdminClient, create_platform_admin
from .fleet_http import BACKENDS, attributes, client, create, module_database_url


@dataclass
class World:
    server: LiveServer
    root: str  # platform admin email
    a: Tenant
    b: Tenant
    b_key_id: str
    b_key_secret: str
    b_vehicle: str


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with LiveServer(settings_for(module_database_url(request, tmp_path_factory))) as server:
        a = provision_tenant(server.settings, "Alpha Haulage")
        b = provision_tenant(server.settings, "Beta Couriers")

        async def key() -> tuple[accounts.ApiKey, str]:
            db = await open_database(server.settings.database_url)
            try:
                return await accounts.create_api_key(db, b.id, "beta gateway", ["read"])
            finally:
                await db.close()

        b_key, secret = asyncio.run(key())
        b_vehicle = create(server, b.tokens["dispatcher"], "vehicles",
                           attributes("vehicles", "Beta Van", device_id="beta-1"))
        yield World(server, create_platform_admin(server), a, b, b_key.id, secret, b_vehicle)


def db_state(world: World) -> dict[str, Any]:
    """What an attack could change: tenants, users, API keys and device ids, read straight from the database."""

    async def read() -> dict[str, Any]:
        db = await open_database(world.server.settings.database_url)
        try:
            state: dict[str, Any] = {
                "customers": await db.fetch("SELECT id, name, plan, disabled FROM customers ORDER BY id"),
                "users": await db.fetch("SELECT id, customer_id, email, role, disabled, password_hash FROM users"
                                        " ORDER BY id"),
            }
            for tenant in (world.a.id, world.b.id):
                async with db.transaction(customer_id=tenant) as tx:
                    state[f"keys-{tenant}"] = await tx.fetch(
                        "SELECT id, revoked_at FROM api_keys WHERE customer_id = ? ORDER BY id", (tenant,))
                    state[f"vehicles-{tenant}"] = await tx.fetch(
                        "SELECT id, device_id FROM vehicles WHERE customer_id = ? ORDER BY id", (tenant,))
            return state
        finally:
            await db.close()

    return asyncio.run(read())


def emails_on(response: httpx.Response) -> set[str]:
    return set(re.findall(r'data-email="([^"]+)"', response.text))


TENANT_PAGES = ("users", "api-keys", "devices", "sync", "map")


def test_each_role_sees_only_its_own_tenant(world: World) -> None:
    with AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        home = alpha.get("/admin/")
        assert home.status_code == 303 and home.headers["location"] == f"/admin/tenants/{world.a.id}/users"
        own = alpha.get(f"/admin/tenants/{world.a.id}/users")
        assert own.status_code == 200
        assert emails_on(own) == set(world.a.emails.values())
        assert world.b.id not in own.text and "Beta" not in own.text
        for page in TENANT_PAGES:
            assert alpha.get(f"/admin/tenants/{world.a.id}/{page}").status_code == 200, page
            foreign = alpha.get(f"/admin/tenants/{world.b.id}/{page}")
            assert foreign.status_code == 403, page
            assert "Beta" not in foreign.text and world.b.emails["admin"] not in foreign.text
        # Platform-wide pages are not for tenant admins, and a made-up tenant looks the same as a real one.
        for path in ("/admin/tenants", "/admin/sync", "/admin/tenants/no-such-tenant/users"):
            assert alpha.get(path).status_code == 403, path

    with AdminClient(world.server).signed_in(world.root) as root:
        listed = root.get("/admin/tenants").text
        assert "Alpha Haulage" in listed and "Beta Couriers" in listed
        assert emails_on(root.get(f"/admin/tenants/{world.b.id}/users")) == set(world.b.emails.values())
        assert root.get("/admin/tenants/no-such-tenant/users").status_code == 404


@pytest.mark.parametrize("role", ["dispatcher", "field"])
def test_dispatchers_and_field_staff_cannot_use_the_admin_page(world: World, role: str) -> None:
    with AdminClient(world.server) as browser:
        refused = browser.login(world.a.emails[role])
        assert refused.status_code == 403
        assert "Only platform and tenant administrators" in refused.text
        # No signed-in session was handed out.
        assert browser.get(f"/admin/tenants/{world.a.id}/users").status_code == 303


def test_forms_without_the_sessions_csrf_token_are_refused_and_change_nothing(world: World) -> None:
    before = db_state(world)
    with AdminClient(world.server).signed_in(world.root) as root, \
            AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        other_session_token = alpha.csrf()
        b_user = next(u for u in before["users"] if u["email"] == world.b.emails["field"])
        attempts = [
            ("/admin/tenants", {"name": "Forged Ltd", "plan": "pro"}),
            (f"/admin/tenants/{world.b.id}/plan", {"plan": "hobby"}),
            (f"/admin/tenants/{world.b.id}/disable", {"disabled": "1"}),
            (f"/admin/tenants/{world.b.id}/users", {"email": "forged@example.com", "password": "x" * 12,
                                                    "role": "admin"}),
            (f"/admin/tenants/{world.b.id}/users/{b_user['id']}/role", {"role": "admin"}),
            (f"/admin/tenants/{world.b.id}/users/{b_user['id']}/password", {"password": "y" * 12}),
            (f"/admin/tenants/{world.b.id}/users/{b_user['id']}/disable", {"disabled": "1"}),
            (f"/admin/tenants/{world.b.id}/api-keys", {"name": "forged", "scope_write": "1"}),
            (f"/admin/tenants/{world.b.id}/api-keys/{world.b_key_id}/revoke", {}),
            (f"/admin/tenants/{world.b.id}/devices/{world.b_vehicle}", {"device_id": "forged"}),
            (f"/admin/tenants/{world.b.id}/sync/compact", {}),
            ("/admin/live-token", {"tenant": world.b.id}),
            ("/admin/logout", {}),
        ]
        for path, form in attempts:
            for csrf in (False, "wrong-token", other_session_token):
                response = root.post(path, form, csrf=csrf)
                assert response.status_code == 403, (path, csrf, response.status_code)
                assert "security token is missing or wrong" in response.text
        # The session is still alive (even logout needs the token) and nothing changed.
        assert root.get("/admin/tenants").status_code == 200
    assert db_state(world) == before


def test_a_tenant_admins_session_is_refused_on_another_tenants_forms(world: World) -> None:
    before = db_state(world)
    b_user = next(u for u in before["users"] if u["email"] == world.b.emails["dispatcher"])
    with AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        foreign = [
            (f"/admin/tenants/{world.b.id}/users", {"email": "intruder@example.com", "password": "x" * 12,
                                                    "role": "admin"}),
            (f"/admin/tenants/{world.b.id}/users/{b_user['id']}/role", {"role": "field"}),
            (f"/admin/tenants/{world.b.id}/users/{b_user['id']}/password", {"password": "y" * 12}),
            (f"/admin/tenants/{world.b.id}/users/{b_user['id']}/disable", {"disabled": "1"}),
            (f"/admin/tenants/{world.b.id}/api-keys", {"name": "intruder", "scope_read": "1"}),
            (f"/admin/tenants/{world.b.id}/api-keys/{world.b_key_id}/revoke", {}),
            (f"/admin/tenants/{world.b.id}/devices/{world.b_vehicle}", {"device_id": "stolen"}),
            (f"/admin/tenants/{world.b.id}/plan", {"plan": "hobby"}),
            (f"/admin/tenants/{world.b.id}/disable", {"disabled": "1"}),
            (f"/admin/tenants/{world.b.id}/sync/compact", {}),
            ("/admin/tenants", {"name": "Side Business", "plan": "pro"}),
            ("/admin/live-token", {"tenant": world.b.id}),
        ]
        for path, form in foreign:
            response = alpha.post(path, form)
            assert response.status_code == 403, (path, response.status_code, response.text[:300])
        # Naming B's objects under A's own tenant finds nothing either.
        own_path = [
            (f"/admin/tenants/{world.a.id}/users/{b_user['id']}/role", {"role": "field"}),
            (f"/admin/tenants/{world.a.id}/users/{b_user['id']}/password", {"password": "y" * 12}),
            (f"/admin/tenants/{world.a.id}/users/{b_user['id']}/disable", {"disabled": "1"}),
            (f"/admin/tenants/{world.a.id}/api-keys/{world.b_key_id}/revoke", {}),
            (f"/admin/tenants/{world.a.id}/devices/{world.b_vehicle}", {"device_id": "stolen"}),
        ]
        for path, form in own_path:
            response = alpha.post(path, form)
            assert response.status_code == 404, (path, response.status_code, response.text[:300])
        # The live token is for A only, whatever the form says.
        token = alpha.post("/admin/live-token", {})
        assert token.status_code == 200 and token.json()["path"] == "/api/v1/live"
    assert db_state(world) == before
    # B's key and B's users still work.
    with client(world.server, world.b_key_secret) as http:
        assert http.get("/api/v1/vehicles").status_code == 200
    with AdminClient(world.server) as beta:
        beta.signed_in(world.b.emails["admin"])


def test_a_tenant_admin_cannot_create_a_platform_admin_or_promote_to_one(world: World) -> None:
    with AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        email = "would-be-root@alpha.example"
        made = alpha.post(f"/admin/tenants/{world.a.id}/users", {"email": email, "password": PASSWORD,
                                                                  "role": "platform_admin"})
        assert "Choose one of the roles" in alpha.flash(made)
        field = next(u for u in db_state(world)["users"] if u["email"] == world.a.emails["field"])
        promoted = alpha.post(f"/admin/tenants/{world.a.id}/users/{field['id']}/role", {"role": "platform_admin"})
        assert "Choose one of the roles" in alpha.flash(promoted)
    users = {u["email"]: u for u in db_state(world)["users"]}
    assert email not in users
    assert users[world.a.emails["field"]]["role"] == "field"


def _set_cookie(response: httpx.Response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]
    ours = [c for c in cookies if c.startswith(admin_session.COOKIE + "=")]
    assert len(ours) == 1, cookies
    return ours[0]


def test_session_cookie_is_signed_httponly_samesite_and_secure_behind_tls(world: World) -> None:
    with AdminClient(world.server) as plain:
        cookie = _set_cookie(plain.login(world.root)).lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/admin" in cookie
        assert "secure" not in cookie.replace("httponly", "")
    with AdminClient(world.server, headers={"X-Forwarded-Proto": "https"}) as tls:
        # httpx keeps Secure cookies off plain http, so carry the login form's session by hand.
        login_page = tls.get("/admin/login")
        assert "; secure" in _set_cookie(login_page).lower()
        cookie_header = f"{admin_session.COOKIE}={login_page.cookies[admin_session.COOKIE]}"
        token = re.search(r'name="csrf_token" value="([^"]+)"', login_page.text)
        assert token is not None
        signed_in = tls.http.post("/admin/login", headers={"Cookie": cookie_header}, data={
            "email": world.root, "password": PASSWORD, "csrf_token": token.group(1), "next": "/admin/"})
        assert signed_in.status_code == 303
        cookie = _set_cookie(signed_in).lower()
        assert "; secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_a_tampered_or_foreign_signed_cookie_is_no_session(world: World) -> None:
    with AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        value = alpha.http.cookies[admin_session.COOKIE]
        body, _, signature = value.partition(".")
        session = admin_session.decode(world.server.settings, value)
        assert session is not None and session.user_id is not None
        # Claim to be the platform admin by editing the payload: the signature no longer matches.
        root_id = next(u["id"] for u in db_state(world)["users"] if u["email"] == world.root)
        session.user_id = root_id
        forged = admin_session.encode(settings_for("sqlite:///unused", secret_key="another-secret-" + "z" * 40),
                                      session)
        for bad in (forged, body + "." + signature[:-2] + "AA", "garbage"):
            alpha.http.cookies.set(admin_session.COOKIE, bad, path="/admin")
            assert alpha.get("/admin/tenants").status_code == 303  # to the login page


def test_sign_out_ends_the_session_even_if_its_cookie_is_replayed(world: World) -> None:
    with AdminClient(world.server).signed_in(world.root) as root:
        stolen = root.http.cookies[admin_session.COOKIE]
        out = root.post("/admin/logout", {})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        assert root.get("/admin/tenants").status_code == 303
    with AdminClient(world.server) as thief:
        thief.http.cookies.set(admin_session.COOKIE, stolen, path="/admin")
        assert thief.get("/admin/tenants").status_code == 303


def test_disabling_or_resetting_a_user_ends_their_admin_sessions(world: World) -> None:
    extra = f"second-admin-{world.server.port}@alpha.example"
    with AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        alpha.flash(alpha.post(f"/admin/tenants/{world.a.id}/users",
                               {"email": extra, "password": PASSWORD, "role": "admin"}))
        extra_id = next(u["id"] for u in db_state(world)["users"] if u["email"] == extra)
        with AdminClient(world.server).signed_in(extra) as second:
            assert second.get(f"/admin/tenants/{world.a.id}/users").status_code == 200
            alpha.flash(alpha.post(f"/admin/tenants/{world.a.id}/users/{extra_id}/password",
                                   {"password": "a-new-password-1"}))
            assert second.get(f"/admin/tenants/{world.a.id}/users").status_code == 303
        with AdminClient(world.server).signed_in(extra, "a-new-password-1") as second:
            alpha.flash(alpha.post(f"/admin/tenants/{world.a.id}/users/{extra_id}/disable", {"disabled": "1"}))
            assert second.get(f"/admin/tenants/{world.a.id}/users").status_code == 303
            assert second.login(extra, "a-new-password-1").status_code == 403


def test_failed_sign_ins_are_rate_limited(world: World) -> None:
    email = f"locked-out-{world.server.port}@beta.example"

    async def make() -> None:
        db = await open_database(world.server.settings.database_url)
        try:
            await accounts.create_user(db, email, PASSWORD, "admin", world.b.id)
        finally:
            await db.close()

    asyncio.run(make())
    with AdminClient(world.server) as browser:
        for _ in range(5):
            assert browser.login(email, "not the password").status_code == 401
        sixth = browser.login(email, "not the password")
        assert sixth.status_code == 429
        assert int(sixth.headers["retry-after"]) > 0
        assert "too many failed sign-in attempts" in sixth.text
        # Even the right password waits now.
        assert browser.login(email, PASSWORD).status_code == 429


def test_admin_pages_load_nothing_from_another_host_and_forbid_it_by_policy(world: World) -> None:
    url = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")

    def check(browser: AdminClient, path: str, response: httpx.Response) -> None:
        assert response.headers["content-type"].startswith("text/html"), path
        for found in url.findall(response.text):
            host = urlsplit(found if found.startswith("http") else "http:" + found).hostname
            assert host in ("127.0.0.1", "localhost"), f"{path} refers to {found}"
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        # Every asset the page names is served by this server.
        for asset in re.findall(r'(?:src|href)="(/admin/(?:static|leaflet)/[^"]+)"', response.text):
            assert browser.get(asset).status_code == 200, asset

    with AdminClient(world.server) as anonymous:
        check(anonymous, "/admin/login", anonymous.get("/admin/login"))
    with AdminClient(world.server).signed_in(world.root) as root:
        pages = ["/admin/tenants", "/admin/sync", "/admin/health",
                 *(f"/admin/tenants/{world.b.id}/{page}" for page in TENANT_PAGES)]
        for path in pages:
            response = root.get(path)
            assert response.status_code == 200, path
            check(root, path, response)
        created = root.post(f"/admin/tenants/{world.b.id}/api-keys", {"name": "page check", "scope_read": "1"})
        assert created.status_code == 200
        check(root, "API key created", created)
    with AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        refused = alpha.get(f"/admin/tenants/{world.b.id}/users")
        assert refused.status_code == 403
        check(alpha, "403 page", refused)


def test_admin_pages_forbid_inline_and_foreign_scripts_and_framing(world: World) -> None:
    with AdminClient(world.server).signed_in(world.a.emails["admin"]) as alpha:
        for path in ("/admin/login", f"/admin/tenants/{world.a.id}/users", f"/admin/tenants/{world.a.id}/map"):
            headers = alpha.get(path).headers
            policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
            assert policy["script-src"] == "'self'", path  # no inline script, no eval, no CDN
            assert policy["frame-ancestors"] == "'none'" and headers["x-frame-options"] == "DENY", path
            assert headers["x-content-type-options"] == "nosniff", path
