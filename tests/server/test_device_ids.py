"""Device ids are unique across the server: a real server on every backend, REST, the admin page,
raw CRDT writes over the sync socket, and the token-less OsmAnd phone endpoint.

One tenant can no longer take another's phone (which used to stop the victim's fixes), and the
phone endpoint answers every unusable id alike, so a stranger cannot probe which ids exist.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from server_stub import accounts, devices
from server_stub.db import Database
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from sync import protocol
from sync.document import FleetDocument
from sync.protocol import MessageKind

from .admin_http import AdminClient
from .fleet_http import wait_until
from .gps_support import BASE_LAT, BASE_LON, client, create_vehicle, stored, with_db

pytestmark = pytest.mark.anyio


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def alpha(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings, "Alpha Parcels")


@pytest.fixture
def beta(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings, "Beta Couriers")


def fresh_id(label: str = "phone") -> str:
    # Fresh per test: the Postgres backends share one database per module.
    return f"{label}-{secrets.token_hex(5)}"


def report(live: LiveServer, device_id: str) -> Any:
    with client(live) as phone:
        return phone.get("/api/v1/osmand", params={"id": device_id, "lat": BASE_LAT, "lon": BASE_LON})


def fixes(live: LiveServer, tenant: Tenant) -> int:
    with client(live, tenant.tokens["dispatcher"]) as http:
        return len(stored(http, None))


def crdt_vehicle(live: LiveServer, tenant: Tenant, device_id: str) -> str:
    """A vehicle written the way a stock Yjs client writes it (never through REST), projected."""
    vehicle_id = str(uuid.uuid4())
    peer = FleetDocument()
    peer.put_record("vehicles", vehicle_id, {"name": "Synced van", "device_id": device_id})
    url = f"ws://127.0.0.1:{live.port}/sync/{tenant.id}?token={tenant.tokens['dispatcher']}&acks=1"
    with ws_connect(url, open_timeout=10) as socket:
        socket.send(protocol.update_message(peer.get_update()))
        while protocol.parse(socket.recv(timeout=10)).kind != MessageKind.ACK_COMMITTED:  # type: ignore[arg-type]
            pass
    with client(live, tenant.tokens["dispatcher"]) as http:
        wait_until(lambda: http.get(f"/api/v1/vehicles/{vehicle_id}").status_code == 200)
    return vehicle_id


def test_rest_refuses_another_tenants_device_id_without_naming_the_tenant(live: LiveServer, alpha: Tenant,
                                                                         beta: Tenant) -> None:
    phone = fresh_id()
    with client(live, alpha.tokens["dispatcher"]) as http:
        alpha_van = create_vehicle(http, "Alpha van", phone)
        # The holder itself may keep writing the id (an edit that repeats it is not a conflict).
        renamed = http.patch(f"/api/v1/vehicles/{alpha_van}", json={"data": {"type": "vehicles", "attributes": {
            "name": "Alpha van 2", "device_id": phone}}})
        assert renamed.status_code == 200, renamed.text
    with client(live, beta.tokens["dispatcher"]) as http:
        taken = http.post("/api/v1/vehicles", json={"data": {"type": "vehicles", "attributes": {
            "name": "Beta van", "device_id": phone}}})
        beta_van = create_vehicle(http, "Beta bike", fresh_id())
        moved = http.patch(f"/api/v1/vehicles/{beta_van}", json={"data": {"type": "vehicles", "attributes": {
            "device_id": phone}}})
        beta_vehicles = http.get("/api/v1/vehicles").json()["data"]
    for refused in (taken, moved):
        assert refused.status_code == 409, refused.text
        (error,) = refused.json()["errors"]
        assert error["source"] == {"pointer": "/data/attributes/device_id"}
        assert "already registered" in error["detail"]
        assert alpha.id not in refused.text and "Alpha" not in refused.text and alpha_van not in refused.text
    assert [v["attributes"]["name"] for v in beta_vehicles] == ["Beta bike"]
    assert beta_vehicles[0]["attributes"]["device_id"] != phone
    assert report(live, phone).status_code == 200
    assert (fixes(live, alpha), fixes(live, beta)) == (1, 0)


def test_a_released_device_id_can_be_registered_by_another_tenant(live: LiveServer, alpha: Tenant, beta: Tenant,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "CLAIM_GRACE", timedelta(0))  # the server runs in this process
    phone = fresh_id()
    with client(live, alpha.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Sold van", phone)
    with client(live, beta.tokens["dispatcher"]) as http:
        early = http.post("/api/v1/vehicles", json={"data": {"type": "vehicles", "attributes": {
            "name": "Bought van", "device_id": phone}}})
        assert early.status_code == 409  # not while alpha still uses it
    with client(live, alpha.tokens["dispatcher"]) as http:
        released = http.patch(f"/api/v1/vehicles/{van}", json={"data": {"type": "vehicles", "attributes": {
            "device_id": None}}})
        assert released.status_code == 200, released.text
    with client(live, beta.tokens["dispatcher"]) as http:
        bought = create_vehicle(http, "Bought van", phone)
    assert report(live, phone).status_code == 200
    with client(live, beta.tokens["dispatcher"]) as http:
        assert [row["vehicle_id"] for row in stored(http, None)] == [bought]
    assert fixes(live, alpha) == 0


def test_a_device_id_taken_through_the_document_does_not_divert_or_stop_the_holders_phone(
        live: LiveServer, alpha: Tenant, beta: Tenant) -> None:
    phone = fresh_id()
    with client(live, alpha.tokens["dispatcher"]) as http:
        create_vehicle(http, "Alpha van", phone)
    beta_van = crdt_vehicle(live, beta, phone)  # merged, never rejected: a CRDT write cannot be refused
    response = report(live, phone)
    assert response.status_code == 200, response.text  # it used to be a 409 and nothing stored
    assert (fixes(live, alpha), fixes(live, beta)) == (1, 0)
    # The merged record is kept but flagged, so beta's dispatcher sees why the phone is not theirs.
    with client(live, beta.tokens["dispatcher"]) as http:
        meta = http.get(f"/api/v1/vehicles/{beta_van}").json()["data"]["meta"]
    assert meta["valid"] is False and meta["projection_error"] == devices.CONFLICT_REASON


def test_the_phone_endpoint_answers_alike_for_every_unusable_device_id(live: LiveServer, alpha: Tenant,
                                                                       beta: Tenant) -> None:
    doubled, disabled, unknown = (fresh_id(label) for label in ("doubled", "disabled", "unknown"))
    with client(live, alpha.tokens["dispatcher"]) as http:
        create_vehicle(http, "Twin one", doubled)
    crdt_vehicle(live, alpha, doubled)  # the same tenant on two vehicles
    gone = provision_tenant(live.settings, "Gone Logistics")
    with client(live, gone.tokens["dispatcher"]) as http:
        create_vehicle(http, "Their van", disabled)

    async def disable(db: Database) -> None:
        await accounts.disable_tenant(db, gone.id)

    with_db(live, disable)
    baseline = report(live, unknown)
    assert baseline.status_code == 404
    for device_id in (doubled, disabled):
        answer = report(live, device_id)
        assert answer.status_code == baseline.status_code
        assert answer.text.replace(device_id, unknown) == baseline.text
    assert fixes(live, alpha) == fixes(live, beta) == 0


def test_a_device_id_two_tenants_write_through_the_document_belongs_to_the_first_projected(
        live: LiveServer, alpha: Tenant, beta: Tenant) -> None:
    shared = fresh_id("shared")
    crdt_vehicle(live, alpha, shared)  # projected first: alpha's claim
    beta_van = crdt_vehicle(live, beta, shared)
    assert report(live, shared).status_code == 200
    assert (fixes(live, alpha), fixes(live, beta)) == (1, 0)
    with client(live, beta.tokens["dispatcher"]) as http:
        assert http.get(f"/api/v1/vehicles/{beta_van}").json()["data"]["meta"]["projection_error"] == (
            devices.CONFLICT_REASON)


def test_the_admin_page_refuses_another_tenants_device_id(live: LiveServer, alpha: Tenant, beta: Tenant) -> None:
    phone = fresh_id()
    with client(live, alpha.tokens["dispatcher"]) as http:
        create_vehicle(http, "Alpha van", phone)
    with client(live, beta.tokens["dispatcher"]) as http:
        beta_van = create_vehicle(http, "Beta van")
    with AdminClient(live).signed_in(beta.emails["admin"]) as admin:
        answer = admin.post(f"/admin/tenants/{beta.id}/devices/{beta_van}", {"device_id": phone})
        assert "already registered" in admin.flash(answer)
    with client(live, beta.tokens["dispatcher"]) as http:
        assert "device_id" not in http.get(f"/api/v1/vehicles/{beta_van}").json()["data"]["attributes"]


async def test_foreign_devices_names_the_ids_another_tenant_holds_and_claims_the_free_ones(db: Database) -> None:
    alpha = await accounts.create_tenant(db, "Alpha")
    beta = await accounts.create_tenant(db, "Beta")
    held, free = fresh_id("held"), fresh_id("free")
    await devices.claim(db, alpha.id, held)
    # What the projection asks about beta's vehicles: only alpha's id is foreign.
    assert await devices.foreign_devices(db, beta.id, [held, free, None, ""]) == {held}
    assert await devices.foreign_devices(db, alpha.id, [held]) == set()
    # First come: beta's document used `free` first, so now alpha may not take it.
    with pytest.raises(devices.DeviceTaken):
        await devices.claim(db, alpha.id, free)
    await devices.claim(db, beta.id, free)  # the holder may claim again
