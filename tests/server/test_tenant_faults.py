"""Hostile content and one tenant's faults never stop the server.

Content already merged into a tenant's log (written before the value policy existed, or fanned
out from another instance) projects as flagged records, never as a failed start; a tenant whose
log cannot load is marked, retried and shown while the others start and sync; a dead or stuck
room is replaced; SIGTERM ends the server in bounded time even while the database hangs.
Real servers, real databases (SQLite and both Postgres storage modes), real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import psycopg
import pytest
from pycrdt import Doc, Text, XmlElement, XmlFragment, write_var_uint
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import connect as ws_connect
from websockets.uri import parse_uri

from server_stub import accounts
from server_stub.db import Database, open_database
from server_stub.persistence import DatabasePersistence
from server_stub.projection import Projector, row_id
from server_stub.rooms import RoomManager
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from sync import protocol
from sync.channel import ChannelClosed, memory_channel_pair
from sync.document import FleetDocument
from sync.protocol import MessageKind
from sync.room import CLOSE_RESTARTING, RoomClosed, StoredUpdate

from .admin_http import AdminClient, create_platform_admin
from .conftest import ROOT
from .fleet_http import attributes, client, create, document, wait_until

T = TypeVar("T")

# What `new Y.Doc(); doc.getMap('vehicles').set('xml-element', new Y.XmlElement('div'))` encodes in
# yjs 13 (tests/js/node_modules). pycrdt refuses to put an XmlElement straight into a map; Yjs does not.
XML_ELEMENT_UPDATE = base64.b64decode("AQG88arUAQAnAQh2ZWhpY2xlcwt4bWwtZWxlbWVudAMDZGl2AA==")
UNDECODABLE_UPDATE = b"\xff\xff\xff\xff"
LONG_ID = "x" * 200_000
CONTROL_ID = "bad\x01id\nwith-controls"


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    live = LiveServer(settings_for(database_url))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def with_db(url: str, action: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = await open_database(url)
        try:
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(run())


def append_to_log(url: str, tenant_id: str, *updates: bytes) -> None:
    """Write updates straight into the tenant's update log, as the room's persistence does."""

    async def append(db: Database) -> None:
        await DatabasePersistence(db).append(tenant_id, [StoredUpdate(u, None, time.time()) for u in updates])

    with_db(url, append)


def nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def hostile_update() -> bytes:
    """Records no table can hold as they are, beside one clean record: what clients without the
    value policy (or an older server) could have merged into a tenant's document."""
    doc = FleetDocument()
    with doc.transaction():
        doc.put_record("vehicles", "clean", {"name": "Clean van", "plate": "B-WH 1"})
        doc.put_record("vehicles", "nul", {"name": "a\x00b", "plate": "B-NUL 1"})
        doc.put_record("vehicles", "deep", {"name": "Deep", "notes": nested(5_000)})
        doc.put_record("vehicles", "nan", {"name": "Not a number", "speed_limit_kph": float("nan")})
        doc.put_record("vehicles", "infinite", {"name": "Infinite", "speed_limit_kph": float("inf")})
        vehicles = doc.collection("vehicles")
        vehicles["as-text"] = Text("a record written as text")
        vehicles["sub-document"] = Doc()
        fragment = XmlFragment()
        vehicles["xml-fragment"] = fragment
        fragment.children.append(XmlElement("div"))
        doc.put_record("vehicles", LONG_ID, {"name": "Long id"})
        doc.put_record("vehicles", CONTROL_ID, {"name": "Control id"})
    return doc.get_update()


def listed(server: LiveServer, tenant: Tenant, collection: str) -> dict[str, dict[str, Any]]:
    with client(server, tenant.tokens["dispatcher"]) as http:
        response = http.get(f"/api/v1/{collection}", params={"page[size]": 1000})
    assert response.status_code == 200, response.text
    return {resource["id"]: resource for resource in response.json()["data"]}


def health(server: LiveServer) -> dict[str, Any]:
    with client(server) as http:
        response = http.get("/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sync_write_is_acked(server: LiveServer, tenant: Tenant, record_id: str) -> None:
    """A raw y-websocket client writes one record and waits for the durable ack."""
    url = f"ws://127.0.0.1:{server.port}/sync/{tenant.id}?token={tenant.tokens['dispatcher']}&acks=1"
    peer = FleetDocument()
    with peer.transaction():
        peer.put_record("vehicles", record_id, {"name": f"Synced {record_id}"})
    with ws_connect(url, open_timeout=10) as websocket:
        websocket.send(protocol.update_message(peer.get_update()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = protocol.parse(websocket.recv(timeout=15))
            if message.kind == MessageKind.ACK_COMMITTED and message.count >= 1:
                return
    raise AssertionError("the update was never acked")


# -- hostile content already in the log ---------------------------------------------------------


def test_hostile_content_already_in_a_log_is_flagged_on_its_record_and_every_tenant_starts(
        server: LiveServer) -> None:
    url = server.settings.database_url
    hostile = provision_tenant(server.settings, "Hostile Haulage")
    calm = provision_tenant(server.settings, "Calm Carriers")
    calm_van = create(server, calm.tokens["dispatcher"], "vehicles", attributes("vehicles", "Calm van"))
    server.stop()
    # Before this fix the NUL alone failed start-up on Postgres for every tenant (psycopg
    # DataError), and the deep value everywhere (orjson "depth limit exceeded").
    append_to_log(url, hostile.id, hostile_update(), XML_ELEMENT_UPDATE)
    server.start()

    records = listed(server, hostile, "vehicles")
    errors = {rid: (r["meta"]["projection_error"] or "") for rid, r in records.items()}
    assert records["clean"]["meta"]["valid"] is True
    assert records["clean"]["attributes"] == {"name": "Clean van", "plate": "B-WH 1"}

    assert "name: string contains a NUL character" in errors["nul"]
    assert records["nul"]["attributes"]["name"] == "a\ufffdb"  # readable, and storable
    assert records["nul"]["attributes"]["plate"] == "B-NUL 1"
    assert "notes/0/0" in errors["deep"] and "nested deeper than 16 levels" in errors["deep"]
    assert "notes" not in records["deep"]["attributes"]
    # NaN and Infinity used to come back as null, marked valid.
    assert "speed_limit_kph: number nan is not finite" in errors["nan"]
    assert "speed_limit_kph: number inf is not finite" in errors["infinite"]
    # Records that are not Y.Maps used to be missing from REST without a word.
    assert "record is a Y.Text, not a Y.Map of fields" in errors["as-text"]
    assert "record is a sub-document, not a Y.Map of fields" in errors["sub-document"]
    assert "record is an XML fragment, not a Y.Map of fields" in errors["xml-fragment"]
    assert "record is an XML element, not a Y.Map of fields" in errors["xml-element"]
    # Ids: a control character is kept and flagged; 200 KB is keyed by a digest (no index takes it).
    assert "record id" in errors[CONTROL_ID] and records[CONTROL_ID]["attributes"]["name"] == "Control id"
    long_key = row_id(LONG_ID)
    assert long_key.startswith("invalid-id-") and "record id 'xxxx" in errors[long_key]
    assert records[long_key]["attributes"] == {"name": "Long id"}
    assert all(not records[rid]["meta"]["valid"] for rid in records if rid != "clean")

    # The admin page lists the same projection errors.
    root = create_platform_admin(server)
    with AdminClient(server).signed_in(root) as admin:
        page = admin.get(f"/admin/tenants/{hostile.id}/sync")
        assert page.status_code == 200
        assert "string contains a NUL character" in page.text and "not a Y.Map of fields" in page.text

    # Both tenants keep working: REST writes, a sync socket's durable ack, reads.
    assert create(server, hostile.tokens["dispatcher"], "vehicles", attributes("vehicles", "New van"))
    sync_write_is_acked(server, hostile, "synced-hostile")
    sync_write_is_acked(server, calm, "synced-calm")
    assert set(listed(server, calm, "vehicles")) == {calm_van, "synced-calm"}
    assert "synced-hostile" in listed(server, hostile, "vehicles")
    assert health(server)["status"] == "ok" and health(server)["tenants"] == {"failing": 0}


@pytest.mark.anyio
async def test_the_projector_deletes_a_flagged_record_by_its_table_key_and_leaves_no_strays(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Flagged Freight", "pro")
    document = FleetDocument()
    document.apply_update(hostile_update())
    projector = Projector(db)
    await projector.reproject(tenant.id, document, 1)

    async def table_keys() -> set[str]:
        async with db.transaction(customer_id=tenant.id) as tx:
            return {row["id"] for row in await tx.fetch("SELECT id FROM vehicles WHERE customer_id = ?",
                                                        (tenant.id,))}

    assert await table_keys() == {row_id(rid) for rid in document.ids("vehicles")}
    with document.transaction():
        for rid in (LONG_ID, "nul", "as-text"):
            document.delete_record("vehicles", rid)
    changes = document.take_changes()
    await projector.project(tenant.id, document, changes.touched, 2)
    assert await table_keys() == {row_id(rid) for rid in document.ids("vehicles")}
    assert row_id(LONG_ID) not in await table_keys()
    # A full re-projection finds nothing stray: the digest key counts as the record's own.
    await projector.reproject(tenant.id, document, 3)
    assert await table_keys() == {row_id(rid) for rid in document.ids("vehicles")}
    assert await projector.watermark(tenant.id) == 3


# -- one tenant failing ---------------------------------------------------------------------------


def test_a_tenant_whose_log_cannot_load_is_marked_and_retried_while_the_others_start_and_sync(
        server: LiveServer) -> None:
    url = server.settings.database_url
    broken = provision_tenant(server.settings, "Broken Freight")
    healthy = provision_tenant(server.settings, "Healthy Haulage")
    projected = create(server, broken.tokens["dispatcher"], "vehicles", attributes("vehicles", "Projected van"))
    server.stop()
    append_to_log(url, broken.id, UNDECODABLE_UPDATE)  # a corrupt row: its room cannot load
    server.start()  # used to fail: the catch-up's exception failed the whole app

    status = health(server)
    assert status["status"] == "degraded" and status["tenants"] == {"failing": 1}

    # The others start and sync; the broken tenant's projected tables still answer reads.
    healthy_van = create(server, healthy.tokens["dispatcher"], "vehicles", attributes("vehicles", "Healthy van"))
    sync_write_is_acked(server, healthy, "synced-healthy")
    assert set(listed(server, healthy, "vehicles")) == {healthy_van, "synced-healthy"}
    assert set(listed(server, broken, "vehicles")) == {projected}
    # Its sync socket is closed with a reason (the client retries), not a 500 and a traceback.
    url_ws = f"ws://127.0.0.1:{server.port}/sync/{broken.id}?token={broken.tokens['dispatcher']}"
    with ws_connect(url_ws, open_timeout=10) as websocket, pytest.raises(ConnectionClosed) as closed:
        while True:
            websocket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert "unavailable" in closed.value.rcvd.reason

    # The admin sync page names the failing tenant and why.
    root = create_platform_admin(server)
    with AdminClient(server).signed_in(root) as admin:
        overview = admin.get("/admin/sync").text
        assert 'id="failing-tenants"' in overview
        row = overview.split(f'data-tenant-id="{broken.id}"', 1)[1].split("</tr>", 1)[0]
        assert "failing" in row and "cannot be applied" in row
        healthy_row = overview.split(f'data-tenant-id="{healthy.id}"', 1)[1].split("</tr>", 1)[0]
        assert "failing" not in healthy_row
        assert "cannot be applied" in admin.get(f"/admin/tenants/{broken.id}/sync").text
        # Compaction refuses such a log (it used to answer 500), and deletes nothing.
        refused = admin.flash(admin.post(f"/admin/tenants/{broken.id}/sync/compact"))
        assert "Compaction refused" in refused and "cannot be merged" in refused

    # Repaired (the operator deletes the corrupt row): the background retry brings the tenant back.
    async def delete_corrupt_row(db: Database) -> None:
        async with db.transaction(customer_id=broken.id) as tx:
            assert await tx.execute("DELETE FROM crdt_updates WHERE customer_id = ? AND payload = ?",
                                    (broken.id, UNDECODABLE_UPDATE)) == 1

    with_db(url, delete_corrupt_row)
    wait_until(lambda: health(server)["status"] == "ok", timeout=30)
    assert health(server)["tenants"] == {"failing": 0}
    sync_write_is_acked(server, broken, "synced-after-repair")
    assert set(listed(server, broken, "vehicles")) == {projected, "synced-after-repair"}


# -- dead and stuck rooms ---------------------------------------------------------------------------


def create_vehicle(record_id: str) -> Callable[[FleetDocument], object]:
    def action(document: FleetDocument) -> object:
        document.put_record("vehicles", record_id, {"name": record_id})
        return record_id

    return action


class HangingPersistence(DatabasePersistence):
    """The real store, except that appends hang while `hang` is set: a database that stopped answering."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.hang = False

    async def append(self, room: str, updates: Any) -> int | None:
        if self.hang:
            await asyncio.Event().wait()
        return await super().append(room, updates)


@pytest.mark.anyio
async def test_a_room_whose_committer_died_is_reloaded_on_the_next_get(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Dead Room Ltd", "pro")
    manager = RoomManager(DatabasePersistence(db), max_message_bytes=1 << 20)
    try:
        room = await manager.get(tenant.id)
        assert await room.transact(create_vehicle("before")) == "before"
        assert room._committer is not None
        room._committer.cancel()  # whatever killed it, nothing would commit in this room again
        await asyncio.sleep(0)

        fresh = await manager.get(tenant.id)
        assert fresh is not room and fresh.alive
        assert await asyncio.wait_for(fresh.transact(create_vehicle("after")), 10) == "after"
        assert fresh.document.ids("vehicles") == {"before", "after"}
    finally:
        await manager.close()


@pytest.mark.anyio
async def test_the_watchdog_restarts_a_room_stuck_in_one_commit_and_its_clients_reconnect(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Stuck Room Ltd", "pro")
    persistence = HangingPersistence(db)
    manager = RoomManager(persistence, max_message_bytes=1 << 20, stall_seconds=0.3)
    try:
        room = await manager.get(tenant.id)
        client_end, server_end = memory_channel_pair(f"/sync/{room.name}")
        session = asyncio.create_task(room.serve(server_end, user_id="u", acks=True))
        assert protocol.parse(await client_end.recv()).kind == MessageKind.ACK_HELLO

        persistence.hang = True
        stuck_write = asyncio.create_task(room.transact(create_vehicle("stuck")))
        await asyncio.sleep(0.5)
        assert room.stalled_for() > 0.3
        assert await asyncio.wait_for(manager.restart_unhealthy(), 10) == [tenant.id]

        # The caller learns its write was not committed; the client is told to reconnect.
        with pytest.raises(RoomClosed):
            await asyncio.wait_for(stuck_write, 5)
        with pytest.raises(ChannelClosed) as closed:
            while True:
                await asyncio.wait_for(client_end.recv(), 5)
        assert closed.value.code == CLOSE_RESTARTING
        await asyncio.wait_for(session, 5)

        persistence.hang = False
        fresh = await manager.get(tenant.id)
        assert fresh is not room
        assert await asyncio.wait_for(fresh.transact(create_vehicle("after")), 10) == "after"
        assert fresh.document.ids("vehicles") == {"after"}
    finally:
        persistence.hang = False
        await asyncio.wait_for(manager.close(), 15)


# -- SIGTERM ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigterm_ends_the_server_within_ten_seconds_while_a_commit_hangs_on_a_locked_table(
        pg_url_partitioned: str, tmp_path: Path) -> None:
    url = pg_url_partitioned
    settings = settings_for(url)
    tenant = provision_tenant(settings, "Sigterm Shipping")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "WEBHOST_SECRET_KEY": settings.secret_key,
           "XDG_DATA_HOME": str(tmp_path / "xdg")}
    script = Path(sys.executable).parent / "webhost-server"
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen([str(script), "serve", "--port", str(port)], env=env, cwd=ROOT,
                                  stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(port), timeout=60)
        sync_url = f"ws://127.0.0.1:{port}/sync/{tenant.id}?token={tenant.tokens['dispatcher']}&acks=1"
        with ws_connect(sync_url, open_timeout=10) as websocket, psycopg.connect(url) as locker:
            assert protocol.parse(websocket.recv(timeout=10)).kind == MessageKind.ACK_HELLO  # room loaded
            # Someone holds the update log: the room's next commit waits on the lock, forever.
            locker.execute("LOCK TABLE crdt_updates IN ACCESS EXCLUSIVE MODE")
            peer = FleetDocument()
            peer.put_record("vehicles", "waiting", {"name": "Waiting for the lock"})
            websocket.send(protocol.update_message(peer.get_update()))
            # And a REST write waits behind it, holding its request open.
            rest_write = threading.Thread(target=_post_quietly, args=(port, tenant), daemon=True)
            rest_write.start()
            time.sleep(1.0)

            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server was still running 10 s after SIGTERM:\n{log.read_text()[-3000:]}")
            elapsed = time.monotonic() - started
            rest_write.join(timeout=20)
        assert elapsed < 10
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _post_quietly(port: int, tenant: Tenant) -> None:
    with (httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15,
                       headers={"Authorization": f"Bearer {tenant.tokens['dispatcher']}"}) as http,
          contextlib.suppress(httpx.HTTPError)):  # the server went away: expected
        http.post("/api/v1/vehicles", json=document("vehicles", attributes("vehicles", "Waiting too")))


# -- a peer that does not read ---------------------------------------------------------------------


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(settings_for(f"sqlite:///{tmp_path / 'fleet-server.sqlite'}")) as live:
        yield live


class UnreadSocket:
    """A websocket client that reads only when told to: websockets' sans-I/O protocol over a plain
    socket whose small receive buffer (which also stops Linux growing it to 32 MB) holds little."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self._read()
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _read(self) -> None:
        data = self.sock.recv(1 << 16)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._flush()

    def read_until_closed(self) -> tuple[list[bytes], int | None]:
        """Every binary message until the server closes: the messages and the close code."""
        messages: list[bytes] = []
        while self.protocol.close_rcvd is None and self.protocol.state is not State.CLOSED:
            self._read()
            messages.extend(bytes(event.data) for event in self.protocol.events_received()
                            if isinstance(event, Frame) and event.opcode is Opcode.BINARY)
        return messages, self.protocol.close_rcvd.code if self.protocol.close_rcvd else None

    def close(self) -> None:
        self.sock.close()


def test_a_peer_that_stops_reading_is_cut_off_by_the_bytes_queued_for_it(sqlite_server: LiveServer) -> None:
    """Relayed awareness frames pile up for a peer that never reads. OUTBOX_LIMIT counts frames
    (2,048 of up to 64 KB is 128 MB); the byte cap (16 MB) cuts the peer off long before that."""
    server = sqlite_server
    tenant = provision_tenant(server.settings, "Quiet Couriers")
    path = f"/sync/{tenant.id}?token={tenant.tokens['dispatcher']}"
    state = {"user": {"name": "Dispatcher", "note": "x" * 60_000}}  # just under the 64 KB awareness cap
    frames = 600  # 36 MB: the byte cap plus what the sockets buffer, and far fewer than 2,048 frames
    quiet = UnreadSocket(server.port, path)
    try:
        with ws_connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=10) as loud:
            loud.recv(timeout=10)  # the server's step 1: the loud client is in the room
            for clock in range(1, frames + 1):
                loud.send(protocol.awareness_message(_awareness(4242, clock, state)))
            # Only now does the quiet client read: what the server kept for it, then its close.
            messages, code = quiet.read_until_closed()
            assert code == 1013  # CLOSE_SLOW: reconnect and resync
            relayed = [m for m in messages if protocol.parse(m).kind == MessageKind.AWARENESS]
            assert 0 < len(relayed) < frames
            # The loud client is still served.
            loud.send(protocol.sync_step1(b"\x00"))
            assert protocol.parse(loud.recv(timeout=10)).kind in (MessageKind.SYNC_STEP1, MessageKind.SYNC_STEP2)
    finally:
        quiet.close()


def _awareness(client_id: int, clock: int, state: object) -> bytes:
    text = orjson.dumps(state)
    return write_var_uint(1) + write_var_uint(client_id) + write_var_uint(clock) + write_var_uint(len(text)) + text
