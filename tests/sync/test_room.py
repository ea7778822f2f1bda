"""The sync room, driven over raw in-memory channels: what it refuses, what it stores before it
tells anyone, and what it says to clients that did or did not opt in to durable acks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sync import protocol
from sync.channel import ChannelClosed, MemoryChannel, memory_channel_pair
from sync.document import FleetDocument
from sync.protocol import MSG_ACK, Message, MessageKind
from sync.room import CLOSE_INVALID, CLOSE_SERVER_ERROR, CLOSE_TOO_BIG, MemoryPersistence, Room, StoredUpdate
from sync.testing import MemoryHub

from .conftest import eventually, run


class RawClient:
    """A client that speaks frames directly and keeps every frame it received."""

    def __init__(self, channel: MemoryChannel) -> None:
        self.channel = channel
        self.document = FleetDocument()
        self.frames: list[bytes] = []

    async def receive(self) -> Message:
        frame = await self.channel.recv()
        self.frames.append(frame)
        return protocol.parse(frame)

    async def until(self, *kinds: MessageKind) -> Message:
        while True:
            message = await self.receive()
            if message.kind in kinds:
                return message

    async def until_acked(self, count: int) -> None:
        while (await self.until(MessageKind.ACK_COMMITTED)).count < count:
            pass

    async def closed(self) -> ChannelClosed:
        with pytest.raises(ChannelClosed) as caught:
            while True:
                await self.receive()
        return caught.value

    async def handshake(self) -> None:
        """Answer the room's step 1 and take its step 2, as y-websocket does on connect."""
        await self.channel.send(protocol.sync_step1(self.document.get_state()))
        server_step1 = await self.until(MessageKind.SYNC_STEP1)
        await self.channel.send(protocol.sync_step2(self.document.get_update(server_step1.payload)))
        step2 = await self.until(MessageKind.SYNC_STEP2)
        self.document.apply_update(step2.payload)

    async def write(self, record_id: str, fields: dict[str, object]) -> bytes:
        before = self.document.get_state()
        with self.document.transaction():
            self.document.put_record("vehicles", record_id, fields)
        update = self.document.get_update(before)
        await self.channel.send(protocol.update_message(update))
        return update


async def join(room: Room, *, acks: bool = True, can_write: bool = True, user: str = "u") -> RawClient:
    client_end, server_end = memory_channel_pair(f"/sync/{room.name}")
    task = asyncio.create_task(room.serve(server_end, user_id=user, can_write=can_write, acks=acks))
    _sessions.add(task)
    task.add_done_callback(_sessions.discard)
    return RawClient(client_end)


_sessions: set[asyncio.Task[None]] = set()


def vehicle_ids(document: FleetDocument) -> set[str]:
    return document.ids("vehicles")


def updates_in(frames: Sequence[bytes]) -> list[bytes]:
    found = []
    for frame in frames:
        message = protocol.parse(frame)
        if message.kind in (MessageKind.SYNC_UPDATE, MessageKind.SYNC_STEP2):
            found.append(message.payload)
    return found


def test_an_oversized_frame_closes_only_that_connection() -> None:
    async def body() -> None:
        async with Room("tenant", MemoryPersistence(), max_message_bytes=2_000) as room:
            big, small = await join(room, user="big"), await join(room, user="small")
            await big.handshake()
            await small.handshake()

            await big.write("huge", {"name": "Huge", "notes": "x" * 5_000})
            closed = await big.closed()
            assert closed.code == CLOSE_TOO_BIG
            assert "exceeds 2000" in closed.reason

            await small.write("fine", {"name": "Fine"})
            await small.until_acked(2)  # its step 2, then the update
            assert vehicle_ids(room.document) == {"fine"}
            await eventually(lambda: len(room.connections) == 1, message="the big client is gone")

            late = await join(room)
            await late.handshake()
            assert vehicle_ids(late.document) == {"fine"}

    run(body())


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x00\x02\x05ab", "announces 5 bytes"),
        (b"\x2a", "unknown message type 42"),
        (protocol.update_message(b"\xff\xff\xff\xff"), "update does not decode"),
        (b"", "empty"),
    ],
    ids=["cut-frame", "unknown-type", "undecodable-update", "empty"],
)
def test_a_garbage_frame_closes_that_connection_with_1007_and_the_room_carries_on(frame: bytes, reason: str) -> None:
    async def body() -> None:
        persistence = MemoryPersistence()
        async with Room("tenant", persistence) as room:
            bad, good = await join(room, user="bad"), await join(room, user="good")
            await bad.handshake()
            await good.handshake()

            await bad.channel.send(frame)
            closed = await bad.closed()
            assert closed.code == CLOSE_INVALID
            assert reason in closed.reason

            await good.write("v1", {"name": "Still syncing"})
            await good.until_acked(2)
            assert vehicle_ids(room.document) == {"v1"}
            assert [u.user_id for u in persistence.rooms["tenant"]] == ["good"]

    run(body())


class OrderedPersistence(MemoryPersistence):
    """Memory persistence that notes when each append happened relative to what clients saw."""

    def __init__(self, events: list[tuple[str, bytes]]) -> None:
        super().__init__()
        self.events = events

    async def append(self, room: str, updates: Sequence[StoredUpdate]) -> int | None:
        # A real driver suspends while the database works: a broadcast sent before the append
        # would reach the listener during this wait.
        await asyncio.to_thread(lambda: None)
        result = await super().append(room, updates)
        self.events.extend(("stored", u.update) for u in updates)
        return result


def test_an_update_is_stored_before_anyone_hears_of_it() -> None:
    async def body() -> None:
        events: list[tuple[str, bytes]] = []
        persistence = OrderedPersistence(events)
        async with Room("tenant", persistence) as room:
            writer, listener = await join(room, user="writer"), await join(room, user="listener")
            await writer.handshake()
            await listener.handshake()

            sent = [await writer.write(f"v{i}", {"name": f"Van {i}"}) for i in range(3)]
            # The room may merge a batch of writes into one broadcast.
            while vehicle_ids(listener.document) != {"v0", "v1", "v2"}:
                update = (await listener.until(MessageKind.SYNC_UPDATE)).payload
                events.append(("heard", update))
                listener.document.apply_update(update)
            await writer.until_acked(4)

            stored = [payload for what, payload in events if what == "stored"]
            assert set(sent) <= set(stored)
            for position, (what, payload) in enumerate(events):
                if what == "heard":
                    # Whatever was broadcast (one update or a merge of several) was stored first.
                    broadcast, stored_before = FleetDocument(), FleetDocument()
                    broadcast.apply_update(payload)
                    for earlier_what, earlier in events[:position]:
                        if earlier_what == "stored":
                            stored_before.apply_update(earlier)
                    assert vehicle_ids(broadcast) <= vehicle_ids(stored_before)
            # The sender hears its acks, never its own writes echoed back.
            assert updates_in(writer.frames) == [updates_in(writer.frames)[0]]  # only the handshake step 2

    run(body())


def test_an_update_the_database_refused_is_neither_applied_nor_broadcast() -> None:
    async def body() -> None:
        persistence = MemoryPersistence()
        async with Room("tenant", persistence) as room:
            failing, listener, other = [await join(room, user=u) for u in ("failing", "listener", "other")]
            for client in (failing, listener, other):
                await client.handshake()

            persistence.fail_next = 1
            await failing.write("lost", {"name": "Never stored"})
            closed = await failing.closed()
            assert closed.code == CLOSE_SERVER_ERROR
            assert not any(m.kind == MessageKind.ACK_COMMITTED and m.count >= 2
                           for m in map(protocol.parse, failing.frames))
            assert "lost" not in vehicle_ids(room.document)

            await other.write("kept", {"name": "Stored"})
            # Frames reach the listener in order: had "lost" been broadcast, it would come first.
            first = await listener.until(MessageKind.SYNC_UPDATE)
            listener.document.apply_update(first.payload)
            assert vehicle_ids(listener.document) == {"kept"}
            assert vehicle_ids(room.document) == {"kept"}
            stored = FleetDocument()
            for update in await persistence.load("tenant"):
                stored.apply_update(update)
            assert vehicle_ids(stored) == {"kept"}

    run(body())


def test_a_restarted_room_holds_everything_it_acked() -> None:
    async def body() -> None:
        hub = MemoryHub()
        try:
            writer = RawClient(await hub.connect("tenant", user_id="writer"))
            await writer.handshake()
            for i in range(5):
                await writer.write(f"v{i}", {"name": f"Van {i}"})
            with writer.document.transaction():
                writer.document.delete_record("vehicles", "v0")
            await writer.channel.send(protocol.update_message(writer.document.get_update()))
            await writer.until_acked(7)  # step 2, five creates and the delete
            expected = writer.document.snapshot()

            await hub.restart()
            assert hub.rooms == {}

            reader = RawClient(await hub.connect("tenant", user_id="reader"))
            await reader.handshake()
            assert reader.document.snapshot() == expected
            assert hub.rooms["tenant"].document.snapshot() == expected
            assert vehicle_ids(reader.document) == {"v1", "v2", "v3", "v4"}
        finally:
            await hub.close()

    run(body())


def test_a_stock_client_never_receives_an_ack_frame() -> None:
    async def body() -> None:
        hub = MemoryHub()
        try:
            stock = RawClient(await hub.connect("tenant", acks=False))
            watcher = RawClient(await hub.connect("tenant", acks=False))
            await stock.handshake()
            await watcher.handshake()
            for i in range(3):
                await stock.write(f"v{i}", {"name": f"Van {i}"})
            room = hub.rooms["tenant"]
            await eventually(lambda: room.stats.updates_committed == 3, message="three commits")
            # Anything the room sent after those commits precedes the answer to this step 1.
            await stock.channel.send(protocol.sync_step1(stock.document.get_state()))
            await stock.until(MessageKind.SYNC_STEP2)
            await eventually(lambda: len(updates_in(watcher.frames)) >= 1, message="watcher synced")

            assert stock.frames and all(frame[0] != MSG_ACK for frame in stock.frames)
            kinds = {protocol.parse(frame).kind for frame in stock.frames}
            assert not kinds & {MessageKind.ACK_HELLO, MessageKind.ACK_COMMITTED}
            assert vehicle_ids(room.document) == {"v0", "v1", "v2"}

            opted_in = RawClient(await hub.connect("tenant", acks=True))
            assert (await opted_in.receive()).kind == MessageKind.ACK_HELLO
        finally:
            await hub.close()

    run(body())


def test_a_read_only_connection_is_told_once_and_its_writes_are_never_merged() -> None:
    async def body() -> None:
        persistence = MemoryPersistence()
        async with Room("tenant", persistence) as room:
            reader = await join(room, can_write=False, user="field")
            writer = await join(room, user="dispatcher")
            await reader.handshake()
            await writer.handshake()

            await reader.write("sneaky", {"name": "Not allowed"})
            await reader.write("sneaky2", {"name": "Not allowed either"})
            await writer.write("allowed", {"name": "Allowed"})
            await writer.until_acked(2)
            # The reader's frames were handled before the update it now receives was broadcast.
            update = await reader.until(MessageKind.SYNC_UPDATE)
            reader.document.apply_update(update.payload)

            denied = [m for m in map(protocol.parse, reader.frames) if m.kind == MessageKind.PERMISSION_DENIED]
            assert len(denied) == 1 and "read-only" in denied[0].reason
            assert vehicle_ids(room.document) == {"allowed"}
            assert [u.user_id for u in persistence.rooms["tenant"]] == ["dispatcher"]

    run(body())


def test_new_clients_share_one_encoded_full_state_that_follows_every_change() -> None:
    """The full state a new client gets is encoded once and reused, and never served stale: a
    delete leaves the state vector unchanged, so the cache must notice it anyway."""

    async def body() -> None:
        async with Room("tenant", MemoryPersistence()) as room:
            writer = await join(room, user="writer")
            await writer.handshake()
            for i in range(3):
                await writer.write(f"v{i}", {"name": f"Van {i}"})
            await writer.until_acked(4)

            first, second = await join(room), await join(room)
            await first.handshake()
            await second.handshake()
            assert vehicle_ids(first.document) == vehicle_ids(second.document) == {"v0", "v1", "v2"}
            assert updates_in(first.frames)[-1] == updates_in(second.frames)[-1]
            assert room.document.full_update() is room.document.full_update()  # encoded once

            state_before = room.document.get_state()
            with writer.document.transaction():
                writer.document.delete_record("vehicles", "v1")
            await writer.channel.send(protocol.update_message(writer.document.get_update()))
            await writer.until_acked(5)
            assert room.document.get_state() == state_before  # a delete adds no items

            late = await join(room)
            await late.handshake()
            assert vehicle_ids(late.document) == {"v0", "v2"}
            assert late.document.snapshot() == room.document.snapshot()

    run(body())
