"""The sync client: keeps a Mirror in step with the server over the y-websocket protocol.

It reconnects by itself with jittered exponential backoff, stops (and asks for a new sign-in)
when the server rejects its token, and counts local changes as pending until the server says
it has committed them. Against a server without the ack extension the count is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import quote, urlsplit, urlunsplit

from sync import protocol
from sync.channel import Channel, ChannelClosed, WebsocketClientChannel
from sync.mirror import Mirror, MirrorChange
from sync.protocol import MessageKind, ProtocolError

log = logging.getLogger(__name__)

AUTH_CLOSE_CODES = {4401, 4403}
LAST_SYNCED_KEY = "last_synced_at"


class SyncState(enum.StrEnum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    SYNCING = "syncing"
    SYNCED = "synced"
    UNKNOWN = "unknown"  # connected to a server that does not confirm commits
    SIGN_IN_REQUIRED = "sign_in_required"


@dataclass(frozen=True)
class SyncStatus:
    state: SyncState
    pending: int | None  # local changes the server has not confirmed; None when it cannot tell
    last_synced_at: float | None
    detail: str = ""
    read_only: bool = False

    def describe(self) -> str:
        pending = "unknown" if self.pending is None else str(self.pending)
        text = f"{self.state.value}, {pending} pending"
        return f"{text} ({self.detail})" if self.detail else text


class AuthRejected(Exception):
    """The server refused the credentials (HTTP 401/403 or close code 4401/4403)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"server rejected the credentials ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class TokenSource(Protocol):
    async def access_token(self) -> str: ...

    async def refresh(self) -> bool: ...


class StaticToken:
    """A token that cannot be refreshed (tests, API keys)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def access_token(self) -> str:
        return self.token

    async def refresh(self) -> bool:
        return False


Connector = Callable[[], Awaitable[Channel]]


def sync_url(server_url: str, tenant_id: str, token: str) -> str:
    parts = urlsplit(server_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = f"{parts.path}/sync/{quote(tenant_id, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, f"token={quote(token, safe='')}&acks=1", ""))


def websocket_connector(server_url: str, tenant_id: str, tokens: TokenSource, *,
                        max_message_bytes: int = 64 * 1024 * 1024) -> Connector:
    """Connect to `WS {server}/sync/{tenant}?token=…&acks=1` with the `websockets` library."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def open_channel() -> Channel:
        url = sync_url(server_url, tenant_id, await tokens.access_token())
        try:
            websocket = await connect(url, max_size=max_message_bytes, open_timeout=10,
                                      ping_interval=20, ping_timeout=20)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthRejected(4400 + status - 400, "rejected at handshake") from exc
            raise ConnectionError(f"server answered HTTP {status}") from exc
        return WebsocketClientChannel(websocket, urlsplit(url).path)

    return open_channel


class SyncClient:
    def __init__(
        self,
        mirror: Mirror,
        connect: Connector,
        *,
        tokens: TokenSource | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.mirror = mirror
        self._connect = connect
        self._tokens = tokens
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._rng = rng or random.Random()
        self._listeners: list[Callable[[SyncStatus], None]] = []
        last = mirror.store.sync_log.get_meta(LAST_SYNCED_KEY)
        self._status = SyncStatus(SyncState.OFFLINE, mirror.store.sync_log.pending_count(),
                                  float(last) if last else None)
        self._status_changed = asyncio.Event()
        self._stopping = False
        self._channel: Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local_changes: asyncio.Queue[MirrorChange] | None = None
        self.attempts = 0  # reconnect attempts since the last successful sync
        self._refresh_used = False  # a token refresh was tried since the last successful sync

    # -- status --------------------------------------------------------------------------------

    @property
    def status(self) -> SyncStatus:
        return self._status

    def on_status(self, listener: Callable[[SyncStatus], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _set_status(self, status: SyncStatus) -> None:
        if status == self._status:
            return
        if status.state == SyncState.SYNCED and status.last_synced_at is not None:
            self.mirror.store.sync_log.set_meta(LAST_SYNCED_KEY, repr(status.last_synced_at))
        self._status = status
        self._status_changed.set()
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                log.exception("sync status listener failed")

    async def wait_for(self, predicate: Callable[[SyncStatus], bool], timeout: float = 10.0) -> SyncStatus:
        """Wait until the status satisfies predicate (tests and progress dialogs use it)."""
        async with asyncio.timeout(timeout):
            while not predicate(self._status):
                self._status_changed.clear()
                await self._status_changed.wait()
        return self._status

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep syncing until stop() or until the server rejects the credentials."""
        self._loop = asyncio.get_running_loop()
        self._local_changes = asyncio.Queue()
        unsubscribe = self.mirror.subscribe(self._on_mirror_change)
        try:
            while not self._stopping:
                self._set_status(replace(self._status, state=SyncState.CONNECTING, detail=""))
                try:
                    channel = await self._connect()
                except AuthRejected as exc:
                    if await self._refreshed(exc):
                        continue
                    return
                except (TimeoutError, OSError, ConnectionError) as exc:
                    await self._went_offline(f"cannot connect: {exc}")
                    continue
                self._channel = channel
                try:
                    await self._session(channel)
                except AuthRejected as exc:
                    if await self._refreshed(exc):
                        continue
                    return
                except (ChannelClosed, OSError, ConnectionError) as exc:
                    if isinstance(exc, ChannelClosed) and exc.code in AUTH_CLOSE_CODES:
                        # Accepted, then refused: the token expired or is for another tenant.
                        if await self._refreshed(AuthRejected(exc.code, exc.reason)):
                            continue
                        return
                    if not self._stopping:
                        await self._went_offline(f"connection lost: {exc}")
                except ProtocolError as exc:
                    await self._went_offline(f"server sent a bad frame: {exc}")
                finally:
                    self._channel = None
                    with contextlib.suppress(Exception):
                        await channel.close()
        finally:
            unsubscribe()
            if self._status.state != SyncState.SIGN_IN_REQUIRED:
                self._set_status(replace(self._status, state=SyncState.OFFLINE, detail="stopped"))

    async def stop(self) -> None:
        self._stopping = True
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._status_changed.set()

    async def _refreshed(self, exc: AuthRejected) -> bool:
        """Try a token refresh once on 4401; a 4403 (wrong tenant or role) is final."""
        if exc.code == 4401 and self._tokens is not None and not self._refresh_used:
            # Only once until a sync succeeds: a server that rejects fresh tokens too must not
            # be hammered in a tight connect-refresh loop.
            self._refresh_used = True
            if await self._tokens.refresh():
                return True
        self._set_status(replace(self._status, state=SyncState.SIGN_IN_REQUIRED,
                                 detail="sign in again: " + (exc.reason or "credentials rejected")))
        return False

    async def _went_offline(self, detail: str) -> None:
        self._set_status(replace(self._status, state=SyncState.OFFLINE, detail=detail,
                                 pending=self.mirror.store.sync_log.pending_count()))
        delay = min(self.max_backoff, self.min_backoff * 2 ** self.attempts)
        self.attempts += 1
        # Full jitter between half and all of the delay: clients cut off together do not
        # all come back in the same instant.
        await self._sleep(delay * self._rng.uniform(0.5, 1.0))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._stopping:
                    self._status_changed.clear()
                    await self._status_changed.wait()

    def _on_mirror_change(self, change: MirrorChange) -> None:
        # Called on whichever thread edited the mirror: hop onto the client's loop.
        if change.origin != "local" or self._loop is None or self._local_changes is None:
            return
        queue = self._local_changes
        self._loop.call_soon_threadsafe(queue.put_nowait, change)
        self._loop.call_soon_threadsafe(self._refresh_pending_while_disconnected)

    def _refresh_pending_while_disconnected(self) -> None:
        if self._channel is None:
            self._set_status(replace(self._status, pending=self.mirror.store.sync_log.pending_count()))

    # -- one connection ------------------------------------------------------------------------

    async def _session(self, channel: Channel) -> None:
        assert self._local_changes is not None
        while not self._local_changes.empty():  # the handshake below covers everything queued
            self._local_changes.get_nowait()
        session = _Session(self, channel)
        writer = asyncio.create_task(session.write_local_changes(self._local_changes))
        try:
            await session.read()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer


class _Session:
    """State of one connection: which data messages are in flight, and what the server said."""

    def __init__(self, client: SyncClient, channel: Channel) -> None:
        self.client = client
        self.channel = channel
        self.mirror = client.mirror
        self.sent = 0
        self.in_flight: deque[tuple[int, int]] = deque()  # (data message number, newest local seq in it)
        self.acks_supported = False
        self.server_synced = False
        self.read_only = False
        self.detail = ""

    async def _send_data(self, frame: bytes, newest_seq: int) -> None:
        self.sent += 1
        self.in_flight.append((self.sent, newest_seq))
        await self.channel.send(frame)

    async def write_local_changes(self, queue: asyncio.Queue[MirrorChange]) -> None:
        while True:
            change = await queue.get()
            for seq, update in change.local_updates:
                await self._send_data(protocol.update_message(update), seq)
            self.publish()

    async def read(self) -> None:
        with self.mirror.lock:
            step1 = protocol.sync_step1(self.mirror.document.get_state())
        await self.channel.send(step1)
        inbox: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(inbox))
        try:
            while True:
                # Everything that queued up while the last batch was applied is applied as one
                # batch: one SQLite transaction for a burst of remote updates.
                frames = [await inbox.get()]
                while not inbox.empty():
                    frames.append(inbox.get_nowait())
                await self.handle_frames(frames)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _pump(self, inbox: asyncio.Queue[bytes | BaseException]) -> None:
        while True:
            try:
                inbox.put_nowait(await self.channel.recv())
            except BaseException as exc:
                inbox.put_nowait(exc)
                return

    async def handle_frames(self, frames: list[bytes | BaseException]) -> None:
        updates: list[bytes] = []
        for frame in frames:
            if isinstance(frame, BaseException):
                self._apply(updates)
                raise frame
            message = protocol.parse(frame)
            if message.kind == MessageKind.SYNC_UPDATE:
                updates.append(message.payload)
                continue
            self._apply(updates)
            updates = []
            await self.handle(message)
        self._apply(updates)
        self.publish()

    def _apply(self, updates: list[bytes]) -> None:
        if updates:
            self.mirror.apply_remote_many(updates)

    async def handle(self, message: protocol.Message) -> None:
        kind = message.kind
        if kind == MessageKind.SYNC_STEP1:
            with self.mirror.lock:
                update = self.mirror.document.get_update(message.payload)
                newest = self.mirror.store.sync_log.max_seq()
            # Everything the server lacks, in one step-2 frame; once it is acked, every local
            # change logged before it is on the server.
            await self._send_data(protocol.sync_step2(update), newest)
        elif kind in (MessageKind.SYNC_STEP2, MessageKind.SYNC_UPDATE):
            self.mirror.apply_remote(message.payload)
            if kind == MessageKind.SYNC_STEP2:
                self.server_synced = True
                self.client.attempts = 0
                self.client._refresh_used = False
        elif kind == MessageKind.ACK_HELLO:
            self.acks_supported = True
        elif kind == MessageKind.ACK_COMMITTED:
            newest = 0
            while self.in_flight and self.in_flight[0][0] <= message.count:
                newest = max(newest, self.in_flight.popleft()[1])
            if newest:
                self.mirror.store.sync_log.mark_acked_upto(newest)
        elif kind == MessageKind.PERMISSION_DENIED:
            self.read_only = True
            self.detail = message.reason
        self.publish()

    def publish(self) -> None:
        current = self.client.status
        if not self.server_synced:
            state, pending = SyncState.SYNCING, self.mirror.store.sync_log.pending_count()
        elif not self.acks_supported:
            state, pending = SyncState.UNKNOWN, None
        else:
            pending = self.mirror.store.sync_log.pending_count()
            state = SyncState.SYNCED if pending == 0 else SyncState.SYNCING
        last = time.time() if state == SyncState.SYNCED else current.last_synced_at
        self.client._set_status(SyncStatus(state, pending, last, self.detail, self.read_only))
