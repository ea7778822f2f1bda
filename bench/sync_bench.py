"""Sync benchmark: initial sync of a large tenant into an empty client, and remote churn.

Run: .venv/bin/python -m bench.sync_bench   (add --quick for a tenth of the data)
Baseline in the same run: pycrdt's raw Doc.apply_update of the same update.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import shapely
import shapely.geometry
from pycrdt import Doc

from bench.fleet_data import fill
from storage import Store
from sync import protocol
from sync.client import SyncClient, SyncState
from sync.document import FleetDocument
from sync.mirror import Mirror
from sync.services import update_record
from sync.testing import MemoryHub


async def initial_sync(workdir: Path, scale: int) -> None:
    source = FleetDocument()
    fill(source, vehicles=10_000 // scale, drivers=2_000 // scale, geofences=1_000 // scale, routes=500 // scale)
    update = source.get_update()

    t0 = time.perf_counter()
    raw = Doc()
    raw.apply_update(update)
    raw_seconds = time.perf_counter() - t0

    hub = MemoryHub()
    room = await hub.room("tenant")
    await room.apply_external(update)
    while room.document.ids("vehicles") != source.ids("vehicles"):
        await asyncio.sleep(0.01)

    mirror = Mirror.open(Store(workdir / "client.sqlite"))
    client = SyncClient(mirror, lambda: hub.connect("tenant"))
    t0 = time.perf_counter()
    task = asyncio.create_task(client.run())
    await client.wait_for(lambda s: s.state == SyncState.SYNCED, timeout=120)
    total = time.perf_counter() - t0
    counts = {name: getattr(mirror.store, name).count() for name in ("vehicles", "drivers", "geofences", "routes")}
    await client.stop()
    await task
    await hub.close()
    check_fully_mirrored(mirror, source, counts)
    print(f"initial sync of {counts} ({len(update) / 1e6:.1f} MB update)")
    print(f"  connect to fully mirrored SpatiaLite store: {total:.2f} s (goal < 3 s)")
    print(f"  baseline raw Doc.apply_update:              {raw_seconds:.2f} s "
          f"(ours {total / raw_seconds:.1f}x raw; goal < 5x)")
    mirror.store.close()


def check_fully_mirrored(mirror: Mirror, source: FleetDocument, counts: dict[str, int]) -> None:
    """The measured sync really left every record in the tables (checked after the clock stops)."""
    expected = {name: len(source.ids(name)) for name in counts}
    assert counts == expected, f"rows {counts} != records {expected}"
    # Every row equal to what the document says it should be: columns, JSON, validity, geometry.
    report = mirror.verify_and_repair()
    assert report.clean, f"the store differed from the document: {report}"
    for name in ("vehicles", "geofences", "routes"):  # a few spot checks against the source itself
        for record_id in sorted(source.ids(name))[:3]:
            record = source.record(name, record_id)
            stored = getattr(mirror.store, name).get(record_id)
            assert record is not None and stored is not None and stored.data == record, (name, record_id)
            assert stored.invalid_reason is None, (name, record_id, stored.invalid_reason)
            if name != "vehicles":
                wkb = mirror.store.scalar(f"SELECT AsBinary(geometry) FROM {name} WHERE id = ?", (record_id,))
                geom = shapely.from_wkb(bytes(wkb))
                read = shapely.geometry.shape(record["geometry"])
                assert geom.equals(read if name == "routes" else shapely.MultiPolygon([read])), (name, record_id)
    assert mirror.store.scalar("SELECT count(*) FROM idx_geofences_geometry") == counts["geofences"]
    assert mirror.store.scalar("SELECT count(*) FROM idx_routes_geometry") == counts["routes"]


BURST = 1_000  # remote updates per apply_remote_many call (one SQLite transaction each)


def check_notes(mirror: Mirror, expected: dict[str, str]) -> None:
    """Every record's change reached the SpatiaLite table (not only the last one)."""
    rows = dict(mirror.store.query("SELECT id, notes FROM vehicles"))
    assert rows == expected, f"{sum(rows.get(k) != v for k, v in expected.items())} records differ"


def remote_churn(workdir: Path, scale: int) -> None:
    changes = 10_000 // scale
    source = FleetDocument()
    fill(source, vehicles=changes, drivers=0, geofences=0, routes=0)
    source.take_changes()  # the fill itself is the initial state below, not one of the changes
    initial = source.get_update()
    ids = sorted(source.ids("vehicles"))
    updates = []
    for i, vehicle_id in enumerate(ids):  # one remote change per record, as peers send them
        with source.transaction():
            update_record(source, "vehicles", vehicle_id, {"notes": f"change {i}", "speed_limit_kph": 50 + i % 50})
        updates.append(source.take_changes().updates[0])
    expected = {vehicle_id: f"change {i}" for i, vehicle_id in enumerate(ids)}

    batched = Mirror.open(Store(workdir / "churn-batched.sqlite"))
    batched.apply_remote(initial)
    t0 = time.perf_counter()
    for start in range(0, len(updates), BURST):
        batched.apply_remote_many(updates[start:start + BURST])
    batched_seconds = time.perf_counter() - t0
    check_notes(batched, expected)
    batched.store.close()

    mirror = Mirror.open(Store(workdir / "churn.sqlite"))
    mirror.apply_remote(initial)
    t0 = time.perf_counter()
    for update in updates:
        mirror.apply_remote(update)
    ours = time.perf_counter() - t0
    check_notes(mirror, expected)
    replay = Doc()
    replay.apply_update(initial)
    t0 = time.perf_counter()
    for update in updates:
        replay.apply_update(update)
    raw_seconds = time.perf_counter() - t0
    print(f"remote churn, {changes:,} record changes, one remote update each:")
    print(f"  apply_remote_many, bursts of {BURST:,} updates per SQLite transaction: "
          f"{changes / batched_seconds:,.0f} records/s (goal >= 20,000)")
    print(f"  apply_remote, one SQLite transaction per update (worst case):  {changes / ours:,.0f} records/s")
    print(f"  baseline raw Doc.apply_update:                 {changes / raw_seconds:,.0f} updates/s")
    mirror.store.close()


async def churn_through_room(workdir: Path, scale: int) -> None:
    """The real path: a peer sends one update per record change through the room; the client
    mirrors whatever arrived together in one transaction."""
    changes = 10_000 // scale
    hub = MemoryHub()
    source = FleetDocument()
    fill(source, vehicles=changes, drivers=0, geofences=0, routes=0)
    source.take_changes()  # the fill is the room's initial state, not one of the burst's frames
    room = await hub.room("tenant")
    await room.apply_external(source.get_update())
    mirror = Mirror.open(Store(workdir / "room-churn.sqlite"))
    client = SyncClient(mirror, lambda: hub.connect("tenant"))
    task = asyncio.create_task(client.run())
    await client.wait_for(lambda s: s.state == SyncState.SYNCED, timeout=120)
    writer = await hub.connect("tenant")
    ids = sorted(source.ids("vehicles"))
    frames = []
    for i, vehicle_id in enumerate(ids):
        with source.transaction():
            update_record(source, "vehicles", vehicle_id, {"notes": f"burst {i}"})
        frames.append(protocol.update_message(source.take_changes().updates[0]))
    last = ids[-1]
    t0 = time.perf_counter()
    for frame in frames:
        await writer.send(frame)
    while (vehicle := mirror.store.vehicles.get(last)) is None or vehicle.notes != f"burst {len(ids) - 1}":
        await asyncio.sleep(0.005)
    seconds = time.perf_counter() - t0
    check_notes(mirror, {vehicle_id: f"burst {i}" for i, vehicle_id in enumerate(ids)})
    print(f"  through the room to a connected client (group commit, batched mirror): "
          f"{changes / seconds:,.0f} records/s")
    await client.stop()
    await task
    await hub.close()
    mirror.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(initial_sync(Path(tmp), scale))
        remote_churn(Path(tmp), scale)
        asyncio.run(churn_through_room(Path(tmp), scale))


if __name__ == "__main__":
    main()
