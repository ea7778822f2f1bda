"""`WS /api/v1/live`: authenticated before accept, and only ever the token's own tenant's fixes and events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from server_stub import accounts
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for

from .gps_support import BASE_LAT, BASE_LON, client, create_geofence, create_vehicle, iso, now_s, square, with_db


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


def ws_url(live: LiveServer, token: str) -> str:
    return f"ws://127.0.0.1:{live.port}/api/v1/live" + (f"?token={token}" if token else "")


async def next_message(socket: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout))
    return message


async def post(live: LiveServer, token: str, positions: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": f"Bearer {token}"}) as http:
        response = await http.post("/api/v1/positions", json={"positions": positions})
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(positions), response.text


def test_each_live_socket_receives_its_own_tenants_positions_and_events_and_never_another_tenants(
        live: LiveServer) -> None:
    a = provision_tenant(live.settings, "Alpha Freight")
    b = provision_tenant(live.settings, "Bravo Freight")
    with client(live, a.tokens["dispatcher"]) as http:
        a_van = create_vehicle(http, "A van")
        fence = create_geofence(http, "A depot", square(BASE_LON, BASE_LAT, 0.002))
    with client(live, b.tokens["dispatcher"]) as http:
        b_van = create_vehicle(http, "B van")
    t = now_s() - 60

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with connect(ws_url(live, a.tokens["field"])) as a_socket, \
                connect(ws_url(live, b.tokens["dispatcher"])) as b_socket:  # fmt: skip
            assert await next_message(a_socket) == {"type": "ready"}
            assert await next_message(b_socket) == {"type": "ready"}
            # B first: if isolation failed, A's socket would see B's fix before its own.
            await post(live, b.tokens["dispatcher"], [{"vehicle_id": b_van, "fix_time": iso(t), "lat": BASE_LAT,
                                                       "lon": BASE_LON, "speed_kph": 12.0}])
            await post(live, a.tokens["field"], [
                {"vehicle_id": a_van, "fix_time": iso(t), "lat": BASE_LAT + 0.01, "lon": BASE_LON},
                {"vehicle_id": a_van, "fix_time": iso(t + 5), "lat": BASE_LAT, "lon": BASE_LON, "speed_kph": 8.5}])
            a_seen = [await next_message(a_socket) for _ in range(2)]
            b_seen = [await next_message(b_socket)]
            # Anything else queued for either socket would arrive within this grace period.
            for socket, seen in ((a_socket, a_seen), (b_socket, b_seen)):
                with contextlib.suppress(TimeoutError):
                    seen.append(await next_message(socket, timeout=0.5))
            return a_seen, b_seen

    a_seen, b_seen = asyncio.run(scenario())
    a_positions = [m for m in a_seen if m["type"] == "position"]
    assert [(m["vehicle_id"], m["fix_time"], m["speed_kph"]) for m in a_positions] == [(a_van, iso(t + 5), 8.5)]
    a_events = [m for m in a_seen if m["type"] == "event"]
    assert [(m["vehicle_id"], m["kind"], m["geofence_id"]) for m in a_events] == [(a_van, "geofence_enter", fence)]
    assert [(m["type"], m["vehicle_id"]) for m in b_seen] == [("position", b_van)]
    assert b_van not in json.dumps(a_seen) and a_van not in json.dumps(b_seen)


@pytest.mark.parametrize(("credential", "status"), [("none", 401), ("garbage", 401), ("positions key", 403)])
def test_live_handshake_is_refused_before_accept_with_401_or_403(live: LiveServer, credential: str,
                                                                 status: int) -> None:
    tenant = provision_tenant(live.settings, "Gamma")
    key = with_db(live, lambda db: accounts.create_api_key(db, tenant.id, "tracker", ["positions"]))[1]
    token = {"none": "", "garbage": "x.y", "positions key": key}[credential]

    async def attempt() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(live, token)):
                pass
        return refused.value.response.status_code

    assert asyncio.run(attempt()) == status


def test_osmand_fixes_are_pushed_live_too(live: LiveServer) -> None:
    tenant: Tenant = provision_tenant(live.settings, "Delta")
    device_id = f"phone-{tenant.id[:8]}"
    with client(live, tenant.tokens["dispatcher"]) as http:
        bike = create_vehicle(http, "Bike", device_id)

    async def scenario() -> dict[str, Any]:
        async with connect(ws_url(live, tenant.tokens["dispatcher"])) as socket:
            assert await next_message(socket) == {"type": "ready"}
            async with httpx.AsyncClient(base_url=live.url) as phone:
                response = await phone.get("/api/v1/osmand", params={"id": device_id, "lat": BASE_LAT,
                                                                     "lon": BASE_LON, "speed": 5})
                assert response.status_code == 200, response.text
            return await next_message(socket)

    message = asyncio.run(scenario())
    assert (message["type"], message["vehicle_id"], message["device_id"]) == ("position", bike, device_id)
    assert message["speed_kph"] == pytest.approx(9.26)
