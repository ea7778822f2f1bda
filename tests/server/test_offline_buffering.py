"""A field client that buffered 100,000 fixes offline uploads them to the real server while the
server is stopped and started ten times: the server ends with exactly those 100,000 rows, none
twice and none missing. The client is the real uploader on a real SpatiaLite outbox."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server_stub.db import Database
from server_stub.partitions import positions_relation, storage_mode
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from storage import Store
from storage.positions import Fix
from sync.client import StaticToken
from sync.uploader import PositionUploader

from .gps_support import BASE_LAT, BASE_LON, client, create_vehicle, with_db

FIXES = 100_000
RESTARTS = 10
DEVICE = "field-unit-7"


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


def buffered_fixes(vehicle_id: str, start: float) -> list[Fix]:
    """Hours of driving recorded offline: one fix a second, each at its own time."""
    return [Fix(DEVICE, start + i, BASE_LAT + (i % 3000) * 1e-5, BASE_LON + (i // 3000) * 1e-4, vehicle_id,
                speed_kph=30.0 + i % 20, course=float(i % 360), accuracy=5.0) for i in range(FIXES)]


@pytest.mark.slow
def test_100k_buffered_fixes_survive_ten_server_restarts_exactly_once(live: LiveServer, tmp_path: Path) -> None:
    tenant: Tenant = provision_tenant(live.settings)
    with client(live, tenant.tokens["admin"]) as http:
        vehicle_id = create_vehicle(http, "Van 7", DEVICE)
    start = float(int(time.time())) - FIXES - 60
    store = Store(tmp_path / "field.sqlite")
    try:
        assert store.positions.add_many(buffered_fixes(vehicle_id, start)) == FIXES
        assert store.positions.counts().pending == FIXES
        uploader = PositionUploader(store, live.url, StaticToken(tenant.tokens["field"]), batch_size=500,
                                    min_backoff=0.02, max_backoff=0.25, idle_interval=0.05, timeout=10.0,
                                    rng=random.Random(7))
        restarts_at = asyncio.run(upload_through_restarts(uploader, live))
        counts = store.positions.counts()
    finally:
        store.close()

    # Every restart happened while fixes were still waiting, so each one interrupted the upload.
    assert len(restarts_at) == RESTARTS and all(0 < uploaded < FIXES for uploaded in restarts_at)
    assert (counts.pending, counts.uploaded, counts.failed) == (0, FIXES, 0)

    async def server_rows(db: Database) -> Any:
        positions = positions_relation(await storage_mode(db))  # the tenant view on a hypertable
        async with db.transaction(customer_id=tenant.id) as tx:
            return await tx.fetchone(
                "SELECT count(*) AS n, count(DISTINCT fix_time) AS times, min(fix_time) AS first, "
                f"max(fix_time) AS last FROM {positions} "
                "WHERE customer_id = ? AND vehicle_id = ?", (tenant.id, vehicle_id))

    row = with_db(live, server_rows)
    rows, distinct_times, first, last = row["n"], row["times"], row["first"], row["last"]
    assert rows == FIXES  # nothing lost, nothing stored twice
    assert distinct_times == FIXES  # no duplicates
    assert as_seconds(last) - as_seconds(first) == FIXES - 1  # one a second from first to last: no gaps


def as_seconds(value: Any) -> float:
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


async def upload_through_restarts(uploader: PositionUploader, live: LiveServer) -> list[int]:
    """Run the uploader; every 8,000 uploaded fixes, stop and start the server (same port)."""
    restarts_at: list[int] = []
    task = asyncio.create_task(uploader.run())
    try:
        deadline = time.monotonic() + 600
        for restart in range(1, RESTARTS + 1):
            while uploader.counts().uploaded < restart * 8_000:
                assert not task.done(), "the uploader stopped"
                assert time.monotonic() < deadline, "upload stalled"
                await asyncio.sleep(0.02)
            restarts_at.append(uploader.counts().uploaded)
            await asyncio.to_thread(live.restart)
        while uploader.counts().pending:
            assert not task.done() and time.monotonic() < deadline, "upload did not finish"
            await asyncio.sleep(0.05)
    finally:
        await uploader.stop()
        await asyncio.wait_for(task, 30)
    return restarts_at
