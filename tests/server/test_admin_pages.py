"""What the admin page does, through a real server on SQLite and Postgres (the browser test covers the UI)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect as ws_connect

from server_stub.db import open_database
from server_stub.persistence import DatabasePersistence
from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for
from sync import protocol
from sync.document import FleetDocument

from .admin_http import AdminClient, create_platform_admin
from .fleet_http import BACKENDS, attributes, client, create, module_database_url, wait_until


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(settings_for(module_database_url(request, tmp_path_factory))) as live:
        yield live


@pytest.fixture(scope="module")
def root_email(server: LiveServer) -> str:
    return create_platform_admin(server)


@pytest.fixture
def tenant(server: LiveServer) -> Tenant:
    return provision_tenant(server.settings, "Gamma Transport")


def token_status(server: LiveServer, email: str, password: str = PASSWORD) -> int:
    with client(server) as http:
        return http.post("/api/v1/auth/token", json={"email": email, "password": password}).status_code


def tenant_id_by_name(page: str, name: str) -> str:
    found = re.search(r'data-tenant-id="([^"]+)">\s*<td><a href="[^"]+">' + re.escape(name) + "<", page)
    assert found, f"{name} not listed"
    return found.group(1)


def test_platform_admin_creates_replans_disables_and_enables_a_tenant(server: LiveServer, root_email: str) -> None:
    with AdminClient(server).signed_in(root_email) as root:
        created = root.post("/admin/tenants", {"name": "Delta Movers", "plan": "starter"})
        assert "Delta Movers created" in root.flash(created)
        tenant_id = tenant_id_by_name(root.get("/admin/tenants").text, "Delta Movers")
        assert "now on the pro plan" in root.flash(root.post(f"/admin/tenants/{tenant_id}/plan", {"plan": "pro"}))
        assert "unknown plan" in root.flash(root.post(f"/admin/tenants/{tenant_id}/plan", {"plan": "platinum"}))
        assert "created" in root.flash(root.post(f"/admin/tenants/{tenant_id}/users", {
            "email": "boss@delta.example", "password": PASSWORD, "role": "admin"}))
        assert token_status(server, "boss@delta.example") == 200
        assert "disabled" in root.flash(root.post(f"/admin/tenants/{tenant_id}/disable", {"disabled": "1"}))
        assert token_status(server, "boss@delta.example") == 403
        with AdminClient(server) as boss:
            assert boss.login("boss@delta.example").status_code == 403
        assert "enabled again" in root.flash(root.post(f"/admin/tenants/{tenant_id}/disable", {"disabled": "0"}))
        assert token_status(server, "boss@delta.example") == 200


def test_tenant_admin_manages_users_roles_passwords_and_disabling(server: LiveServer, tenant: Tenant) -> None:
    with AdminClient(server).signed_in(tenant.emails["admin"]) as admin:
        users = f"/admin/tenants/{tenant.id}/users"
        assert "created" in admin.flash(admin.post(users, {"email": "new.driver@gamma.example",
                                                           "password": PASSWORD, "role": "field"}))
        assert "already exists" in admin.flash(admin.post(users, {"email": "new.driver@gamma.example",
                                                                  "password": PASSWORD, "role": "field"}))
        assert "at least 8" in admin.flash(admin.post(users, {"email": "short@gamma.example",
                                                              "password": "short", "role": "field"}))
        page = admin.get(users).text
        user_id = re.search(r'data-user-id="([^"]+)" data-email="new.driver@gamma.example"', page)
        assert user_id is not None
        base = f"{users}/{user_id.group(1)}"
        assert "is now dispatcher" in admin.flash(admin.post(f"{base}/role", {"role": "dispatcher"}))
        assert "was reset" in admin.flash(admin.post(f"{base}/password", {"password": "brand-new-secret"}))
        assert token_status(server, "new.driver@gamma.example") == 401
        assert token_status(server, "new.driver@gamma.example", "brand-new-secret") == 200
        assert "is disabled" in admin.flash(admin.post(f"{base}/disable", {"disabled": "1"}))
        assert token_status(server, "new.driver@gamma.example", "brand-new-secret") == 403
        # Admins cannot lock themselves out by accident.
        own = re.search(r'data-user-id="([^"]+)" data-email="' + re.escape(tenant.emails["admin"]) + '"',
                        admin.get(users).text)
        assert own is not None
        assert admin.post(f"{users}/{own.group(1)}/disable", {"disabled": "1"}).status_code == 409
        assert admin.post(f"{users}/{own.group(1)}/role", {"role": "field"}).status_code == 409


def test_api_key_secret_is_shown_once_works_and_stops_when_revoked(server: LiveServer, tenant: Tenant) -> None:
    with AdminClient(server).signed_in(tenant.emails["admin"]) as admin:
        created = admin.post(f"/admin/tenants/{tenant.id}/api-keys",
                             {"name": "gateway", "scope_read": "1", "scope_positions": "1", "role": "dispatcher"})
        assert created.status_code == 200
        assert created.headers["cache-control"] == "no-store"
        secret = re.search(r'id="api-key-secret">(whk_[A-Za-z0-9_-]+)<', created.text)
        assert secret is not None
        listing = admin.get(f"/admin/tenants/{tenant.id}/api-keys").text
        assert secret.group(1) not in listing and secret.group(1)[:8] in listing
        with client(server, secret.group(1)) as http:
            assert http.get("/api/v1/vehicles").status_code == 200
            key_id = re.search(r'data-key-id="([^"]+)" data-key-name="gateway"', listing)
            assert key_id is not None
            revoked = admin.post(f"/admin/tenants/{tenant.id}/api-keys/{key_id.group(1)}/revoke", {})
            assert "is revoked" in admin.flash(revoked)
            assert http.get("/api/v1/vehicles").status_code == 401
        assert "scopes must be" in admin.flash(admin.post(f"/admin/tenants/{tenant.id}/api-keys", {"name": "none"}))


def test_device_id_edit_goes_through_the_tenant_document(server: LiveServer, tenant: Tenant) -> None:
    token = tenant.tokens["dispatcher"]
    van = create(server, token, "vehicles", attributes("vehicles", "Van 1"))
    truck = create(server, token, "vehicles", attributes("vehicles", "Truck 2", device_id="imei-truck"))
    url = f"ws://127.0.0.1:{server.port}/sync/{tenant.id}?token={token}"
    with ws_connect(url, open_timeout=10) as socket, AdminClient(server).signed_in(tenant.emails["admin"]) as admin:
        document = FleetDocument()
        socket.send(protocol.sync_step1(document.get_state()))
        devices = f"/admin/tenants/{tenant.id}/devices"
        assert "now imei-van" in admin.flash(admin.post(f"{devices}/{van}", {"device_id": "imei-van"}))

        def synced_device() -> object:
            # A connected sync client receives the change like any other edit.
            try:
                message = protocol.parse(socket.recv(timeout=0.2))
            except TimeoutError:
                return None
            if message.kind in (protocol.MessageKind.SYNC_STEP2, protocol.MessageKind.SYNC_UPDATE):
                document.apply_update(message.payload)
            record = document.record("vehicles", van)
            return record is not None and record.get("device_id") == "imei-van"

        wait_until(synced_device)
        with client(server, token) as http:
            assert http.get(f"/api/v1/vehicles/{van}").json()["data"]["attributes"]["device_id"] == "imei-van"
        # Unique within the tenant: the document refuses a second vehicle with the same device.
        duplicate = admin.flash(admin.post(f"{devices}/{van}", {"device_id": "imei-truck"}))
        assert "already used by vehicle" in duplicate
        assert admin.post(f"{devices}/no-such-vehicle", {"device_id": "x"}).status_code == 404
        assert "now nothing" in admin.flash(admin.post(f"{devices}/{truck}", {"device_id": ""}))
        with client(server, token) as http:
            assert http.get(f"/api/v1/vehicles/{van}").json()["data"]["attributes"]["device_id"] == "imei-van"
            assert "device_id" not in http.get(f"/api/v1/vehicles/{truck}").json()["data"]["attributes"]

    async def audit() -> list[str | None]:
        db = await open_database(server.settings.database_url)
        try:
            async with db.transaction(customer_id=tenant.id) as tx:
                rows = await tx.fetch("SELECT user_id FROM crdt_updates WHERE customer_id = ?", (tenant.id,))
            return [row["user_id"] for row in rows]
        finally:
            await db.close()

    admin_id = asyncio.run(_user_id(server, tenant.emails["admin"]))
    assert asyncio.run(audit()).count(admin_id) >= 2  # the update log names the admin who changed it


async def _user_id(server: LiveServer, email: str) -> str:
    db = await open_database(server.settings.database_url)
    try:
        return str(await db.fetchval("SELECT id FROM users WHERE email = ?", (email,)))
    finally:
        await db.close()


def test_sync_status_shows_clients_log_errors_and_compaction_is_lossless(server: LiveServer, root_email: str,
                                                                         tenant: Tenant) -> None:
    token = tenant.tokens["dispatcher"]
    for n in range(3):
        create(server, token, "drivers", attributes("drivers", f"Driver {n}"))
    url = f"ws://127.0.0.1:{server.port}/sync/{tenant.id}?token={token}"
    with ws_connect(url, open_timeout=10) as socket:
        socket.recv(timeout=10)
        peer = FleetDocument()
        peer.put_record("vehicles", "nameless-1", {"plate": "NO-NAME"})  # breaks the schema: name is required
        socket.send(protocol.update_message(peer.get_update()))
        with AdminClient(server).signed_in(root_email) as root:
            page = f"/admin/tenants/{tenant.id}/sync"
            shown = wait_until(lambda: (r := root.get(page)) and 'data-record-id="nameless-1"' in r.text and r)
            assert re.search(r'id="connected-clients">1<', shown.text)
            assert re.search(r'id="log-size">[1-9]\d* row', shown.text)
            assert 'id="last-compaction">never' in shown.text
            row = re.search(r'data-record-id="nameless-1" data-collection="vehicles">.*?class="reason">([^<]+)<',
                            shown.text, re.S)
            assert row is not None and "name" in row.group(1)
            overview = root.get("/admin/sync").text
            assert re.search(r'id="connections-total">1<', overview)

            before = asyncio.run(_document(server, tenant.id))
            compacted = root.post(f"{page}/compact", {})
            assert "Compacted" in root.flash(compacted)
            after = root.get(page).text
            assert re.search(r'id="log-size">0 row', after)
            assert re.search(r'id="last-compaction">\d{4}-\d\d-\d\d [\d:]+ UTC: [1-9]\d* update', after)
            assert asyncio.run(_document(server, tenant.id)) == before
            assert "Nothing to compact" in root.flash(root.post(f"{page}/compact", {}))
        with AdminClient(server).signed_in(tenant.emails["admin"]) as admin:
            own = admin.get(f"/admin/tenants/{tenant.id}/sync")
            assert own.status_code == 200 and "compact-form" not in own.text  # compaction is for operators


async def _document(server: LiveServer, tenant_id: str) -> dict[str, object]:
    db = await open_database(server.settings.database_url)
    try:
        document = FleetDocument()
        for update in await DatabasePersistence(db).load(tenant_id):
            document.apply_update(update)
        return dict(document.snapshot())
    finally:
        await db.close()


def test_health_page_reports_database_extensions_redis_and_version(server: LiveServer, root_email: str) -> None:
    with AdminClient(server).signed_in(root_email) as root:
        page = root.get("/admin/health").text
    dialect = "postgres" if server.settings.database_url.startswith("postgres") else "sqlite"
    assert f'id="health-database">ok ({dialect})' in page
    if dialect == "postgres":
        assert re.search(r'id="health-ext-postgis">present \(', page)
        assert re.search(r'id="health-ext-timescaledb">(present \(|not present)', page)
    else:
        assert re.search(r'id="health-ext-spatialite">present \(', page)
    assert 'id="health-redis">not configured' in page
    assert re.search(r'id="health-version">\d+\.\d+', page)
    assert re.search(r'id="health-schema">migration \d+', page)


def test_live_token_opens_the_live_socket_of_the_admins_tenant(server: LiveServer, root_email: str,
                                                              tenant: Tenant) -> None:
    with AdminClient(server).signed_in(tenant.emails["admin"]) as admin:
        minted = admin.http.post("/admin/live-token", headers={"X-CSRF-Token": admin.csrf()})
        assert minted.status_code == 200
        body = minted.json()
        assert 0 < body["expires_in"] <= 300
        assert admin.http.post("/admin/live-token").status_code == 403  # no CSRF header
    with ws_connect(f"ws://127.0.0.1:{server.port}{body['path']}?token={body['token']}", open_timeout=10) as live:
        assert json.loads(live.recv(timeout=10)) == {"type": "ready"}
    with AdminClient(server).signed_in(root_email) as root:
        assert root.http.post("/admin/live-token", headers={"X-CSRF-Token": root.csrf()}).status_code == 400
        minted = root.post("/admin/live-token", {"tenant": tenant.id}).json()
        assert minted["path"] == f"/api/v1/live?tenant={tenant.id}"
    with ws_connect(f"ws://127.0.0.1:{server.port}{minted['path']}&token={minted['token']}", open_timeout=10) as live:
        assert json.loads(live.recv(timeout=10)) == {"type": "ready"}
