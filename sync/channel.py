"""Transports for sync: a Channel protocol, an in-memory pair for tests, and a websocket adapter.

Adapters live at the edge; the room and the client only ever see a Channel.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class ChannelClosed(ConnectionError):
    """The other end went away. `code` and `reason` carry a websocket close code when known."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(f"channel closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class Channel(Protocol):
    path: str

    async def send(self, message: bytes) -> None: ...

    async def recv(self) -> bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class MemoryChannel:
    """One end of an in-memory duplex channel: the test double that needs no sockets."""

    def __init__(self, path: str, inbox: asyncio.Queue[bytes | ChannelClosed],
                 outbox: asyncio.Queue[bytes | ChannelClosed]) -> None:
        self.path = path
        self._inbox = inbox
        self._outbox = outbox
        self._closed: ChannelClosed | None = None

    async def send(self, message: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        self._outbox.put_nowait(bytes(message))

    async def recv(self) -> bytes:
        if self._closed is not None:
            raise self._closed
        item = await self._inbox.get()
        if isinstance(item, ChannelClosed):
            self._closed = item
            raise item
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed is None:
            self._closed = ChannelClosed(code, reason)
            self._outbox.put_nowait(ChannelClosed(code, reason))
            self._inbox.put_nowait(ChannelClosed(code, reason))


def memory_channel_pair(path: str = "/memory") -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected ends: what one sends, the other receives."""
    a_to_b: asyncio.Queue[bytes | ChannelClosed] = asyncio.Queue()
    b_to_a: asyncio.Queue[bytes | ChannelClosed] = asyncio.Queue()
    return MemoryChannel(path, b_to_a, a_to_b), MemoryChannel(path, a_to_b, b_to_a)


class WebsocketClientChannel:
    """A `websockets` client connection as a Channel."""

    def __init__(self, websocket: Any, path: str) -> None:
        self._ws = websocket
        self.path = path

    async def send(self, message: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise _closed_from(exc) from exc

    async def recv(self) -> bytes:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosed as exc:
                raise _closed_from(exc) from exc
            if isinstance(message, bytes):
                return message
            # y-websocket only speaks binary; a text frame is noise, not a sync message.

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)


def _closed_from(exc: Any) -> ChannelClosed:
    received = getattr(exc, "rcvd", None)
    if received is not None:
        return ChannelClosed(received.code, received.reason)
    return ChannelClosed(1006, "connection lost")
