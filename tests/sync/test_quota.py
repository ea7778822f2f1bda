"""Per-tenant write quotas (sync/quota.py): a tenant over its rate is slowed, never refused, and
another tenant's room does not notice."""

from __future__ import annotations

import time

import pytest

from sync.quota import TokenBucket, WriteQuota
from sync.room import MemoryPersistence, Room

from .conftest import run
from .test_room import join


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_lets_a_burst_through_then_paces_to_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.reserve(1) for _ in range(5)] == [0.0] * 5
    assert bucket.reserve(1) == pytest.approx(0.1)  # one token overdrawn at 10 a second
    assert bucket.reserve(1) == pytest.approx(0.2)
    clock.now += 0.2  # the sender waited as told
    assert bucket.reserve(1) == pytest.approx(0.1)
    clock.now += 10  # idle time refills only up to the burst
    assert [bucket.reserve(1) for _ in range(5)] == [0.0] * 5
    assert bucket.reserve(1) > 0


def test_a_large_write_is_paced_by_bytes_not_refused() -> None:
    clock = FakeClock()
    quota = WriteQuota(updates_per_second=1000, bytes_per_second=1000, burst_seconds=1, clock=clock)
    assert quota.reserve(500) == 0.0
    assert quota.reserve(2500) == pytest.approx(2.0)  # 2,000 bytes overdrawn at 1,000 a second


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (-1, 1)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=rate, burst=burst)


def test_a_flooding_tenant_is_paced_while_another_tenant_commits_at_once() -> None:
    async def body() -> tuple[float, float, int]:
        persistence = MemoryPersistence()
        quota = WriteQuota(updates_per_second=100, bytes_per_second=10_000_000, burst_seconds=0.1)
        async with Room("noisy", persistence, quota=quota) as noisy, Room("quiet", persistence) as quiet:
            flooder = await join(noisy)
            await flooder.handshake()
            started = time.monotonic()
            for i in range(60):  # 10 pass as a burst, the other 50 at 100 a second
                await flooder.write(f"flood-{i}", {"name": f"Flood {i}"})
            bystander = await join(quiet)
            await bystander.handshake()
            await bystander.write("quiet-1", {"name": "Quiet van"})
            quiet_began = time.monotonic()
            await bystander.until_acked(2)  # its handshake's step 2, then the write
            quiet_ack = time.monotonic() - quiet_began
            await flooder.until_acked(61)
            flood_time = time.monotonic() - started
            return flood_time, quiet_ack, len(persistence.rooms["noisy"])

    flood_time, quiet_ack, stored = run(body())
    assert stored == 60  # slowed, never dropped
    assert flood_time >= 0.45  # (60 - 10) / 100 a second
    assert quiet_ack < 0.2  # the other tenant never waited for the flood


def test_without_a_quota_nothing_is_paced() -> None:
    async def body() -> float:
        async with Room("free", MemoryPersistence()) as room:
            client = await join(room)
            await client.handshake()
            started = time.monotonic()
            for i in range(60):
                await client.write(f"v-{i}", {"name": f"V {i}"})
            await client.until_acked(61)
            return time.monotonic() - started

    assert run(body()) < 0.4
