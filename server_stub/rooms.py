"""Loads, serves and unloads per-tenant sync rooms; one room per tenant per server process.

One tenant's trouble stays that tenant's: a room that cannot load, died or is stuck is noted
in `faults` (shown by /health and the admin sync page), and is replaced on the next `get()` or
by the watchdog; clients reconnect and resync as after any restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pycrdt import get_update, merge_updates

from server_stub.fanout import Fanout
from server_stub.persistence import DatabasePersistence
from sync.document import EMPTY_UPDATE, Changes
from sync.quota import WriteQuota
from sync.room import CLOSE_RESTARTING, NEVER_CAUGHT, Room, describe

log = logging.getLogger(__name__)

AppliedListener = Callable[[Room, Changes], Awaitable[None]]

RETRY_FIRST_SECONDS = 1.0  # a failed tenant is retried after this, then twice as long each time
RETRY_MAX_SECONDS = 300.0
STALL_SECONDS = 60.0  # a committer holding one batch this long is stuck (a hung database call)
WATCHDOG_SECONDS = 5.0
CLOSE_ROOM_SECONDS = 5.0  # the longest close() waits for one room's writes before failing them


@dataclass
class TenantFault:
    """Why a tenant cannot be served or projected right now, and when it is tried again."""

    tenant_id: str
    stage: str  # "load" (its room) or "projection"
    error: str
    since: float  # wall clock of the first failure in this run of failures
    attempts: int
    retry_at: float  # monotonic


class TenantFaults:
    """Tenants that failed, with exponential backoff between retries; cleared by a success."""

    def __init__(self) -> None:
        self._faults: dict[str, TenantFault] = {}

    def fail(self, tenant_id: str, stage: str, exc: BaseException) -> TenantFault:
        previous = self._faults.get(tenant_id)
        attempts = previous.attempts + 1 if previous is not None else 1
        delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (attempts - 1))
        fault = TenantFault(tenant_id, stage, describe(exc), previous.since if previous else time.time(), attempts,
                            time.monotonic() + delay)
        self._faults[tenant_id] = fault
        log.error("tenant %s failed (%s, attempt %d): %s; retrying in %.0f s", tenant_id, stage, attempts,
                  fault.error, delay)
        return fault

    def clear(self, tenant_id: str) -> None:
        if self._faults.pop(tenant_id, None) is not None:
            log.info("tenant %s recovered", tenant_id)

    def get(self, tenant_id: str) -> TenantFault | None:
        return self._faults.get(tenant_id)

    def due(self) -> list[str]:
        now = time.monotonic()
        return [tenant for tenant, fault in self._faults.items() if fault.retry_at <= now]

    def all(self) -> list[TenantFault]:
        return sorted(self._faults.values(), key=lambda fault: fault.tenant_id)

    def __len__(self) -> int:
        return len(self._faults)


class RoomUnavailable(RuntimeError):
    """The tenant's room cannot be loaded right now (see RoomManager.faults)."""


@dataclass(frozen=True)
class RoomInfo:
    tenant_id: str
    connections: int
    last_update_at: float | None
    committed_seq: int | None
    commits: int


class RoomManager:
    def __init__(self, persistence: DatabasePersistence, *, max_message_bytes: int,
                 idle_seconds: float = 300.0, fanout: Fanout | None = None,
                 stall_seconds: float = STALL_SECONDS, watchdog_seconds: float = WATCHDOG_SECONDS,
                 quota: Callable[[], WriteQuota | None] = lambda: None) -> None:
        self.persistence = persistence
        self.quota = quota  # a fresh WriteQuota for each tenant's room (None: unpaced)
        self.max_message_bytes = max_message_bytes
        self.idle_seconds = idle_seconds
        self.stall_seconds = stall_seconds
        self.watchdog_seconds = watchdog_seconds
        self.rooms: dict[str, Room] = {}
        self.faults = TenantFaults()
        self._loading: dict[str, asyncio.Lock] = {}
        self._listeners: list[AppliedListener] = []
        self._reaper: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        # Other instances' updates that arrive while a room is loading, applied once it is in.
        self._arriving: dict[str, list[bytes]] = {}
        self.fanout = fanout
        if fanout is not None:
            fanout.attach(self)

    def on_applied(self, listener: AppliedListener) -> None:
        """Hear about every committed change in any room (projection, live push, fan-out)."""
        self._listeners.append(listener)

    async def _applied(self, room: Room, changes: Changes) -> None:
        for listener in self._listeners:
            try:
                await listener(room, changes)
            except BaseException as exc:  # projection trouble must never stop sync
                if isinstance(exc, NEVER_CAUGHT):
                    raise
                log.exception("room listener failed for %s", room.name)

    async def get(self, tenant_id: str) -> Room:
        """The tenant's room, loaded from the database the first time (YRoom never does this itself).

        A room that broke, died or was stopped is replaced by a fresh load. RoomUnavailable when
        the tenant's log cannot be loaded; the tenant is then noted in `faults`."""
        room = self.rooms.get(tenant_id)
        if room is not None and room.alive:
            return room
        lock = self._loading.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            room = self.rooms.get(tenant_id)
            if room is not None and not room.alive:
                log.warning("room %s is %s; reloading it", tenant_id, "broken" if room.broken else "not running")
                await self._unload(tenant_id)
                room = None
            if room is None:
                room = Room(tenant_id, self.persistence, max_message_bytes=self.max_message_bytes,
                            on_applied=self._applied, on_committed=self._committed, quota=self.quota())
                # From here on, remote updates are kept: one committed after the load read the
                # database must not slip between that read and the room going live.
                self._arriving[tenant_id] = []
                try:
                    await room.start()
                except Exception as exc:
                    self.faults.fail(tenant_id, "load", exc)
                    raise RoomUnavailable(f"tenant {tenant_id} cannot be loaded: {describe(exc)}") from exc
                finally:
                    arrived = self._arriving.pop(tenant_id, [])
                self.rooms[tenant_id] = room
                fault = self.faults.get(tenant_id)
                if fault is not None and fault.stage == "load":
                    self.faults.clear(tenant_id)
                for update in arrived:
                    await room.apply_external(update)
            return room

    async def _committed(self, room: Room, updates: list[bytes]) -> None:
        """Updates this instance committed: tell the other instances (never called for theirs)."""
        if self.fanout is not None:
            for update in updates:
                await self.fanout.publish_update(room.name, update)

    async def apply_remote(self, tenant_id: str, update: bytes) -> None:
        """An update another instance committed: into the loaded room (not stored again)."""
        room = self.rooms.get(tenant_id)
        if room is not None:
            await room.apply_external(update)
        elif tenant_id in self._arriving:
            self._arriving[tenant_id].append(update)
        # Not loaded: nothing to do, the room reads the database when it is next needed.

    async def resync(self, tenant_id: str | None = None) -> None:
        """Merge the stored log into loaded rooms: after fan-out missed messages (Redis was down)."""
        for name in [tenant_id] if tenant_id is not None else list(self.rooms):
            room = self.rooms.get(name)
            if room is None:
                continue
            stored = await self.persistence.load(name)
            if not stored:
                continue
            try:
                # Only what the room lacks, so its sockets are not sent the whole history again.
                missing = get_update(merge_updates(*stored) if len(stored) > 1 else stored[0],
                                     room.document.get_state())
            except BaseException as exc:
                if isinstance(exc, NEVER_CAUGHT):
                    raise
                log.error("resync of %s failed: %s", name, describe(exc))
                continue
            if missing != EMPTY_UPDATE:
                await room.apply_external(missing)

    def loaded(self, tenant_id: str) -> Room | None:
        return self.rooms.get(tenant_id)

    def info(self) -> list[RoomInfo]:
        return [
            RoomInfo(name, len(room.connections), room.stats.last_update_at, room.committed_seq, room.stats.commits)
            for name, room in sorted(self.rooms.items())
        ]

    async def _unload(self, tenant_id: str, drain_seconds: float = CLOSE_ROOM_SECONDS) -> None:
        room = self.rooms.pop(tenant_id, None)
        if room is not None:
            await room.stop(drain_seconds)

    async def unload_idle(self) -> list[str]:
        """Drop rooms nobody has used for idle_seconds. Nothing is lost: every update a room
        holds was committed before it was applied."""
        now = time.monotonic()
        idle = [
            name for name, room in self.rooms.items()
            if not room.connections and room.idle_since is not None and now - room.idle_since >= self.idle_seconds
        ]
        unloaded = []
        for name in idle:
            # Under the loading lock, so a get() meanwhile waits until this room has committed all
            # it holds: a room loaded while the old one still commits would miss those updates.
            async with self._loading.setdefault(name, asyncio.Lock()):
                room = self.rooms.get(name)
                if room is None or room.connections or room.idle_since is None:
                    continue  # someone came back while the lock was awaited
                await self._unload(name)
                unloaded.append(name)
        return unloaded

    async def restart_unhealthy(self) -> list[str]:
        """Unload rooms whose committer died, that broke, or that hold one batch for longer than
        stall_seconds. Their sockets close with 1012 so clients reconnect, which loads the room
        afresh from the database; writes they still held fail instead of waiting forever."""
        restarted = []
        for name, room in list(self.rooms.items()):
            stalled = room.stalled_for() > self.stall_seconds
            if room.alive and not stalled:
                continue
            log.error("room %s is %s; restarting it", name,
                      f"stuck in one commit for {room.stalled_for():.0f} s" if stalled else "not running")
            for connection in list(room.connections):
                connection.close_soon(CLOSE_RESTARTING, "room restarting, reconnect")
            async with self._loading.setdefault(name, asyncio.Lock()):
                if self.rooms.get(name) is room:
                    await self._unload(name, drain_seconds=0.0)
                    restarted.append(name)
        return restarted

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())
        self._watchdog = asyncio.create_task(self._watch_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_seconds / 4))
            try:
                await self.unload_idle()
            except Exception:
                log.exception("unloading idle rooms failed")

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.watchdog_seconds)
            try:
                await self.restart_unhealthy()
            except Exception:
                log.exception("the room watchdog failed")

    async def close(self, seconds: float = CLOSE_ROOM_SECONDS) -> None:
        """Stop every room, each within `seconds`: a stuck database never holds up a shutdown."""
        for task in (self._reaper, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        rooms = list(self.rooms)
        results = await asyncio.gather(*(self._unload(name, seconds) for name in rooms), return_exceptions=True)
        for name, result in zip(rooms, results, strict=True):
            if isinstance(result, BaseException):
                log.error("closing room %s failed: %s", name, describe(result))
