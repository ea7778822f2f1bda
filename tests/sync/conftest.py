"""Fixtures and helpers for the sync tests: real SpatiaLite stores, mirrors over them, and waits
on conditions (never sleeps) for the asynchronous parts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from storage import Store
from sync.channel import Channel
from sync.client import Connector, SyncClient, SyncState, SyncStatus
from sync.mirror import Mirror
from sync.services import LocalFleet
from sync.testing import MemoryHub

T = TypeVar("T")

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.01], [5.0, 52.0]]],
}
BOWTIE = {"type": "Polygon", "coordinates": [[[5.0, 52.0], [5.1, 52.1], [5.1, 52.0], [5.0, 52.1], [5.0, 52.0]]]}
LINE = {"type": "LineString", "coordinates": [[5.0, 52.0], [5.1, 52.1], [5.2, 52.1]]}


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one async test body on a fresh event loop, with an overall deadline."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, message: str = "") -> None:
    """Poll until predicate() is true; fail the test, naming what never happened, at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or predicate}")
        await asyncio.sleep(0.005)


class Replicas:
    """Stores and mirrors opened by a test, all closed at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stores: list[Store] = []

    def store(self, name: str) -> Store:
        store = Store(self.root / f"{name}.sqlite")
        self.stores.append(store)
        return store

    def mirror(self, name: str) -> Mirror:
        return Mirror.open(self.store(name))

    def reopen(self, mirror: Mirror) -> Mirror:
        """Close the mirror's store and open a fresh Mirror over the same file."""
        path = mirror.store.path
        mirror.store.close()
        store = Store(path)
        self.stores.append(store)
        return Mirror.open(store)

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    made = Replicas(tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def store(replicas: Replicas) -> Store:
    return replicas.store("fleet")


@pytest.fixture
def mirror(store: Store) -> Mirror:
    return Mirror.open(store)


class Peer:
    """A desktop replica: store, mirror, edit API and sync client, with the client running."""

    def __init__(self, mirror: Mirror, connect: Connector, **options: Any) -> None:
        self.mirror = mirror
        self.store = mirror.store
        self.fleet = LocalFleet(mirror)
        self.client = SyncClient(mirror, connect, **{"min_backoff": 0.01, "max_backoff": 0.05, **options})
        self.statuses: list[SyncStatus] = [self.client.status]
        self.client.on_status(self.statuses.append)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Peer:
        self.task = asyncio.create_task(self.client.run())
        return self

    async def stop(self) -> None:
        await self.client.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
            self.task = None

    async def synced(self, timeout: float = 10.0) -> SyncStatus:
        return await self.client.wait_for(lambda s: s.state == SyncState.SYNCED and s.pending == 0, timeout)

    def states(self) -> list[SyncState]:
        """The states it went through, repeats collapsed."""
        collapsed: list[SyncState] = []
        for status in self.statuses:
            if not collapsed or collapsed[-1] != status.state:
                collapsed.append(status.state)
        return collapsed


def hub_connector(hub: MemoryHub, room: str = "tenant", **options: Any) -> Connector:
    async def connect() -> Channel:
        return await hub.connect(room, **options)

    return connect
