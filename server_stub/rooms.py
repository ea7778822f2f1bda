"""Loads, serves and unloads per-tenant sync rooms; one room per tenant per server process."""

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
from sync.room import Room

log = logging.getLogger(__name__)

AppliedListener = Callable[[Room, Changes], Awaitable[None]]


@dataclass(frozen=True)
class RoomInfo:
    tenant_id: str
    connections: int
    last_update_at: float | None
    committed_seq: int | None
    commits: int


class RoomManager:
    def __init__(self, persistence: DatabasePersistence, *, max_message_bytes: int,
                 idle_seconds: float = 300.0, fanout: Fanout | None = None) -> None:
        self.persistence = persistence
        self.max_message_bytes = max_message_bytes
        self.idle_seconds = idle_seconds
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._listeners: list[AppliedListener] = []
        self._reaper: asyncio.Task[None] | None = None
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
            except Exception:  # projection trouble must never stop sync
                log.exception("room listener failed for %s", room.name)

    async def get(self, tenant_id: str) -> Room:
        """The tenant's room, loaded from the database the first time (YRoom never does this itself)."""
        room = self.rooms.get(tenant_id)
        if room is not None and not room.broken:
            return room
        lock = self._loading.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            room = self.rooms.get(tenant_id)
            if room is not None and room.broken:
                await self._unload(tenant_id)
                room = None
            if room is None:
                room = Room(tenant_id, self.persistence, max_message_bytes=self.max_message_bytes,
                            on_applied=self._applied, on_committed=self._committed)
                # From here on, remote updates are kept: one committed after the load read the
                # database must not slip between that read and the room going live.
                self._arriving[tenant_id] = []
                try:
                    await room.start()
                finally:
                    arrived = self._arriving.pop(tenant_id, [])
                self.rooms[tenant_id] = room
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
            # Only what the room lacks, so its sockets are not sent the whole history again.
            missing = get_update(merge_updates(*stored) if len(stored) > 1 else stored[0], room.document.get_state())
            if missing != EMPTY_UPDATE:
                await room.apply_external(missing)

    def loaded(self, tenant_id: str) -> Room | None:
        return self.rooms.get(tenant_id)

    def info(self) -> list[RoomInfo]:
        return [
            RoomInfo(name, len(room.connections), room.stats.last_update_at, room.committed_seq, room.stats.commits)
            for name, room in sorted(self.rooms.items())
        ]

    async def _unload(self, tenant_id: str) -> None:
        room = self.rooms.pop(tenant_id, None)
        if room is not None:
            await room.stop()

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

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_seconds / 4))
            try:
                await self.unload_idle()
            except Exception:
                log.exception("unloading idle rooms failed")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for name in list(self.rooms):
            await self._unload(name)
