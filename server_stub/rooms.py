"""Loads, serves and unloads per-tenant sync rooms; one room per tenant per server process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server_stub.persistence import DatabasePersistence
from sync.document import Changes
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
                 idle_seconds: float = 300.0) -> None:
        self.persistence = persistence
        self.max_message_bytes = max_message_bytes
        self.idle_seconds = idle_seconds
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._listeners: list[AppliedListener] = []
        self._reaper: asyncio.Task[None] | None = None

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
                            on_applied=self._applied)
                await room.start()
                self.rooms[tenant_id] = room
            return room

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
        for name in idle:
            await self._unload(name)
        return idle

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
