"""Two desktop clients edit while the network is down; after it comes back, nothing is lost and
everyone (both clients, their tables and the server room) agrees."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from sync.client import SyncState
from sync.testing import MemoryHub

from .conftest import LINE, SQUARE, Peer, Replicas, eventually, hub_connector, run


async def with_two_clients(replicas: Replicas, scenario: Callable[[MemoryHub, Peer, Peer], Awaitable[None]]) -> None:
    hub = MemoryHub()
    a = Peer(replicas.mirror("a"), hub_connector(hub, user_id="a")).start()
    b = Peer(replicas.mirror("b"), hub_connector(hub, user_id="b")).start()
    try:
        await a.synced()
        await b.synced()
        await scenario(hub, a, b)
    finally:
        await a.stop()
        await b.stop()
        await hub.close()


async def go_offline(hub: MemoryHub, *peers: Peer) -> None:
    hub.online = False
    await hub.drop_all()
    for peer in peers:
        await peer.client.wait_for(lambda s: s.state == SyncState.OFFLINE)


async def come_back(hub: MemoryHub, *peers: Peer) -> None:
    hub.online = True
    for peer in peers:
        await peer.synced()


async def everyone_agrees(hub: MemoryHub, *peers: Peer) -> None:
    """Wait until every client holds what the room holds, then check the tables match too."""
    room = hub.rooms["tenant"]
    await eventually(lambda: all(p.mirror.document.snapshot() == room.document.snapshot() for p in peers),
                     message="clients and room converge")
    first = peers[0].store
    for peer in peers:
        assert peer.mirror.verify_and_repair().clean
        for name in ("vehicles", "drivers", "routes", "geofences"):
            assert getattr(peer.store, name).stored_rows() == getattr(first, name).stored_rows(), name


def triangle(lon: float, lat: float) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 0.1, lat], [lon + 0.1, lat + 0.1], [lon, lat]]]}


def test_offline_edits_of_different_fields_of_one_vehicle_both_survive(replicas: Replicas) -> None:
    async def scenario(hub: MemoryHub, a: Peer, b: Peer) -> None:
        van = a.fleet.create("vehicles", {"name": "Van 7", "plate": "AB-1"})
        await eventually(lambda: b.mirror.document.record("vehicles", van) is not None, message="b sees the van")

        await go_offline(hub, a, b)
        a.fleet.update("vehicles", van, {"plate": "NEW-PLATE"})
        b.fleet.update("vehicles", van, {"notes": "tyres changed", "speed_limit_kph": 80})
        await a.client.wait_for(lambda s: s.pending == 1)
        await b.client.wait_for(lambda s: s.pending == 1)
        await come_back(hub, a, b)

        await everyone_agrees(hub, a, b)
        for record in (a.mirror.document.record("vehicles", van), hub.rooms["tenant"].document.record("vehicles", van)):
            assert record is not None
            assert (record["plate"], record["notes"], record["speed_limit_kph"]) == ("NEW-PLATE", "tyres changed", 80)
        row = b.store.vehicles.get(van)
        assert row is not None and (row.plate, row.notes, row.speed_limit_kph) == ("NEW-PLATE", "tyres changed", 80.0)

    run(with_two_clients(replicas, scenario))


def test_concurrent_offline_edits_of_one_field_end_with_the_same_value_everywhere(replicas: Replicas) -> None:
    async def scenario(hub: MemoryHub, a: Peer, b: Peer) -> None:
        van = a.fleet.create("vehicles", {"name": "Van 7", "status": "active"})
        fence = b.fleet.create("geofences", {"name": "Depot", "geometry": SQUARE})
        await eventually(lambda: b.mirror.document.record("vehicles", van) is not None
                         and a.mirror.document.record("geofences", fence) is not None, message="both see both")

        await go_offline(hub, a, b)
        a.fleet.update("vehicles", van, {"name": "Alpha", "status": "maintenance"})
        b.fleet.update("vehicles", van, {"name": "Bravo", "status": "retired"})
        a.fleet.update("geofences", fence, {"geometry": triangle(6.0, 51.0)})
        b.fleet.update("geofences", fence, {"geometry": triangle(7.0, 50.0)})
        await come_back(hub, a, b)

        await everyone_agrees(hub, a, b)
        record = hub.rooms["tenant"].document.record("vehicles", van)
        assert record is not None and record["name"] in ("Alpha", "Bravo")
        # Each field settles on one of the written values, the same everywhere.
        for peer in (a, b):
            row = peer.store.vehicles.get(van)
            assert row is not None and (row.name, row.status) == (record["name"], record["status"])
            fence_row = peer.store.geofences.get(fence)
            assert fence_row is not None and fence_row.invalid_reason is None
            assert fence_row.data["geometry"] in (triangle(6.0, 51.0), triangle(7.0, 50.0))
        assert a.store.geofences.stored_rows() == b.store.geofences.stored_rows()  # geometry included

    run(with_two_clients(replicas, scenario))


def test_records_created_offline_get_uuids_and_arrive_everywhere(replicas: Replicas) -> None:
    async def scenario(hub: MemoryHub, a: Peer, b: Peer) -> None:
        await go_offline(hub, a, b)
        made_by_a = [
            ("vehicles", a.fleet.create("vehicles", {"name": "Offline van"})),
            ("routes", a.fleet.create("routes", {"name": "Offline route", "geometry": LINE})),
        ]
        made_by_b = [
            ("drivers", b.fleet.create("drivers", {"name": "Offline driver", "email": "d@example.com"})),
            ("geofences", b.fleet.create("geofences", {"name": "Offline fence", "geometry": SQUARE})),
        ]
        for _, record_id in made_by_a + made_by_b:
            assert uuid.UUID(record_id).version == 4
        assert len({rid for _, rid in made_by_a + made_by_b}) == 4
        await a.client.wait_for(lambda s: s.pending == 2 and s.state == SyncState.OFFLINE)
        await b.client.wait_for(lambda s: s.pending == 2 and s.state == SyncState.OFFLINE)
        assert "tenant" not in hub.rooms or not hub.rooms["tenant"].document.ids("vehicles")

        await come_back(hub, a, b)
        await everyone_agrees(hub, a, b)
        room = hub.rooms["tenant"].document
        for collection, record_id in made_by_a + made_by_b:
            assert record_id in room.ids(collection)
            for peer in (a, b):
                assert getattr(peer.store, collection).get(record_id) is not None, (collection, record_id)
        assert a.store.routes.in_bbox((5.0, 52.0, 5.3, 52.2))[0].name == "Offline route"
        assert b.store.routes.in_bbox((5.0, 52.0, 5.3, 52.2))[0].name == "Offline route"

    run(with_two_clients(replicas, scenario))
