"""A sync room: one tenant document, its connections, and the group-committing write path.

An update is appended to persistence before the room applies it, broadcasts it or acks it,
so the room never holds (or tells anyone about) a change the database does not have.
Persistence is a protocol: the server stores in Postgres or SpatiaLite, the test hub in memory.

Every call into pycrdt on the write path is guarded, panics included (pyo3's PanicException
derives from BaseException, not Exception): one bad write fails its own sender, never the room.
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

import orjson
from pycrdt import merge_updates

from sync import protocol
from sync.channel import Channel, ChannelClosed
from sync.document import EMPTY_STATE_VECTOR, EMPTY_UPDATE, Changes, FleetDocument
from sync.protocol import MessageKind, ProtocolError
from sync.quota import WriteQuota

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 512
OUTBOX_LIMIT = 2048  # frames queued for one slow client before it is cut off to resync later
# Bytes queued for one client (behind the frame being sent). A frame always joins an empty
# outbox, so one full state larger than this still reaches a new client.
OUTBOX_BYTES_LIMIT = 16 * 1024 * 1024
MAX_AWARENESS_BYTES = 64 * 1024  # cursors and user names: a few hundred bytes in practice
# Backpressure: a socket is not read while this much of what it sent still waits for a commit.
CONNECTION_QUEUED_WRITES = 64
CONNECTION_QUEUED_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_QUEUED_WRITES = 1024  # the whole room; REST writes and fan-out wait beyond it
STOP_DRAIN_SECONDS = 5.0  # how long stop() lets queued writes commit before failing them

CLOSE_GOING_AWAY = 1001
CLOSE_INVALID = 1007  # frame does not decode
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_RESTARTING = 1012
CLOSE_SLOW = 1013

# Never turned into an error of one write: they stop the process or the task, as they must.
NEVER_CAUGHT = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)


def describe(exc: BaseException) -> str:
    """One line naming an exception, for close reasons and logs (pyo3 panics span many lines)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


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


def check_awareness(payload: bytes) -> None:
    """Raise ProtocolError unless the bytes are a y-protocols awareness update: a count, then per
    client its id, clock and state as JSON text. Relayed frames are only ever ones that parse."""
    reader = protocol._Reader(payload)
    for _ in range(reader.var_uint()):
        reader.var_uint()  # client id
        reader.var_uint()  # clock
        try:
            orjson.loads(reader.var_string())
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"awareness state is not JSON: {exc}") from None
    if reader.pos != len(payload):
        raise ProtocolError(f"{len(payload) - reader.pos} bytes after the awareness update")


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
        self.outbox_bytes = 0
        self._sender: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()
        # Writes this connection sent that the committer has not finished: reading pauses past a bound.
        self.queued_writes = 0
        self.queued_bytes = 0

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop())

    def send(self, frame: bytes) -> None:
        """Queue a frame without waiting, so one slow client never holds up the room."""
        if self.closed.is_set():
            return
        if self.outbox_bytes and self.outbox_bytes + len(frame) > OUTBOX_BYTES_LIMIT:
            self._too_slow(f"{self.outbox_bytes + len(frame)} bytes queued")
            return
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self._too_slow(f"{OUTBOX_LIMIT} frames queued")
            return
        self.outbox_bytes += len(frame)

    def _too_slow(self, why: str) -> None:
        log.warning("client %s too slow (%s); closing so it resyncs", self.user_id, why)
        self.close_soon(CLOSE_SLOW, "client too slow, reconnect to resync")

    def _take(self) -> bytes:
        frame = self._outbox.get_nowait()
        self.outbox_bytes -= len(frame)
        return frame

    async def _send_loop(self) -> None:
        try:
            while True:
                first = await self._outbox.get()
                self.outbox_bytes -= len(first)
                frames = self._coalesce(first) if not self._outbox.empty() else [first]
                for frame in frames:
                    await self.channel.send(frame)
        except (ChannelClosed, OSError, asyncio.CancelledError):
            pass
        except Exception:  # a transport error must end this client only
            log.exception("sending to client failed")
        finally:
            self.closed.set()

    def _coalesce(self, first: bytes) -> list[bytes]:
        """Fold a run of queued update frames into one: under load a client gets fewer, larger
        frames instead of falling behind. A frame of another kind ends the run and is sent right
        after, so the order of everything else is kept. Should pycrdt fail to merge the run, its
        frames go out one by one instead: slower, never lost."""
        if protocol.parse(first).kind != MessageKind.SYNC_UPDATE:
            return [first]
        run = [first]
        held: list[bytes] = []
        while not self._outbox.empty() and len(run) < 256:
            following = self._take()
            if protocol.parse(following).kind != MessageKind.SYNC_UPDATE:
                held.append(following)
                break
            run.append(following)
        if len(run) == 1:
            return run + held
        try:
            merged = merge_updates(*[protocol.parse(frame).payload for frame in run])
        except BaseException as exc:
            if isinstance(exc, NEVER_CAUGHT):
                raise
            log.warning("client %s: merging %d queued updates failed (%s); sending them one by one",
                        self.user_id, len(run), describe(exc))
            return run + held
        return [protocol.update_message(merged), *held]

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
    held: bool = False  # counted in its connection's queued writes until released


class RoomBroken(RuntimeError):
    """The room's document may hold a change the database refused; it must be reloaded."""


class RoomClosed(RuntimeError):
    """The room stopped before this write was committed; nothing of it was stored."""


class RoomLoadError(RuntimeError):
    """The stored log cannot be turned into a document (an update pycrdt refuses to apply)."""


class WriteFailed(RuntimeError):
    """pycrdt refused a write (a panic, say an integer beyond 64 bits); nothing of it was stored."""


@dataclass
class RoomStats:
    commits: int = 0
    updates_committed: int = 0
    last_update_at: float | None = None
    largest_batch: int = 0
    commit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    throttled_seconds: float = 0.0  # how long the tenant's quota held its sockets back, in all


AppliedHook = Callable[["Room", Changes], Awaitable[None]]
# Told the updates this room itself just committed to persistence, in order: what other server
# instances need (fan-out). Never called for apply_external() updates, which were committed
# elsewhere, so forwarding what it is given can never echo an update back and forth.
CommittedHook = Callable[["Room", list[bytes]], Awaitable[None]]


def _document_from(stored: list[bytes]) -> FleetDocument:
    """A document holding the stored updates; RoomLoadError (never a panic) when pycrdt refuses them."""
    document = FleetDocument()
    if stored:
        try:
            document.apply_update(merge_updates(*stored) if len(stored) > 1 else stored[0])
        except BaseException as exc:
            if isinstance(exc, NEVER_CAUGHT):
                raise
            raise RoomLoadError(_first_unreadable(stored, exc)) from None
    document.take_changes()
    return document


def _first_unreadable(stored: list[bytes], merged_error: BaseException) -> str:
    """Name the first stored update pycrdt cannot apply, so an operator knows which row it is."""
    probe = FleetDocument()
    for position, update in enumerate(stored, 1):
        try:
            probe.apply_update(update)
        except BaseException as exc:
            if isinstance(exc, NEVER_CAUGHT):
                raise
            return (f"stored update {position} of {len(stored)} (counting the snapshot first) "
                    f"cannot be applied: {describe(exc)}")
    return f"the stored updates cannot be merged: {describe(merged_error)}"


class Room:
    def __init__(
        self,
        name: str,
        persistence: Persistence,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queued_writes: int = DEFAULT_MAX_QUEUED_WRITES,
        on_applied: AppliedHook | None = None,
        on_committed: CommittedHook | None = None,
        quota: WriteQuota | None = None,
    ) -> None:
        self.name = name
        self.quota = quota  # this tenant's sustained write rate over all its sockets
        self.persistence = persistence
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.max_queued_writes = max_queued_writes
        self.on_applied = on_applied
        self.on_committed = on_committed
        self.document = FleetDocument()
        self.connections: set[Connection] = set()
        self.stats = RoomStats()
        self.idle_since: float | None = time.monotonic()
        # Unbounded as a structure, bounded by the waits in front of it (_wait_for_capacity).
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._capacity = asyncio.Event()  # set (and replaced) whenever queued writes finish
        self._committer: asyncio.Task[None] | None = None
        self._batch_since: float | None = None  # when the committer took the batch it holds
        # Cleared while the document is rebuilt after a failed write: nobody may read it meanwhile.
        self._document_ready = asyncio.Event()
        self._document_ready.set()
        self._background: set[asyncio.Future[None]] = set()
        self.started = asyncio.Event()
        self.stopping = False
        self.committed_seq: int | None = None  # log position of the newest committed update
        self.broken = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored snapshot and later updates: a room never starts empty by accident."""
        stored = await self.persistence.load(self.name)
        self.document = _document_from(stored)
        self.committed_seq = await self.persistence.head(self.name)
        self._committer = asyncio.create_task(self._commit_loop(), name=f"room-commit-{self.name}")
        self.started.set()

    @property
    def alive(self) -> bool:
        """Started, committing, and holding nothing the database lacks."""
        return (self.started.is_set() and not self.broken and not self.stopping
                and self._committer is not None and not self._committer.done())

    def stalled_for(self) -> float:
        """Seconds the committer has held its current batch (0 when it is waiting for work)."""
        return 0.0 if self._batch_since is None else time.monotonic() - self._batch_since

    async def stop(self, drain_seconds: float = STOP_DRAIN_SECONDS) -> None:
        """Close every socket, let queued writes commit for up to drain_seconds, then fail the rest:
        never waits on a stuck database for longer than that."""
        self.stopping = True
        for connection in list(self.connections):
            connection.close_soon(CLOSE_GOING_AWAY, "room closing")
            await connection.stop()
        if self._committer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_seconds):
                    await self._drain()
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._committer
        self._fail_queued(RoomClosed(f"room {self.name} stopped before this write was committed"))
        self._notify_capacity()

    async def _drain(self) -> None:
        """Wait until every queued write is committed, the one the committer already took included:
        cancelling it mid-commit would leave a REST caller waiting forever on its result."""
        while ((not self._queue.empty() or self._batch_since is not None)
               and not (self._committer and self._committer.done())):
            await asyncio.sleep(0.01)

    def _fail_queued(self, error: Exception) -> None:
        while not self._queue.empty():
            write = self._queue.get_nowait()
            self._finish(write, error)

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
                # Backpressure: while this client's writes wait for the committer, stop reading
                # its socket (TCP then slows the sender) instead of queueing without bound.
                await self._wait_for_capacity(connection)
                if connection.closed.is_set():
                    break
                frame = await channel.recv()
                writes_before = connection.data_messages
                self._handle(connection, frame)
                if self.quota is not None and connection.data_messages != writes_before:
                    # Over the tenant's quota its sockets are read more slowly, never refused.
                    delay = self.quota.reserve(len(frame))
                    if delay > 0:
                        self.stats.throttled_seconds += delay
                        await asyncio.sleep(delay)
        except ChannelClosed:
            pass
        finally:
            self.connections.discard(connection)
            await connection.stop()
            if not self.connections:
                self.idle_since = time.monotonic()

    def _has_capacity(self, connection: Connection | None) -> bool:
        if self._queue.qsize() >= self.max_queued_writes:
            return False
        return connection is None or (connection.queued_writes < CONNECTION_QUEUED_WRITES
                                      and connection.queued_bytes < CONNECTION_QUEUED_BYTES)

    async def _wait_for_capacity(self, connection: Connection | None = None) -> None:
        while not self._has_capacity(connection) and not self.stopping:
            if connection is not None and connection.closed.is_set():
                return
            await self._capacity.wait()

    def _notify_capacity(self) -> None:
        self._capacity.set()
        self._capacity = asyncio.Event()

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
            if self._document_ready.is_set():
                self._answer_step1(connection, message.payload)
            else:  # the document is being rebuilt after a failed write: answer from the new one
                answer = asyncio.ensure_future(self._answer_step1_when_ready(connection, message.payload))
                self._background.add(answer)
                answer.add_done_callback(self._background.discard)
        elif message.kind in (MessageKind.SYNC_STEP2, MessageKind.SYNC_UPDATE):
            self._receive_write(connection, message.payload)
        elif message.kind == MessageKind.AWARENESS:
            self._relay_awareness(connection, frame, message.payload)
        elif message.kind == MessageKind.QUERY_AWARENESS:
            for other in self.connections:
                if other is not connection and other.awareness is not None:
                    connection.send(other.awareness)

    def _answer_step1(self, connection: Connection, state_vector: bytes) -> None:
        try:
            if state_vector == EMPTY_STATE_VECTOR:  # a new client: the shared full state
                update = self.document.full_update()
            else:
                update = self.document.get_update(state_vector)
        except BaseException as exc:  # pycrdt may panic on a crafted state vector
            if isinstance(exc, NEVER_CAUGHT):
                raise
            connection.close_soon(CLOSE_INVALID, "state vector does not decode")
            return
        connection.send(protocol.sync_step2(update))

    async def _answer_step1_when_ready(self, connection: Connection, state_vector: bytes) -> None:
        await self._document_ready.wait()
        self._answer_step1(connection, state_vector)

    def _relay_awareness(self, connection: Connection, frame: bytes, payload: bytes) -> None:
        # Relayed to every peer and kept for late joiners: bounded and well-formed, or refused.
        if len(frame) > MAX_AWARENESS_BYTES:
            connection.close_soon(CLOSE_TOO_BIG, f"awareness message of {len(frame)} bytes exceeds "
                                                 f"{MAX_AWARENESS_BYTES}")
            return
        try:
            check_awareness(payload)
        except ProtocolError as exc:
            connection.close_soon(CLOSE_INVALID, f"awareness: {exc}"[:120])
            return
        connection.awareness = frame
        for other in self.connections:
            if other is not connection:
                other.send(frame)

    def _receive_write(self, connection: Connection, update: bytes) -> None:
        if not connection.can_write:
            # Read-only roles: ignore the write (never merge it), and say so once.
            if not connection.denied_notice_sent:
                connection.denied_notice_sent = True
                connection.send(protocol.permission_denied("read-only: this account cannot change fleet data"))
            return
        connection.data_messages += 1
        connection.queued_writes += 1
        connection.queued_bytes += len(update)
        self._queue.put_nowait(_Write(connection, update, connection.data_messages, held=True))

    async def transact(self, action: Callable[[FleetDocument], object], *, user_id: str | None = None) -> object:
        """Run a server-side edit (a REST write) through the same ordered, durable write path.

        Returns what action returned once its update is committed and broadcast; an exception
        raised by action (a ValidationError, say) comes back unchanged and nothing is written.
        A pycrdt panic comes back as WriteFailed; either way the room carries on.
        """
        if self.broken:
            raise RoomBroken(f"room {self.name} must be reloaded")
        await self._wait_for_capacity()
        if self.stopping:
            raise RoomClosed(f"room {self.name} is closing")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(None, EMPTY_UPDATE, 0, action=action, user_id=user_id, result=future))
        return await future

    async def apply_external(self, update: bytes) -> None:
        """An update another server instance already committed: apply and broadcast, no storage."""
        await self._wait_for_capacity()
        self._queue.put_nowait(_Write(None, update, 0))

    # -- the write path ------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._batch_since = time.monotonic()
            try:
                await self._commit_batch(batch)  # takes more queued writes into `batch`
            except BaseException as exc:
                if isinstance(exc, NEVER_CAUGHT):
                    self._fail_batch(batch, RoomClosed(f"room {self.name} stopped during this commit"))
                    raise
                # A bug or a panic outside the guarded calls: fail this batch, keep committing.
                log.error("room %s: commit failed: %s", self.name, describe(exc), exc_info=exc)
                self._fail_batch(batch, WriteFailed(f"commit failed: {describe(exc)}"))
            finally:
                self._batch_since = None
                for write in batch:
                    self._release(write)
                self._notify_capacity()

    def _release(self, write: _Write) -> None:
        if write.held and write.connection is not None:
            write.held = False  # released once, whichever way the write ended
            write.connection.queued_writes -= 1
            write.connection.queued_bytes -= len(write.update)

    def _fail_batch(self, batch: list[_Write], error: Exception) -> None:
        for write in batch:
            self._finish(write, error)

    def _finish(self, write: _Write, error: Exception) -> None:
        """End a write that will never be committed: its caller or its socket learns why."""
        if write.result is not None and not write.result.done():
            write.result.set_exception(error)
        if write.connection is not None:
            write.connection.close_soon(CLOSE_SERVER_ERROR, f"could not commit: {error}"[:120])
        self._release(write)

    async def _commit_batch(self, batch: list[_Write]) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        # Server-side transactions run one at a time, each as its own commit.
        for write in [w for w in batch if w.action is not None]:
            await self._commit_action(write)
        updates = [w for w in batch if w.action is None]
        if not updates:
            return
        try:
            await self._commit(updates)
        except Exception:
            log.exception("room %s: commit failed; its senders will resync", self.name)
            for write in updates:
                if write.connection is not None:
                    write.connection.close_soon(CLOSE_SERVER_ERROR, "could not persist update, retry")

    async def _commit_action(self, write: _Write) -> None:
        assert write.action is not None and write.result is not None
        changes: Changes | None = None
        try:
            with self.document.transaction(origin="server"):
                value = write.action(self.document)
            changes = self.document.take_changes()
            update = merge_updates(*changes.updates) if len(changes.updates) > 1 else (
                changes.updates[0] if changes.updates else EMPTY_UPDATE)
        except BaseException as exc:
            if isinstance(exc, NEVER_CAUGHT):
                raise
            # Refused by validation before anything changed, or pycrdt failed part-way through
            # (a panic on the second field, say). yrs has no rollback, so whatever the action
            # changed is undone by rebuilding the document from the database, which never saw it.
            leftover = changes if changes is not None else self.document.take_changes()
            if leftover.updates:
                await self._reload_document(leftover)
            write.result.set_exception(exc if isinstance(exc, Exception) else WriteFailed(describe(exc)))
            return
        if update == EMPTY_UPDATE:
            write.result.set_result(value)
            return
        try:
            seq = await self.persistence.append(self.name, [StoredUpdate(update, write.user_id, time.time())])
        except Exception as exc:
            # The document already holds the change but the database does not: stop serving
            # from this copy so nobody is told about a write that was never stored.
            self._break(f"could not store the change: {exc}")
            write.result.set_exception(RoomBroken(f"could not store the change: {exc}"))
            return
        self.committed_seq = seq if seq is not None else self.committed_seq
        self._note_commit(1, time.time())
        self._broadcast([_Write(None, update, 0)])
        write.result.set_result(value)
        await self._committed([update])
        await self._applied(changes)

    async def _reload_document(self, discarded: Changes) -> None:
        """Replace the document with what the database holds. Clients never saw the discarded
        change (nothing is broadcast before a commit, and a sync step 1 waits for the new
        document), so they need not be told; the new document gets a new client id, so no clock
        the discarded change used is reused. Projection may have read the discarded change: it
        is told the records it touched, to read them again."""
        self._document_ready.clear()
        try:
            self.document = _document_from(await self.persistence.load(self.name))
        except Exception as exc:
            self._break(f"could not reload the document after a failed write: {exc}")
        finally:
            self._document_ready.set()
        discarded.updates.clear()
        await self._applied(discarded)

    def _break(self, why: str) -> None:
        log.error("room %s: %s; it will be reloaded", self.name, why)
        self.broken = True
        for connection in list(self.connections):
            connection.close_soon(CLOSE_SERVER_ERROR, "server storage failed, reconnect")

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
        applied = []
        for write in real:
            try:
                self.document.apply_update(write.update)
                applied.append(write)
            except BaseException as exc:
                if isinstance(exc, NEVER_CAUGHT):
                    raise
                # Decoded and checked before it was queued, yet pycrdt refused it: the database
                # holds an update this document may hold in part. Reload rather than serve it.
                log.error("room %s: a committed update could not be applied: %s", self.name, describe(exc))
                if write.connection is not None:
                    reason = f"update could not be applied: {describe(exc)}"[:120]
                    write.connection.close_soon(CLOSE_SERVER_ERROR, reason)
                self._break("a committed update could not be applied")
        changes = self.document.take_changes()
        self._broadcast(applied)
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
        if changes:
            await self._applied(changes)

    async def _committed(self, updates: list[bytes]) -> None:
        if self.on_committed is None:
            return
        try:
            await self.on_committed(self, updates)
        except Exception:  # already committed and acked: a fan-out problem must not look like a failed write
            log.exception("room %s: on_committed hook failed", self.name)

    async def _applied(self, changes: Changes) -> None:
        if self.on_applied is None:
            return
        try:
            await self.on_applied(self, changes)
        except Exception:  # committed and acked already: projection trouble must not fail the write
            log.exception("room %s: on_applied hook failed", self.name)

    def _note_commit(self, stored: int, when: float | None, batch_size: int = 1) -> None:
        self.stats.commits += 1
        self.stats.updates_committed += stored
        self.stats.largest_batch = max(self.stats.largest_batch, batch_size)
        if when is not None:
            self.stats.last_update_at = when

    def _broadcast(self, writes: list[_Write]) -> None:
        if not writes or not self.connections:
            return
        try:
            merged = merge_updates(*[w.update for w in writes]) if len(writes) > 1 else writes[0].update
        except BaseException as exc:
            if isinstance(exc, NEVER_CAUGHT):
                raise
            # Each update alone was applied; only merging them failed: send them one at a time.
            log.warning("room %s: merging %d updates for broadcast failed: %s", self.name, len(writes), describe(exc))
            for write in writes:
                self._broadcast([write])
            return
        everything = protocol.update_message(merged)
        senders = {w.connection for w in writes}
        for connection in self.connections:
            if connection not in senders:
                connection.send(everything)
            elif len(senders) > 1:
                # A sender gets the others' writes, not its own echoed back.
                others = [w.update for w in writes if w.connection is not connection]
                try:
                    connection.send(protocol.update_message(merge_updates(*others) if len(others) > 1 else others[0]))
                except BaseException as exc:
                    if isinstance(exc, NEVER_CAUGHT):
                        raise
                    for update in others:
                        connection.send(protocol.update_message(update))
