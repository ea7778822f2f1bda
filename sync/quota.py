"""Per-tenant write quotas: token buckets that pace how fast one tenant's sockets are read.

A tenant over its quota is slowed, never refused: the room takes its next frame only when the
bucket allows, TCP then slows the sender, and nothing merged is ever dropped. One tenant's
flood therefore costs the shared server (commits, CPU, projection) at most its quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """`rate` tokens a second, up to `burst` saved up. Reservations may overdraw the bucket: the
    caller then waits the returned delay, so one large frame is paced instead of refused."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self._tokens = self.burst
        self._stamp = self.clock()

    def reserve(self, amount: float) -> float:
        """Take `amount` tokens now; the seconds to wait before the next reservation is fair."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@dataclass
class WriteQuota:
    """A tenant's sustained write rate, in updates and in bytes a second (bursts of a few seconds'
    worth pass unslowed, so an initial sync or a reconnect backlog is not held up)."""

    updates_per_second: float = 500.0
    bytes_per_second: float = 4 * 1024 * 1024
    burst_seconds: float = 4.0
    clock: Callable[[], float] = time.monotonic
    _updates: TokenBucket = field(init=False)
    _bytes: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self._updates = TokenBucket(self.updates_per_second, self.updates_per_second * self.burst_seconds,
                                    self.clock)
        self._bytes = TokenBucket(self.bytes_per_second, self.bytes_per_second * self.burst_seconds, self.clock)

    def reserve(self, size: int) -> float:
        """Account one write of `size` bytes; how long its sender should wait before the next."""
        return max(self._updates.reserve(1), self._bytes.reserve(size))
