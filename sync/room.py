"""A sync room: one tenant document, its connections, and the group-committing write path.

An update is appended to persistence before the room applies it, broadcasts it or acks it,
so the room never holds (or tells anyone about) a change the database does not have.
Persistence is a protocol: the server stores in Postgres or SpatiaLite, the test hub in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pycrdt import merge_updates

from sync import protocol
from sync.channel import Channel, ChannelClosed
from sync.document import EMPTY_STATE_VECTOR, EMPTY_UPDATE, Changes, FleetDocument
from sync.protocol import MessageKind, ProtocolError

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 512
OUTBOX_LIMIT = 2048  # frames queued for one slow client before it is cut off to resync later

CLOSE_INVALID = 1007  # frame does not decode
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_SLOW = 1013


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    update: bytes
    user_id: str | None
    received_at: float


class Persistence(Protocol):
    async def load(self, room: str) -> list[bytes]: ...

    async def append(self, room: str, updates: Sequence[StoredUpdate]) -> int | None:
        """Commit the updates in order; return the log position of the last one, if there is one."""
        ...

    async def head(self, room: str) -> int | None:
        """The log position of the newest committed update, or None for an empty log."""
        ...


class MemoryPersistence:
    """Keeps committed updates in a dict: for tests and the in-memory hub."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[StoredUpdate]] = {}
        self.fail_next = 0  # tests set this to simulate a database outage

    async def load(self, room: str) -> list[bytes]:
        return [u.update for u in self.rooms.get(room, [])]

    async def append(self, room: str, updates: Sequence[StoredUpdate]) -> int | None:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("simulated database outage")
        stored = self.rooms.setdefault(room, [])
        stored.extend(updates)
        return len(stored)

    async def head(self, room: str) -> int | None:
        return len(self.rooms[room]) if self.rooms.get(room) else None


class Connection:
    """One client socket in a room."""

    def __init__(self, channel: Channel, *, user_id: str | None, can_write: bool, acks: bool) -> None:
        self.channel = channel
        self.user_id = user_id
        self.can_write = can_write
        self.acks = acks
        self.data_messages = 0  # sync step 2 and update frames received; acks count these
        self.denied_notice_sent = False
        self.awareness: bytes | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._sender: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop())

    def send(self, frame: bytes) -> None:
        """Queue a frame without waiting, so one slow client never holds up the room."""
        if self.closed.is_set():
            return
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("client %s too slow; closing so it resyncs", self.user_id)
            self.close_soon(CLOSE_SLOW, "client too slow, reconnect to resync")

    async def _send_loop(self) -> None:
        try:
            while True:
                frame = await self._outbox.get()
                held = None
                if not self._outbox.empty():
                    frame, held = self._coalesce(frame)
                await self.channel.send(frame)
                if held is not None:
                    await self.channel.send(held)
        except (ChannelClosed, OSError, asyncio.CancelledError):
            pass
        except Exception:  # a transport error must end this client only
            log.exception("sending to client failed")
        finally:
            self.closed.set()

    def _coalesce(self, first: bytes) -> tuple[bytes, bytes | None]:
        """Fold a run of queued update frames into one: under load a client gets fewer, larger
        frames instead of falling behind. A frame of another kind ends the run and is returned
        to be sent right after, so the order of everything else is kept."""
        if protocol.parse(first).kind != MessageKind.SYNC_UPDATE:
            return first, None
        payloads = [protocol.parse(first).payload]
        held = None
        while not self._outbox.empty() and len(payloads) < 256:
            following = self._outbox.get_nowait()
            message = protocol.parse(following)
            if message.kind != MessageKind.SYNC_UPDATE:
                held = following
                break
            payloads.append(message.payload)
        if len(payloads) == 1:
            return first, held
        return protocol.update_message(merge_updates(*payloads)), held

    def close_soon(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._closing = asyncio.ensure_future(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.channel.close(code, reason)

    async def stop(self) -> None:
        self.closed.set()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sender


@dataclass
class _Write:
    connection: Connection | None
    update: bytes
    index: int
    # A server-side transaction (REST write): run against the document, result to the future.
    action: Callable[[FleetDocument], object] | None = None
    user_id: str | None = None
    result: asyncio.Future[object] | None = None


class RoomBroken(RuntimeError):
    """The room's document may hold a change the database refused; it must be reloaded."""


@dataclass
class RoomStats:
    commits: int = 0
    updates_committed: int = 0
    last_update_at: float | None = None
    largest_batch: int = 0
    commit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


AppliedHook = Callable[["Room", Changes], Awaitable[None]]
# Told the updates this room itself just committed to persistence, in order: what other server
# instances need (fan-out). Never called for apply_external() updates, which were committed
# elsewhere, so forwarding what it is given can never echo an update back and forth.
CommittedHook = Callable[["Room", list[bytes]], Awaitable[None]]


class Room:
    def __init__(
        self,
        name: str,
        persistence: Persistence,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_applied: AppliedHook | None = None,
        on_committed: CommittedHook | None = None,
    ) -> None:
        self.name = name
        self.persistence = persistence
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.on_applied = on_applied
        self.on_committed = on_committed
        self.document = FleetDocument()
        self.connections: set[Connection] = set()
        self.stats = RoomStats()
        self.idle_since: float | None = time.monotonic()
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self._committing = False  # the committer holds a batch it took off the queue
        self.started = asyncio.Event()
        self.committed_seq: int | None = None  # log position of the newest committed update
        self.broken = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored snapshot and later updates: a room never starts empty by accident."""
        stored = await self.persistence.load(self.name)
        if stored:
            self.document.apply_update(merge_updates(*stored) if len(stored) > 1 else stored[0])
        self.document.take_changes()
        self.committed_seq = await self.persistence.head(self.name)
        self._committer = asyncio.create_task(self._commit_loop())
        self.started.set()

    async def stop(self) -> None:
        for connection in list(self.connections):
            connection.close_soon(1001, "room closing")
            await connection.stop()
        if self._committer is not None:
            await self._drain()
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer

    async def _drain(self) -> None:
        """Wait until every queued write is committed, the one the committer already took included:
        cancelling it mid-commit would leave a REST caller waiting forever on its result."""
        while (not self._queue.empty() or self._committing) and not (self._committer and self._committer.done()):
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Room:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- serving one client --------------------------------------------------------------------

    async def serve(self, channel: Channel, *, user_id: str | None = None, can_write: bool = True,
                    acks: bool = False) -> None:
        """Run one client's session until its channel closes."""
        connection = Connection(channel, user_id=user_id, can_write=can_write, acks=acks)
        connection.start()
        self.connections.add(connection)
        self.idle_since = None
        try:
            if acks:
                connection.send(protocol.ack_hello())
            connection.send(protocol.sync_step1(self.document.get_state()))
            # close_soon() closes the channel, which ends recv(): no per-frame race needed here.
            while not connection.closed.is_set():
                self._handle(connection, await channel.recv())
        except ChannelClosed:
            pass
        finally:
            self.connections.discard(connection)
            await connection.stop()
            if not self.connections:
                self.idle_since = time.monotonic()

    def _handle(self, connection: Connection, frame: bytes) -> None:
        if len(frame) > self.max_message_bytes:
            connection.close_soon(CLOSE_TOO_BIG, f"message of {len(frame)} bytes exceeds {self.max_message_bytes}")
            return
        try:
            message = protocol.parse(frame)
            if message.kind in (MessageKind.SYNC_STEP2, MessageKind.SYNC_UPDATE):
                protocol.validate_update(message.payload)
        except ProtocolError as exc:
            connection.close_soon(CLOSE_INVALID, str(exc)[:120])
            return
        if message.kind == MessageKind.SYNC_STEP1:
            try:
                if message.payload == EMPTY_STATE_VECTOR:  # a new client: the shared full state
                    update = self.document.full_update()
                else:
                    update = self.document.get_update(message.payload)
            except Exception:
                connection.close_soon(CLOSE_INVALID, "state vector does not decode")
                return
            connection.send(protocol.sync_step2(update))
        elif message.kind in (MessageKind.SYNC_STEP2, MessageKind.SYNC_UPDATE):
            self._receive_write(connection, message.payload)
        elif message.kind == MessageKind.AWARENESS:
            connection.awareness = frame
            for other in self.connections:
                if other is not connection:
                    other.send(frame)
        elif message.kind == MessageKind.QUERY_AWARENESS:
            for other in self.connections:
                if other is not connection and other.awareness is not None:
                    connection.send(other.awareness)

    def _receive_write(self, connection: Connection, update: bytes) -> None:
        if not connection.can_write:
            # Read-only roles: ignore the write (never merge it), and say so once.
            if not connection.denied_notice_sent:
                connection.denied_notice_sent = True
                connection.send(protocol.permission_denied("read-only: this account cannot change fleet data"))
            return
        connection.data_messages += 1
        self._queue.put_nowait(_Write(connection, update, connection.data_messages))

    async def transact(self, action: Callable[[FleetDocument], object], *, user_id: str | None = None) -> object:
        """Run a server-side edit (a REST write) through the same ordered, durable write path.

        Returns what action returned once its update is committed and broadcast; an exception
        raised by action (a ValidationError, say) comes back unchanged and nothing is written.
        """
        if self.broken:
            raise RoomBroken(f"room {self.name} must be reloaded")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Write(None, EMPTY_UPDATE, 0, action=action, user_id=user_id, result=future))
        return await future

    async def apply_external(self, update: bytes) -> None:
        """An update another server instance already committed: apply and broadcast, no storage."""
        await self._queue.put(_Write(None, update, 0))

    # -- the write path ------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._committing = True
            try:
                await self._commit_batch(batch)
            finally:
                self._committing = False

    async def _commit_batch(self, batch: list[_Write]) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        # Server-side transactions run one at a time, each as its own commit.
        for write in [w for w in batch if w.action is not None]:
            await self._commit_action(write)
        batch = [w for w in batch if w.action is None]
        if not batch:
            return
        try:
            await self._commit(batch)
        except Exception:
            log.exception("room %s: commit failed; its senders will resync", self.name)
            for write in batch:
                if write.connection is not None:
                    write.connection.close_soon(CLOSE_SERVER_ERROR, "could not persist update, retry")

    async def _commit_action(self, write: _Write) -> None:
        assert write.action is not None and write.result is not None
        try:
            with self.document.transaction(origin="server"):
                value = write.action(self.document)
        except Exception as exc:  # validation refused it before anything changed
            self.document.take_changes()
            write.result.set_exception(exc)
            return
        changes = self.document.take_changes()
        if not changes.updates:
            write.result.set_result(value)
            return
        update = merge_updates(*changes.updates) if len(changes.updates) > 1 else changes.updates[0]
        try:
            seq = await self.persistence.append(self.name, [StoredUpdate(update, write.user_id, time.time())])
        except Exception as exc:
            # The document already holds the change but the database does not: stop serving
            # from this copy so nobody is told about a write that was never stored.
            self.broken = True
            for connection in list(self.connections):
                connection.close_soon(CLOSE_SERVER_ERROR, "server storage failed, reconnect")
            write.result.set_exception(RoomBroken(f"could not store the change: {exc}"))
            return
        self.committed_seq = seq if seq is not None else self.committed_seq
        self._note_commit(1, time.time())
        self._broadcast([_Write(None, update, 0)])
        write.result.set_result(value)
        await self._committed([update])
        if self.on_applied is not None:
            await self.on_applied(self, changes)

    async def _commit(self, batch: list[_Write]) -> None:
        started = time.perf_counter()
        now = time.time()
        to_store = [
            StoredUpdate(w.update, w.connection.user_id, now)
            for w in batch
            if w.connection is not None and w.update != EMPTY_UPDATE
        ]
        if to_store:
            seq = await self.persistence.append(self.name, to_store)
            self.committed_seq = seq if seq is not None else self.committed_seq
        # Committed: only now does the room hold these updates and tell anyone about them.
        real = [w for w in batch if w.update != EMPTY_UPDATE]
        for write in real:
            self.document.apply_update(write.update)
        changes = self.document.take_changes()
        self._broadcast(real)
        acked: dict[Connection, int] = {}
        for write in batch:
            if write.connection is not None and write.connection.acks:
                acked[write.connection] = write.index
        for connection, index in acked.items():
            connection.send(protocol.ack_committed(index))
        self._note_commit(len(to_store), now if real else None, len(batch))
        self.stats.commit_seconds.append(time.perf_counter() - started)
        if to_store:
            await self._committed([s.update for s in to_store])
        if self.on_applied is not None and changes:
            await self.on_applied(self, changes)

    async def _committed(self, updates: list[bytes]) -> None:
        if self.on_committed is None:
            return
        try:
            await self.on_committed(self, updates)
        except Exception:  # already committed and acked: a fan-out problem must not look like a failed write
            log.exception("room %s: on_committed hook failed", self.name)

    def _note_commit(self, stored: int, when: float | None, batch_size: int = 1) -> None:
        self.stats.commits += 1
        self.stats.updates_committed += stored
        self.stats.largest_batch = max(self.stats.largest_batch, batch_size)
        if when is not None:
            self.stats.last_update_at = when

    def _broadcast(self, writes: list[_Write]) -> None:
        if not writes or not self.connections:
            return
        merged = merge_updates(*[w.update for w in writes]) if len(writes) > 1 else writes[0].update
        everything = protocol.update_message(merged)
        senders = {w.connection for w in writes}
        for connection in self.connections:
            if connection not in senders:
                connection.send(everything)
            elif len(senders) > 1:
                # A sender gets the others' writes, not its own echoed back.
                others = [w.update for w in writes if w.connection is not connection]
                connection.send(protocol.update_message(merge_updates(*others) if len(others) > 1 else others[0]))

