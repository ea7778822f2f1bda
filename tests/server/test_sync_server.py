"""End to end through a real uvicorn server and real websockets, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from storage import Store
from sync import protocol
from sync.client import StaticToken, SyncClient, SyncState, websocket_connector
from sync.mirror import Mirror
from sync.services import LocalFleet


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings)


def make_client(tmp_path: Path, name: str, live: LiveServer, tenant: Tenant, role: str = "dispatcher"
                ) -> tuple[SyncClient, LocalFleet]:
    mirror = Mirror.open(Store(tmp_path / f"{name}.sqlite"))
    tokens = StaticToken(tenant.tokens[role])
    client = SyncClient(mirror, websocket_connector(live.url, tenant.id, tokens), tokens=tokens,
                        min_backoff=0.05, max_backoff=0.5)
    return client, LocalFleet(mirror)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll a condition until it holds (no fixed sleeps); fail with the last value otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(0.02)


async def running(*clients: SyncClient, body: Callable[[], Awaitable[None]]) -> None:
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        await body()
    finally:
        for client in clients:
            await client.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


def rest(live: LiveServer, tenant: Tenant, role: str = "dispatcher") -> httpx.Client:
    return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {tenant.tokens[role]}"}, timeout=10)


def test_edit_reaches_second_client_and_the_rest_api(tmp_path: Path, live: LiveServer, tenant: Tenant) -> None:
    first, fleet = make_client(tmp_path, "first", live, tenant)
    second, _ = make_client(tmp_path, "second", live, tenant)

    async def body() -> None:
        await first.wait_for(lambda s: s.state == SyncState.SYNCED)
        vehicle_id = fleet.create("vehicles", {"name": "Van 7", "plate": "B-WH 7", "device_id": "imei-7"})
        status = await first.wait_for(lambda s: s.state == SyncState.SYNCED and s.pending == 0)
        assert status.last_synced_at is not None
        await eventually(lambda: second.mirror.store.vehicles.get(vehicle_id))
        assert second.mirror.store.vehicles.get(vehicle_id).plate == "B-WH 7"  # type: ignore[union-attr]
        with rest(live, tenant) as http:
            body = (await asyncio.to_thread(http.get, f"/api/v1/vehicles/{vehicle_id}")).json()
        assert body["data"]["attributes"]["name"] == "Van 7"
        assert body["data"]["meta"]["valid"] is True

    asyncio.run(running(first, second, body=body))


def test_bad_token_stops_retrying_and_asks_to_sign_in(tmp_path: Path, live: LiveServer, tenant: Tenant) -> None:
    mirror = Mirror.open(Store(tmp_path / "c.sqlite"))
    client = SyncClient(mirror, websocket_connector(live.url, tenant.id, StaticToken("not-a-token")))

    async def body() -> None:
        status = await client.wait_for(lambda s: s.state == SyncState.SIGN_IN_REQUIRED)
        assert "sign in again" in status.detail

    asyncio.run(running(client, body=body))


@pytest.mark.parametrize(("token_of", "status"), [("none", 401), ("garbage", 401), ("other_tenant", 403)])
def test_handshake_rejections_are_http_401_or_403_never_500(live: LiveServer, tenant: Tenant, token_of: str,
                                                             status: int) -> None:
    other = provision_tenant(live.settings, "Other Freight")
    token = {"none": "", "garbage": "x.y", "other_tenant": other.tokens["admin"]}[token_of]

    async def attempt() -> int:
        url = f"ws://127.0.0.1:{live.port}/sync/{tenant.id}" + (f"?token={token}" if token else "")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        return refused.value.response.status_code

    assert asyncio.run(attempt()) == status


def test_field_role_writes_are_ignored_and_reported(tmp_path: Path, live: LiveServer, tenant: Tenant) -> None:
    field, field_fleet = make_client(tmp_path, "field", live, tenant, role="field")
    dispatcher, fleet = make_client(tmp_path, "dispatcher", live, tenant)

    async def body() -> None:
        await dispatcher.wait_for(lambda s: s.state == SyncState.SYNCED)
        known = fleet.create("vehicles", {"name": "Known"})
        await dispatcher.wait_for(lambda s: s.pending == 0 and s.state == SyncState.SYNCED)
        await eventually(lambda: field.mirror.store.vehicles.get(known))  # field staff still read
        sneaky = field_fleet.create("vehicles", {"name": "Sneaky"})
        status = await field.wait_for(lambda s: s.read_only)
        assert "read-only" in status.detail
        with rest(live, tenant) as http:
            response = await asyncio.to_thread(http.get, f"/api/v1/vehicles/{sneaky}")
        assert response.status_code == 404
        assert dispatcher.mirror.store.vehicles.get(sneaky) is None

    asyncio.run(running(field, dispatcher, body=body))


def test_oversized_and_garbage_frames_close_only_that_socket(live: LiveServer, tenant: Tenant) -> None:
    url = f"ws://127.0.0.1:{live.port}/sync/{tenant.id}?token={tenant.tokens['dispatcher']}"

    async def scenario() -> None:
        async with connect(url) as bystander, connect(url, max_size=None) as offender:
            await offender.send(protocol.update_message(b"\x01" * (live.settings.max_message_bytes + 10)))
            await offender.wait_closed()
            assert offender.close_code == 1009
            async with connect(url) as garbage:
                await garbage.send(b"\x00\x02\x05ab")
                await garbage.wait_closed()
                assert garbage.close_code == 1007
            # The room carries on for everyone else.
            await bystander.send(protocol.sync_step1(b"\x00"))
            frames = [protocol.parse(await bystander.recv()) for _ in range(2)]
            assert protocol.MessageKind.SYNC_STEP2 in {f.kind for f in frames}

    asyncio.run(scenario())


def test_offline_edit_reaches_server_after_restart_with_no_user_action(tmp_path: Path, live: LiveServer,
                                                                       tenant: Tenant) -> None:
    client, fleet = make_client(tmp_path, "c", live, tenant)

    async def body() -> None:
        await client.wait_for(lambda s: s.state == SyncState.SYNCED)
        before = fleet.create("vehicles", {"name": "Before restart"})
        await client.wait_for(lambda s: s.pending == 0 and s.state == SyncState.SYNCED)
        await asyncio.to_thread(live.stop)
        await client.wait_for(lambda s: s.state in (SyncState.OFFLINE, SyncState.CONNECTING))
        during = fleet.create("vehicles", {"name": "While the server was down"})
        offline = await client.wait_for(lambda s: (s.pending or 0) >= 1)
        assert offline.state in (SyncState.OFFLINE, SyncState.CONNECTING)
        await asyncio.to_thread(live.start)
        await client.wait_for(lambda s: s.state == SyncState.SYNCED and s.pending == 0, timeout=20)
        with rest(live, tenant) as http:
            listed = (await asyncio.to_thread(http.get, "/api/v1/vehicles")).json()
        assert {r["id"] for r in listed["data"]} >= {before, during}

    asyncio.run(running(client, body=body))


def test_rest_write_reaches_connected_client_and_invalid_write_is_422(tmp_path: Path, live: LiveServer,
                                                                      tenant: Tenant) -> None:
    client, _ = make_client(tmp_path, "c", live, tenant)

    async def body() -> None:
        await client.wait_for(lambda s: s.state == SyncState.SYNCED)
        with rest(live, tenant) as http:
            created = await asyncio.to_thread(http.post, "/api/v1/geofences", json={"data": {
                "type": "geofences", "attributes": {"name": "Depot", "geometry": {
                    "type": "Polygon", "coordinates": [[[13.3, 52.5], [13.4, 52.5], [13.4, 52.6], [13.3, 52.5]]]}}}})
            assert created.status_code == 201, created.text
            fence_id = created.json()["data"]["id"]
            await eventually(lambda: client.mirror.store.geofences.get(fence_id))
            bad = await asyncio.to_thread(http.post, "/api/v1/geofences", json={"data": {
                "type": "geofences", "attributes": {"name": "Bowtie", "geometry": {
                    "type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}}})
            assert bad.status_code == 422
            error = bad.json()["errors"][0]
            assert error["source"]["pointer"] == "/data/attributes/geometry"
            assert "Self-intersection" in error["detail"]
            patched = await asyncio.to_thread(http.patch, f"/api/v1/geofences/{fence_id}", json={"data": {
                "type": "geofences", "id": fence_id, "attributes": {"kind": "depot"}}})
            assert patched.json()["data"]["attributes"]["kind"] == "depot"
            await eventually(lambda: client.mirror.store.geofences.get(fence_id).kind == "depot")  # type: ignore[union-attr]
            found = (await asyncio.to_thread(http.get, "/api/v1/geofences",
                                             params={"filter[bbox]": "13.35,52.52,13.36,52.53"})).json()
            assert [r["id"] for r in found["data"]] == [fence_id]
            away = (await asyncio.to_thread(http.get, "/api/v1/geofences",
                                            params={"filter[bbox]": "10,40,10.1,40.1"})).json()
            assert away["data"] == []
            assert (await asyncio.to_thread(http.delete, f"/api/v1/geofences/{fence_id}")).status_code == 204
            await eventually(lambda: client.mirror.store.geofences.get(fence_id) is None)

    asyncio.run(running(client, body=body))


def test_invalid_record_from_a_client_is_kept_and_flagged(tmp_path: Path, live: LiveServer, tenant: Tenant) -> None:
    client, _ = make_client(tmp_path, "c", live, tenant)

    async def body() -> None:
        await client.wait_for(lambda s: s.state == SyncState.SYNCED)
        # A peer without our validation writes a self-intersecting polygon straight into the document.
        with client.mirror.edit() as document:
            document.put_record("geofences", "bowtie-1", {"name": "Bowtie", "geometry": {
                "type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}})
        await client.wait_for(lambda s: s.pending == 0 and s.state == SyncState.SYNCED)
        with rest(live, tenant) as http:
            fetched = await eventually(lambda: _ok(http.get("/api/v1/geofences/bowtie-1")))
        assert fetched["data"]["meta"]["valid"] is False
        assert "Self-intersection" in fetched["data"]["meta"]["projection_error"]
        assert "Self-intersection" in (client.mirror.store.geofences.get("bowtie-1").invalid_reason or "")  # type: ignore[union-attr]

    asyncio.run(running(client, body=body))


def _ok(response: httpx.Response) -> Any:
    return response.json() if response.status_code == 200 else None
