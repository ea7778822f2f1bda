"""Credentials take effect at once, on open sockets too: real servers, real websockets, the real
admin page, on every backend; across two instances over real Redis.

Revoking an API key, disabling a user or resetting a password closes that credential's open
sync (`/sync/{tenant}`) and live (`/api/v1/live`) sockets within a second, with 4401/4403 and
the reason; demoting a dispatcher to field staff turns their sync socket read-only (writes are
answered with the read-only notice and never stored). A reset also ends every access and
refresh token issued before it. Sockets of other credentials stay open.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from server_stub import accounts
from server_stub.db import Database
from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for
from sync import protocol
from sync.document import EMPTY_STATE_VECTOR, FleetDocument
from sync.protocol import MessageKind

from .admin_http import AdminClient, create_platform_admin
from .fleet_http import client, ws_handshake
from .gps_support import with_db
from .test_fanout import REDIS_URL, needs_redis

SECOND = 1.0  # the promise: a changed credential reaches its open sockets within a second


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings, "Revocation Roadways")


@contextmanager
def sync_socket(server: LiveServer, tenant_id: str, token: str) -> Iterator[ClientConnection]:
    """A raw y-websocket client that opted into acks, so a write's fate can be seen."""
    with ws_connect(f"ws://127.0.0.1:{server.port}/sync/{tenant_id}?token={token}&acks=1", open_timeout=10) as socket:
        assert protocol.parse(socket.recv(timeout=10)).kind == MessageKind.ACK_HELLO  # type: ignore[arg-type]
        yield socket


@contextmanager
def live_socket(server: LiveServer, token: str) -> Iterator[ClientConnection]:
    with ws_connect(f"ws://127.0.0.1:{server.port}/api/v1/live?token={token}", open_timeout=10) as socket:
        assert socket.recv(timeout=10) == '{"type":"ready"}'
        yield socket


def closed_by_server(socket: ClientConnection, deadline: float) -> tuple[int, str]:
    """The close code and reason the server sent, read before `deadline` (time.monotonic)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the socket was still open a second after the change")
        try:
            socket.recv(timeout=remaining)
        except TimeoutError:
            raise AssertionError("the socket was still open a second after the change") from None
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame from the server"
            return closed.rcvd.code, closed.rcvd.reason


def still_serves(socket: ClientConnection) -> bool:
    """A sync socket answers a state-vector request: it is open and served."""
    socket.send(protocol.sync_step1(EMPTY_STATE_VECTOR))
    while True:
        kind = protocol.parse(socket.recv(timeout=10)).kind  # type: ignore[arg-type]
        if kind == MessageKind.SYNC_STEP2:
            return True


def write_vehicle(socket: ClientConnection, name: str) -> tuple[str, Any]:
    """Send a new vehicle as a raw CRDT update; its id and the server's first answer to it."""
    vehicle_id = str(uuid.uuid4())
    peer = FleetDocument()
    peer.put_record("vehicles", vehicle_id, {"name": name})
    socket.send(protocol.update_message(peer.get_update()))
    while True:
        message = protocol.parse(socket.recv(timeout=10))  # type: ignore[arg-type]
        if message.kind in (MessageKind.ACK_COMMITTED, MessageKind.PERMISSION_DENIED):
            return vehicle_id, message.kind


def admin_post(server: LiveServer, admin_email: str, path: str, form: dict[str, str]) -> float:
    """Make the change through the real admin page; when its answer arrived (time.monotonic)."""
    with AdminClient(server).signed_in(admin_email) as admin:
        response = admin.post(path, form)
        done = time.monotonic()
        assert response.status_code == 303, response.text[:300]
        assert "error" not in admin.flash(response).lower()
    return done


def user_id(server: LiveServer, email: str) -> str:
    async def read(db: Database) -> str:
        return str(await db.fetchval("SELECT id FROM users WHERE email = ?", (email,)))

    return with_db(server, read)


def api_key(server: LiveServer, tenant: Tenant) -> tuple[str, str]:
    async def make(db: Database) -> tuple[str, str]:
        key, secret = await accounts.create_api_key(db, tenant.id, "gateway", ["read", "write"])
        return key.id, secret

    return with_db(server, make)


def vehicle_status(server: LiveServer, token: str, vehicle_id: str) -> int:
    with client(server, token) as http:
        return http.get(f"/api/v1/vehicles/{vehicle_id}").status_code


def test_revoking_an_api_key_closes_its_sync_and_live_sockets_within_a_second(live: LiveServer,
                                                                              tenant: Tenant) -> None:
    key_id, secret = api_key(live, tenant)
    with sync_socket(live, tenant.id, secret) as key_sync, live_socket(live, secret) as key_live, \
            sync_socket(live, tenant.id, tenant.tokens["dispatcher"]) as bystander:
        done = admin_post(live, tenant.emails["admin"], f"/admin/tenants/{tenant.id}/api-keys/{key_id}/revoke", {})
        assert closed_by_server(key_sync, done + SECOND) == (4401, "api key revoked")
        assert closed_by_server(key_live, done + SECOND) == (4401, "api key revoked")
        assert still_serves(bystander)
    assert ws_handshake(live, f"/sync/{tenant.id}", secret)[0] == 401


def test_disabling_a_user_closes_their_sockets_within_a_second(live: LiveServer, tenant: Tenant) -> None:
    dispatcher = user_id(live, tenant.emails["dispatcher"])
    token = tenant.tokens["dispatcher"]
    with sync_socket(live, tenant.id, token) as own_sync, live_socket(live, token) as own_live, \
            sync_socket(live, tenant.id, tenant.tokens["field"]) as bystander:
        done = admin_post(live, tenant.emails["admin"], f"/admin/tenants/{tenant.id}/users/{dispatcher}/disable",
                          {"disabled": "1"})
        assert closed_by_server(own_sync, done + SECOND) == (4403, "account disabled")
        assert closed_by_server(own_live, done + SECOND) == (4403, "account disabled")
        assert still_serves(bystander)


def test_disabling_a_tenant_closes_every_socket_of_its_users(live: LiveServer, tenant: Tenant) -> None:
    other = provision_tenant(live.settings, "Unaffected Freight")
    with sync_socket(live, tenant.id, tenant.tokens["admin"]) as admin_sync, \
            live_socket(live, tenant.tokens["field"]) as field_live, \
            sync_socket(live, other.id, other.tokens["dispatcher"]) as other_tenant:
        done = admin_post(live, create_platform_admin(live), f"/admin/tenants/{tenant.id}/disable", {"disabled": "1"})
        assert closed_by_server(admin_sync, done + SECOND) == (4403, "account disabled")
        assert closed_by_server(field_live, done + SECOND) == (4403, "account disabled")
        assert still_serves(other_tenant)


def test_a_demoted_dispatchers_sync_socket_turns_read_only_at_once(live: LiveServer, tenant: Tenant) -> None:
    dispatcher = user_id(live, tenant.emails["dispatcher"])
    with sync_socket(live, tenant.id, tenant.tokens["dispatcher"]) as socket, \
            live_socket(live, tenant.tokens["dispatcher"]) as watching:
        before, answer = write_vehicle(socket, "Written as dispatcher")
        assert answer == MessageKind.ACK_COMMITTED
        done = admin_post(live, tenant.emails["admin"], f"/admin/tenants/{tenant.id}/users/{dispatcher}/role",
                          {"role": "field"})
        after, answer = write_vehicle(socket, "Written after the demotion")
        assert time.monotonic() < done + SECOND
        assert answer == MessageKind.PERMISSION_DENIED  # never acked: the room ignored it
        assert still_serves(socket)  # read-only, not cut off
        assert still_serves_live(watching)
    assert vehicle_status(live, tenant.tokens["admin"], before) == 200
    assert vehicle_status(live, tenant.tokens["admin"], after) == 404


def still_serves_live(socket: ClientConnection) -> bool:
    """Field staff may still watch: the live socket is not closed."""
    try:
        socket.recv(timeout=0.2)
    except TimeoutError:
        return True
    except ConnectionClosed:
        return False
    return True


def test_a_password_reset_closes_sockets_and_ends_every_earlier_token(live: LiveServer, tenant: Tenant) -> None:
    email = tenant.emails["dispatcher"]
    with httpx.Client(base_url=live.url, timeout=15) as http:
        signed_in = http.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD}).json()
    access, refresh = signed_in["access_token"], signed_in["refresh_token"]
    assert vehicle_status(live, access, str(uuid.uuid4())) == 404  # the token works before the reset
    with sync_socket(live, tenant.id, access) as own_sync, live_socket(live, tenant.tokens["dispatcher"]) as own_live:
        done = admin_post(live, tenant.emails["admin"],
                          f"/admin/tenants/{tenant.id}/users/{user_id(live, email)}/password",
                          {"password": "a brand new password"})
        reason = "session ended: the password was changed"
        assert closed_by_server(own_sync, done + SECOND) == (4401, reason)
        assert closed_by_server(own_live, done + SECOND) == (4401, reason)
    assert vehicle_status(live, access, str(uuid.uuid4())) == 401
    assert ws_handshake(live, f"/sync/{tenant.id}", access)[0] == 401
    with httpx.Client(base_url=live.url, timeout=15) as http:
        refused = http.post("/api/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": refresh})
        assert refused.status_code == 401
        assert http.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD}).status_code == 401
        fresh = http.post("/api/v1/auth/token", json={"email": email, "password": "a brand new password"})
    assert fresh.status_code == 200
    assert vehicle_status(live, fresh.json()["access_token"], str(uuid.uuid4())) == 404  # new tokens work


@pytest.fixture
def pair(database_url: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two instances on one database and one Redis."""
    settings = settings_for(database_url, redis_url=REDIS_URL)
    with LiveServer(settings) as one, LiveServer(settings) as two:
        yield one, two


@needs_redis
def test_a_change_made_on_one_instance_reaches_sockets_on_the_other_within_a_second(
        pair: tuple[LiveServer, LiveServer]) -> None:
    one, two = pair
    tenant = provision_tenant(one.settings, "Two Instance Transport")
    key_id, secret = api_key(one, tenant)
    admin = tenant.emails["admin"]
    users = f"/admin/tenants/{tenant.id}/users"
    with sync_socket(two, tenant.id, secret) as key_sync, live_socket(two, secret) as key_live:
        done = admin_post(one, admin, f"/admin/tenants/{tenant.id}/api-keys/{key_id}/revoke", {})
        assert closed_by_server(key_sync, done + SECOND) == (4401, "api key revoked")
        assert closed_by_server(key_live, done + SECOND) == (4401, "api key revoked")

    field = user_id(one, tenant.emails["field"])
    with live_socket(two, tenant.tokens["field"]) as field_live:
        done = admin_post(one, admin, f"{users}/{field}/disable", {"disabled": "1"})
        assert closed_by_server(field_live, done + SECOND) == (4403, "account disabled")

    dispatcher = user_id(one, tenant.emails["dispatcher"])
    with sync_socket(two, tenant.id, tenant.tokens["dispatcher"]) as socket:
        done = admin_post(one, admin, f"{users}/{dispatcher}/role", {"role": "field"})
        while True:  # the demotion travels through Redis: write until the other instance has it
            vehicle, answer = write_vehicle(socket, "Probe")
            if answer == MessageKind.PERMISSION_DENIED:
                break
            assert time.monotonic() < done + SECOND, "still writable a second after the demotion"
        assert vehicle_status(two, tenant.tokens["admin"], vehicle) == 404
        done = admin_post(one, admin, f"{users}/{dispatcher}/password", {"password": "another new password"})
        assert closed_by_server(socket, done + SECOND) == (4401, "session ended: the password was changed")
