"""Test doubles that ship with the package: an in-memory sync hub that behaves like the server."""

from __future__ import annotations

import asyncio
import contextlib

from sync.channel import MemoryChannel, memory_channel_pair
from sync.room import MemoryPersistence, Room


class MemoryHub:
    """Rooms with in-memory persistence, reached through in-memory channels: no sockets."""

    def __init__(self) -> None:
        self.persistence = MemoryPersistence()
        self.rooms: dict[str, Room] = {}
        self._sessions: set[asyncio.Task[None]] = set()
        self.online = True  # tests flip this to make connect() fail like a dead network

    async def room(self, name: str) -> Room:
        if name not in self.rooms:
            room = Room(name, self.persistence)
            await room.start()
            self.rooms[name] = room
        return self.rooms[name]

    async def connect(self, name: str, *, user_id: str = "tester", can_write: bool = True,
                      acks: bool = True) -> MemoryChannel:
        if not self.online:
            raise OSError("hub offline")
        room = await self.room(name)
        client_end, server_end = memory_channel_pair(f"/sync/{name}")
        task = asyncio.create_task(room.serve(server_end, user_id=user_id, can_write=can_write, acks=acks))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)
        return client_end

    async def drop_all(self) -> None:
        """Cut every connection, as a network failure or a server restart would."""
        for room in self.rooms.values():
            for connection in list(room.connections):
                await connection.channel.close(1006, "dropped")

    async def restart(self) -> None:
        """Stop every room and start afresh from persistence, as a server restart does."""
        await self.drop_all()
        for room in list(self.rooms.values()):
            await room.stop()
        self.rooms.clear()

    async def close(self) -> None:
        await self.restart()
        for task in list(self._sessions):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
