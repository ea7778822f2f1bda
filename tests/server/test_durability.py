"""Nothing committed is ever lost: compaction, idle rooms, projection after a crash, durable acks.

Each test drives a real uvicorn server and checks the database through a separate handle,
on SQLite and on Postgres.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pycrdt import merge_updates

from server_stub import accounts, auth, persistence
from server_stub.db import Database, open_database
from server_stub.db.migrations import migrate
from server_stub.persistence import CompactionNotLossless, DatabasePersistence
from server_stub.projection import Projector
from server_stub.rooms import RoomManager
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from storage import Store
from sync.client import StaticToken, SyncClient, SyncState, websocket_connector
from sync.document import Record
from sync.mirror import Mirror, doc_from_updates
from sync.room import Room, StoredUpdate
from sync.services import LocalFleet, create_record

from .fleet_http import attributes, client, create, document, eventually, metrics, random_id, wait_until

T = TypeVar("T")
Snapshot = dict[str, dict[str, Record]]


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    live = LiveServer(settings_for(database_url))
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def tenant(server: LiveServer) -> Tenant:
    return provision_tenant(server.settings)


def make_client(tmp_path: Path, name: str, server: LiveServer, tenant: Tenant) -> tuple[SyncClient, LocalFleet]:
    mirror = Mirror.open(Store(tmp_path / f"{name}.sqlite"))
    tokens = StaticToken(tenant.tokens["dispatcher"])
    sync = SyncClient(mirror, websocket_connector(server.url, tenant.id, tokens), tokens=tokens,
                      min_backoff=0.05, max_backoff=0.5)
    return sync, LocalFleet(mirror)


def running(sync: SyncClient, body: Callable[[], Awaitable[T]]) -> T:
    """Run one client for the duration of body (in a fresh event loop); body's result."""

    async def scenario() -> T:
        task = asyncio.create_task(sync.run())
        try:
            return await body()
        finally:
            await sync.stop()
            await asyncio.gather(task, return_exceptions=True)

    return asyncio.run(scenario())


async def synced(sync: SyncClient) -> None:
    """Every local change is acknowledged as committed. The outbox itself is asked: right after an
    edit the published status can still show the previous "synced, 0 pending" for a moment."""
    await eventually(lambda: sync.status.state == SyncState.SYNCED
                     and sync.mirror.store.sync_log.pending_count() == 0, timeout=20)


def fresh_client_snapshot(tmp_path: Path, name: str, server: LiveServer, tenant: Tenant,
                          expected: Snapshot) -> Snapshot:
    """What a client that has never synced holds once it has caught up with the server."""
    sync, _ = make_client(tmp_path, name, server, tenant)

    async def body() -> Snapshot:
        await synced(sync)
        await eventually(lambda: sync.mirror.document.snapshot() == expected)
        for collection, records in expected.items():  # and its SQLite store has every record too
            repository = getattr(sync.mirror.store, collection)
            assert {record_id for record_id in records if repository.get(record_id) is not None} == set(records)
        return sync.mirror.document.snapshot()

    return running(sync, body)


async def with_db(url: str, action: Callable[[Database], Awaitable[T]]) -> T:
    db = await open_database(url)
    try:
        return await action(db)
    finally:
        await db.close()


def stored_snapshot(url: str, tenant_id: str) -> Snapshot:
    """The tenant document as the database alone holds it (snapshot plus logged updates)."""

    async def load(db: Database) -> Snapshot:
        return doc_from_updates(await DatabasePersistence(db).load(tenant_id)).snapshot()

    return asyncio.run(with_db(url, load))


def total(server: LiveServer, tenant: Tenant, collection: str) -> int:
    with client(server, tenant.tokens["dispatcher"]) as http:
        response = http.get(f"/api/v1/{collection}")
    assert response.status_code == 200, response.text
    return int(response.json()["meta"]["total"])


# -- (a) compaction ---------------------------------------------------------------------------


def test_compaction_folds_the_log_into_a_snapshot_and_a_fresh_client_still_gets_everything(
    tmp_path: Path, server: LiveServer, tenant: Tenant
) -> None:
    url = server.settings.database_url
    writer, fleet = make_client(tmp_path, "writer", server, tenant)

    async def write() -> Snapshot:
        await synced(writer)
        ids = []
        for n in range(20):
            ids.append(fleet.create("vehicles", {"name": f"Truck {n:02d}", "plate": f"T-{n:02d}"}))
            if n % 4 == 3:
                await synced(writer)  # separate commits, so the log really has many rows
        for record_id in ids[:5]:
            fleet.update("vehicles", record_id, {"status": "maintenance"})
        fleet.delete("vehicles", ids[19])
        await synced(writer)
        with client(server, tenant.tokens["dispatcher"]) as http:  # server-side edits interleave with the client's
            for n in range(3):
                await asyncio.to_thread(create, server, tenant.tokens["dispatcher"], "drivers",
                                        attributes("drivers", f"Driver {n}"))
            patched = await asyncio.to_thread(http.patch, f"/api/v1/vehicles/{ids[0]}",
                                              json=document("vehicles", {"notes": "brakes"}, ids[0]))
            assert patched.status_code == 200, patched.text
        await eventually(lambda: len(writer.mirror.document.records("drivers")) == 3
                         and writer.mirror.document.record("vehicles", ids[0]).get("notes") == "brakes")  # type: ignore[union-attr]
        return writer.mirror.document.snapshot()

    expected = running(writer, write)
    assert len(expected["vehicles"]) == 19 and expected["vehicles"][ids_of(expected, "Truck 00")]["notes"] == "brakes"
    server.stop()

    async def compact(db: Database) -> tuple[int, int, Any, list[bytes], Any]:
        store = DatabasePersistence(db)
        before = await store.log_size(tenant.id)
        report = await store.compact(tenant.id)
        return before, await store.log_size(tenant.id), report, await store.load(tenant.id), \
            await store.last_compaction(tenant.id)

    before, after, report, stored, compaction = asyncio.run(with_db(url, compact))
    assert before >= 10, "the writes should have produced a real log"
    assert (report.folded_rows, after) == (before, 0)
    assert len(stored) == 1 and compaction["folded_rows"] == before
    assert doc_from_updates(stored).snapshot() == expected

    server.start()
    assert fresh_client_snapshot(tmp_path, "fresh", server, tenant, expected) == expected
    assert total(server, tenant, "vehicles") == 19 and total(server, tenant, "drivers") == 3

    # A second round folds only what came after the first snapshot, and still loses nothing.
    extra = create(server, tenant.tokens["dispatcher"], "geofences", attributes("geofences", "Depot after"))
    server.stop()
    _, after, report, stored, _ = asyncio.run(with_db(url, compact))
    assert (report.folded_rows, after, len(stored)) == (1, 0, 1)
    reloaded = doc_from_updates(stored).snapshot()
    assert reloaded["geofences"][extra]["name"] == "Depot after"
    assert {c: r for c, r in reloaded.items() if c != "geofences"} == {
        c: r for c, r in expected.items() if c != "geofences"}
    server.start()
    assert fresh_client_snapshot(tmp_path, "fresh-2", server, tenant, reloaded) == reloaded


def ids_of(snapshot: Snapshot, name: str) -> str:
    (record_id,) = [i for i, r in snapshot["vehicles"].items() if r.get("name") == name]
    return record_id


def test_compaction_that_would_lose_updates_is_refused_and_deletes_nothing(
    server: LiveServer, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.settings.database_url
    ids = [create(server, tenant.tokens["dispatcher"], "vehicles", attributes("vehicles", f"Van {n}"))
           for n in range(3)]
    server.stop()  # the server runs in this process: keep it out of the patched merge
    # A broken merge that keeps only the first logged update.
    monkeypatch.setattr(persistence, "merge_updates", lambda *updates: merge_updates(updates[0]))

    async def attempt(db: Database) -> tuple[int, int, Any]:
        store = DatabasePersistence(db)
        before = await store.log_size(tenant.id)
        with pytest.raises(CompactionNotLossless):
            await store.compact(tenant.id)
        return before, await store.log_size(tenant.id), await store.last_compaction(tenant.id)

    before, after, compaction = asyncio.run(with_db(url, attempt))
    assert before == after >= 3
    assert compaction is None  # no snapshot written either
    assert set(stored_snapshot(url, tenant.id)["vehicles"]) == set(ids)

    monkeypatch.undo()  # with the real merge the same log compacts fine
    report = asyncio.run(with_db(url, lambda db: DatabasePersistence(db).compact(tenant.id)))
    assert report.folded_rows == before
    assert set(stored_snapshot(url, tenant.id)["vehicles"]) == set(ids)


# -- (b) idle rooms ------------------------------------------------------------------------------


@pytest.fixture
def eager_unloading_server(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url, room_idle_seconds=0.2)) as live:
        yield live


def test_idle_room_unloads_and_a_fresh_client_gets_every_record(tmp_path: Path,
                                                                eager_unloading_server: LiveServer) -> None:
    server = eager_unloading_server
    tenant = provision_tenant(server.settings)
    writer, fleet = make_client(tmp_path, "writer", server, tenant)

    async def write() -> Snapshot:
        await synced(writer)
        assert metrics(server)["webhost_rooms_loaded"] == 1
        for n in range(5):
            record_id = fleet.create("vehicles", {"name": f"Idle {n}"})
            fleet.update("vehicles", record_id, {"plate": f"I-{n}"})
        fleet.create("geofences", attributes("geofences", "Yard"))
        await synced(writer)
        return writer.mirror.document.snapshot()

    expected = running(writer, write)
    wait_until(lambda: metrics(server)["webhost_rooms_loaded"] == 0)  # unloaded once nobody uses it
    assert fresh_client_snapshot(tmp_path, "fresh", server, tenant, expected) == expected

    # Unloaded again; a REST write reloads it, and that write is not lost on the next unload either.
    wait_until(lambda: metrics(server)["webhost_rooms_loaded"] == 0)
    rest_id = create(server, tenant.tokens["dispatcher"], "drivers", attributes("drivers", "After unload"))
    wait_until(lambda: metrics(server)["webhost_rooms_loaded"] == 0)
    after = stored_snapshot(server.settings.database_url, tenant.id)
    assert after["drivers"][rest_id]["name"] == "After unload"
    assert {c: r for c, r in after.items() if c != "drivers"} == {c: r for c, r in expected.items() if c != "drivers"}
    assert fresh_client_snapshot(tmp_path, "fresh-2", server, tenant, after) == after


def test_rest_writes_never_hang_or_vanish_while_the_room_is_unloaded_under_them(database_url: str) -> None:
    """The reaper may unload a room while a REST write is being committed in it."""
    with LiveServer(settings_for(database_url, room_idle_seconds=0.0)) as server:
        tenant = provision_tenant(server.settings)
        created: list[str] = []
        done = threading.Event()

        def writer(worker: int) -> None:
            with httpx.Client(base_url=server.url, timeout=10,
                              headers={"Authorization": f"Bearer {tenant.tokens['dispatcher']}"}) as http:
                n = 0
                while not done.is_set():
                    response = http.post("/api/v1/vehicles", json=document(
                        "vehicles", {"name": f"W{worker}-{n}"}))  # a hang here is a ReadTimeout
                    assert response.status_code == 201, response.text
                    created.append(response.json()["data"]["id"])
                    n += 1

        unloads, last_commits = 0, 0.0

        def reloaded() -> bool:
            # An unload shows as no room loaded, or as the room's commit counter starting over.
            nonlocal unloads, last_commits
            sample = metrics(server)
            commits = sample.get("webhost_room_commits_total", 0.0) if sample["webhost_rooms_loaded"] else 0.0
            if sample["webhost_rooms_loaded"] == 0 or commits < last_commits:
                unloads += 1
            last_commits = commits
            return unloads >= 4

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(writer, w) for w in range(4)]
            try:
                wait_until(lambda: reloaded() or any(f.done() for f in futures), timeout=30, interval=0.005)
            finally:
                done.set()
            for future in futures:
                future.result()
        assert unloads >= 4
        assert total(server, tenant, "vehicles") == len(created)
        assert set(stored_snapshot(server.settings.database_url, tenant.id)["vehicles"]) == set(created)


def test_projection_lagging_across_a_room_reload_projects_from_the_reloaded_room(database_url: str) -> None:
    """Deterministic form of a race the test above can hit: changes committed by a reloaded room
    while projection still held the unloaded room must be projected from the new document."""

    async def scenario() -> tuple[set[str], set[str], int, int | None]:
        db = await open_database(database_url)
        try:
            await migrate(db)
            tenant = await accounts.create_tenant(db, "Reloaded", "pro")
            store = DatabasePersistence(db)
            projector = Projector(db)  # worker not started yet: projection lags, as under load
            old = Room(tenant.id, store, on_applied=projector.on_applied)
            await old.start()
            before = await old.transact(lambda d: create_record(d, "vehicles", {"name": "Before reload"}))
            await old.stop()  # unloaded while its change still waits for projection
            new = Room(tenant.id, store, on_applied=projector.on_applied)
            await new.start()
            after = await new.transact(lambda d: create_record(d, "vehicles", {"name": "After reload"}))
            await projector.start()
            try:
                await asyncio.wait_for(projector.flush(), 10)
            finally:
                await new.stop()
                await projector.close()
            async with db.transaction(customer_id=tenant.id) as tx:
                rows = await tx.fetch("SELECT id FROM vehicles WHERE customer_id = ?", (tenant.id,))
            return {str(before), str(after)}, {r["id"] for r in rows}, await projector.watermark(tenant.id), \
                await store.head(tenant.id)
        finally:
            await db.close()

    written, projected, watermark, head = asyncio.run(scenario())
    assert projected == written
    assert watermark == head


class GatedPersistence(DatabasePersistence):
    """Holds appends at a gate, so a commit can be caught in flight."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.gate: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def append(self, room: str, updates: Sequence[StoredUpdate]) -> int | None:
        if self.gate is not None:
            self.held.set()
            await self.gate.wait()
        return await super().append(room, updates)


def test_a_room_asked_for_while_it_unloads_is_reloaded_only_after_its_last_commit(database_url: str) -> None:
    """Deterministic form of the other race: a get() while the idle room still commits must not
    load a copy that misses that commit."""

    async def scenario() -> tuple[str, Snapshot, Snapshot]:
        db = await open_database(database_url)
        try:
            await migrate(db)
            tenant = await accounts.create_tenant(db, "Unloading", "pro")
            store = GatedPersistence(db)
            manager = RoomManager(store, max_message_bytes=1 << 20, idle_seconds=0.0)
            room = await manager.get(tenant.id)
            store.gate = asyncio.Event()
            write = asyncio.create_task(room.transact(lambda d: create_record(d, "vehicles", {"name": "In flight"})))
            await eventually(store.held.is_set)
            unloading = asyncio.create_task(manager.unload_idle())
            await eventually(lambda: tenant.id not in manager.rooms)  # popped; its commit is still held
            getter = asyncio.create_task(manager.get(tenant.id))
            # Either the getter waits for the unload to finish, or (the bug) it loads a copy right now.
            await eventually(lambda: getter.done() or manager._loading[tenant.id].locked())
            store.gate.set()
            record_id = str(await write)
            reloaded = await getter
            assert await unloading == [tenant.id]
            snapshot = reloaded.document.snapshot()
            await manager.close()
            stored = doc_from_updates(await DatabasePersistence(db).load(tenant.id)).snapshot()
            return record_id, snapshot, stored
        finally:
            await db.close()

    record_id, in_room, stored = asyncio.run(scenario())
    assert stored["vehicles"][record_id]["name"] == "In flight"
    assert in_room == stored


# -- (c) projection catch-up ------------------------------------------------------------------


def test_projection_catches_up_at_startup_after_a_crash_between_commit_and_projection(
    server: LiveServer, tenant: Tenant
) -> None:
    url = server.settings.database_url
    ids = [create(server, tenant.tokens["dispatcher"], "vehicles", attributes("vehicles", f"Lost {n}"))
           for n in range(4)]
    route = create(server, tenant.tokens["dispatcher"], "routes", attributes("routes", "Lost route"))
    with client(server, tenant.tokens["dispatcher"]) as http:
        listed = http.get("/api/v1/vehicles").json()["data"]
    server.stop()
    ghost = random_id()

    async def crash(db: Database) -> None:
        # As if the process died after committing the updates but before projecting them,
        # and a record deleted in the document had been left behind in the table.
        async with db.transaction(customer_id=tenant.id) as tx:
            await tx.execute("DELETE FROM vehicles WHERE customer_id = ?", (tenant.id,))
            await tx.execute("DELETE FROM routes WHERE customer_id = ?", (tenant.id,))
            await tx.execute("INSERT INTO vehicles (customer_id, id, name) VALUES (?, ?, 'Ghost')", (tenant.id, ghost))
            assert await tx.execute("UPDATE projection_state SET watermark = 0 WHERE customer_id = ?",
                                    (tenant.id,)) == 1

    asyncio.run(with_db(url, crash))
    server.start()  # no client connects: startup alone must re-project
    with client(server, tenant.tokens["dispatcher"]) as http:
        relisted = http.get("/api/v1/vehicles").json()
        assert relisted["data"] == listed and relisted["meta"]["total"] == 4
        assert {r["id"] for r in relisted["data"]} == set(ids)
        assert http.get(f"/api/v1/vehicles/{ghost}").status_code == 404
        assert http.get(f"/api/v1/routes/{route}").json()["data"]["attributes"]["name"] == "Lost route"
        assert [r["id"] for r in http.get("/api/v1/routes", params={"filter[bbox]": "13.3,52.5,13.5,52.6"})
                .json()["data"]] == [route]  # the geometry column is back too

    async def watermark_and_head(db: Database) -> tuple[int, int | None]:
        async with db.transaction(customer_id=tenant.id) as tx:
            mark = await tx.fetchval("SELECT watermark FROM projection_state WHERE customer_id = ?", (tenant.id,))
        return int(mark), await DatabasePersistence(db).head(tenant.id)

    mark, head = asyncio.run(with_db(url, watermark_and_head))
    assert head is not None and mark == head


# -- (d) durable acks ---------------------------------------------------------------------------


def test_a_durable_ack_means_the_update_is_already_in_the_database(tmp_path: Path, server: LiveServer,
                                                                    tenant: Tenant) -> None:
    url = server.settings.database_url
    sync, fleet = make_client(tmp_path, "c", server, tenant)
    principal = asyncio.run(with_db(url, lambda db: auth.resolve_token(db, server.settings,
                                                                       tenant.tokens["dispatcher"])))

    async def audit_rows(db: Database) -> list[dict[str, Any]]:
        async with db.transaction(customer_id=tenant.id) as tx:
            return await tx.fetch("SELECT user_id, received_at FROM crdt_updates WHERE customer_id = ?", (tenant.id,))

    async def body() -> str:
        await synced(sync)
        record_id = fleet.create("vehicles", {"name": "Acked", "plate": "ACK 1"})
        assert sync.mirror.store.sync_log.pending_count() == 1
        await synced(sync)
        # Checked while the server still runs: the ack alone must imply the commit.
        stored = await asyncio.to_thread(stored_snapshot, url, tenant.id)
        assert stored["vehicles"][record_id]["plate"] == "ACK 1"
        rows = await with_db(url, audit_rows)
        assert rows and all(r["user_id"] == principal.user_id and r["received_at"] is not None for r in rows)
        await asyncio.to_thread(server.stop)  # the server goes away with the client still connected
        await sync.wait_for(lambda s: s.state in (SyncState.OFFLINE, SyncState.CONNECTING))
        return record_id

    record_id = running(sync, body)
    assert stored_snapshot(url, tenant.id)["vehicles"][record_id]["name"] == "Acked"
    assert sync.mirror.store.sync_log.pending_count() == 0
