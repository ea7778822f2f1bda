"""Fan-out between server instances that share one database: CRDT updates, live events, revocations.

Every instance keeps its own in-memory room per tenant. When one instance commits an update,
the others that have the tenant's room loaded must apply it too, or their sockets would never
see it. With `REDIS_URL` set, `RedisFanout` carries the committed update bytes over Redis
pub/sub; without it, `LocalFanout` has the same interface and nothing to tell anyone, so a
single instance behaves exactly the same either way.

Channels are `{prefix}:sync:{tenant}` (binary: sender instance id, a newline, the update),
`{prefix}:live:{tenant}` (JSON: `{"from": instance id, "event": {...}}`) and `{prefix}:revoke`
(JSON like live: a credential changed, so every instance re-checks the sockets it holds for it;
see server_stub/revocation.py). One pattern subscription per kind covers every tenant on one
pub/sub connection. An instance ignores its
own messages; updates it applies from another instance never reach its `on_committed` hook
(see sync/room.py), so nothing is ever published twice or bounced back.

Redis is an accelerator, never a dependency of sync: while it is down an instance logs, keeps
serving its own sockets, queues what it has to publish (bounded), and reconnects with backoff.
Every (re)subscription ends with a resync of the loaded rooms from the database, which holds
every committed update, so whatever was missed while disconnected is caught up. An empty sync
payload is that resync request, sent when an instance had to drop queued updates. Revocations
missed meanwhile are caught up the same way: every (re)subscription tells the local revocation
subscribers `{"all": true}`, and they re-check every open socket against the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Literal, Protocol

import redis.asyncio as aioredis
from pycrdt import merge_updates
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

LiveEvent = dict[str, Any]
# A live subscriber: called with each event; may return an awaitable. Keep it quick (queue the
# event for your socket): remote events are delivered one after another from one reader.
LiveCallback = Callable[[LiveEvent], Awaitable[None] | None]
Unsubscribe = Callable[[], None]

OK: Final = "ok"
UNREACHABLE: Final = "unreachable"
NOT_CONFIGURED: Final = "not configured"
RedisStatus = Literal["ok", "unreachable", "not configured"]


class RemoteUpdates(Protocol):
    """Where updates committed by other instances go (the RoomManager)."""

    async def apply_remote(self, tenant_id: str, update: bytes) -> None:
        """Apply to the tenant's room if this instance has it loaded; ignore it otherwise."""
        ...

    async def resync(self, tenant_id: str | None = None) -> None:
        """Bring loaded rooms (one, or all for None) up to date from the database."""
        ...


class Fanout(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def attach(self, sink: RemoteUpdates) -> None:
        """Hand remote CRDT updates for this instance's rooms to `sink`."""
        ...

    async def publish_update(self, tenant_id: str, update: bytes) -> None:
        """Tell the other instances about an update this instance has committed."""
        ...

    async def publish_live(self, tenant_id: str, event: LiveEvent) -> None:
        """Deliver a JSON event to every live subscriber of the tenant, on every instance (this one too)."""
        ...

    def subscribe_live(self, tenant_id: str, callback: LiveCallback) -> Unsubscribe: ...

    async def publish_revocation(self, event: LiveEvent) -> None:
        """Tell every instance (this one too) that a credential changed."""
        ...

    def subscribe_revocations(self, callback: LiveCallback) -> Unsubscribe: ...

    def redis_client(self) -> aioredis.Redis | None:
        """The Redis connection while it is up (for state shared by instances), else None."""
        ...

    async def health(self) -> RedisStatus: ...


def _redacted(url: str) -> str:
    return re.sub(r"://[^@/]*@", "://***@", url)


def _json_copy(event: LiveEvent) -> LiveEvent:
    """The event as any subscriber receives it: through JSON, whether or not Redis carries it."""
    if not isinstance(event, dict):
        raise TypeError("a live event must be a JSON object (dict)")
    copy: LiveEvent = json.loads(json.dumps(event))
    return copy


class _LiveSubscribers:
    def __init__(self) -> None:
        self._by_tenant: dict[str, list[LiveCallback]] = {}

    def add(self, tenant_id: str, callback: LiveCallback) -> Unsubscribe:
        callbacks = self._by_tenant.setdefault(tenant_id, [])
        callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)
            if not callbacks and self._by_tenant.get(tenant_id) is callbacks:
                del self._by_tenant[tenant_id]

        return unsubscribe

    def has(self, tenant_id: str) -> bool:
        return bool(self._by_tenant.get(tenant_id))

    async def deliver(self, tenant_id: str, event: LiveEvent) -> None:
        for callback in list(self._by_tenant.get(tenant_id, ())):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # one broken subscriber must not starve the others
                log.exception("live subscriber of %s failed", tenant_id)


REVOCATIONS = ""  # the _LiveSubscribers key of revocation subscribers (no tenant)


class LocalFanout:
    """One instance only: nothing to publish updates to; live events go to local subscribers."""

    def __init__(self) -> None:
        self._live = _LiveSubscribers()
        self._revocations = _LiveSubscribers()
        self.sink: RemoteUpdates | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def attach(self, sink: RemoteUpdates) -> None:
        self.sink = sink

    async def publish_update(self, tenant_id: str, update: bytes) -> None:
        return None  # no other instance exists

    async def publish_live(self, tenant_id: str, event: LiveEvent) -> None:
        await self._live.deliver(tenant_id, _json_copy(event))

    def subscribe_live(self, tenant_id: str, callback: LiveCallback) -> Unsubscribe:
        return self._live.add(tenant_id, callback)

    async def publish_revocation(self, event: LiveEvent) -> None:
        await self._revocations.deliver(REVOCATIONS, _json_copy(event))

    def subscribe_revocations(self, callback: LiveCallback) -> Unsubscribe:
        return self._revocations.add(REVOCATIONS, callback)

    def redis_client(self) -> aioredis.Redis | None:
        return None

    async def health(self) -> RedisStatus:
        return NOT_CONFIGURED


class RedisFanout:
    """Fan-out over Redis pub/sub: one subscriber connection, publishes from a small pool."""

    def __init__(self, url: str, instance_id: str | None = None, *, prefix: str = "webhost",
                 outbox_limit: int = 10_000, connect_timeout: float = 2.0,
                 min_backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        self.url = url
        self.instance_id = instance_id or secrets.token_hex(8)
        if "\n" in self.instance_id or not self.instance_id:
            raise ValueError("instance_id must be a non-empty single line")
        self.prefix = prefix
        self.outbox_limit = outbox_limit
        self.connect_timeout = connect_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.sink: RemoteUpdates | None = None
        self.published = 0  # messages sent to Redis
        self.received = 0  # messages from other instances
        self.dropped = 0  # queued messages dropped because the outbox was full
        self._me = self.instance_id.encode()
        self._sync_prefix = f"{prefix}:sync:"
        self._live_prefix = f"{prefix}:live:"
        self._revoke_channel = f"{prefix}:revoke"
        self._live = _LiveSubscribers()
        self._revocations = _LiveSubscribers()
        self._client: aioredis.Redis | None = None
        # ("sync" | "live" | "revoke", tenant, payload); updates merged per tenant when sent.
        self._outbox: deque[tuple[str, str, bytes]] = deque()
        self._dropped_tenants: set[str] = set()
        self._wake = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._down_since: float | None = None
        self._down_logged_at = 0.0

    def channel(self, kind: Literal["sync", "live"], tenant_id: str) -> str:
        return f"{self.prefix}:{kind}:{tenant_id}"

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin connecting; never raises for an unreachable Redis (sync works without it)."""
        self._client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=self.connect_timeout, socket_timeout=self.connect_timeout * 2,
            retry=Retry(NoBackoff(), 0),  # reconnecting (and resyncing after it) is ours to do
        )
        self._tasks = [asyncio.create_task(self._listen_forever()), asyncio.create_task(self._publish_forever())]
        # Wait for the first attempt (bounded), so a healthy instance starts already subscribed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), self.connect_timeout + 1)

    async def close(self) -> None:
        if self._outbox and self._subscribed.is_set():  # best effort: send what is still queued
            deadline = time.monotonic() + 1.0
            while self._outbox and time.monotonic() < deadline:
                self._wake.set()
                await asyncio.sleep(0.01)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._subscribed.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    def attach(self, sink: RemoteUpdates) -> None:
        self.sink = sink

    def redis_client(self) -> aioredis.Redis | None:
        return self._client if self._subscribed.is_set() else None

    async def health(self) -> RedisStatus:
        if self._client is None or not self._subscribed.is_set():
            return UNREACHABLE
        try:
            await asyncio.wait_for(self._client.ping(), 1.0)
        except Exception:
            return UNREACHABLE
        return OK

    # -- publishing ----------------------------------------------------------------------------

    async def publish_update(self, tenant_id: str, update: bytes) -> None:
        """Queue the update; never waits for Redis (the commit path calls this)."""
        if update:
            self._enqueue(("sync", tenant_id, update))

    async def publish_live(self, tenant_id: str, event: LiveEvent) -> None:
        event = _json_copy(event)
        payload = json.dumps({"from": self.instance_id, "event": event}, separators=(",", ":")).encode()
        self._enqueue(("live", tenant_id, payload))
        await self._live.deliver(tenant_id, event)  # this instance's subscribers: no round trip

    def subscribe_live(self, tenant_id: str, callback: LiveCallback) -> Unsubscribe:
        return self._live.add(tenant_id, callback)

    async def publish_revocation(self, event: LiveEvent) -> None:
        event = _json_copy(event)
        payload = json.dumps({"from": self.instance_id, "event": event}, separators=(",", ":")).encode()
        self._enqueue(("revoke", "", payload))
        await self._revocations.deliver(REVOCATIONS, event)  # this instance's sockets: no round trip

    def subscribe_revocations(self, callback: LiveCallback) -> Unsubscribe:
        return self._revocations.add(REVOCATIONS, callback)

    def _enqueue(self, item: tuple[str, str, bytes]) -> None:
        self._outbox.append(item)
        while len(self._outbox) > self.outbox_limit:
            kind, tenant, _ = self._outbox.popleft()
            self.dropped += 1
            if kind == "sync":
                self._dropped_tenants.add(tenant)  # the others must reload that tenant from the DB
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("redis fan-out outbox full: %d message(s) dropped so far", self.dropped)
        self._wake.set()

    def _take_batch(self) -> list[tuple[str, bytes]]:
        """Everything queued, as (channel, payload); a tenant's updates merged into one message."""
        updates: dict[str, list[bytes]] = {}
        live: list[tuple[str, bytes]] = []
        while self._outbox:
            kind, tenant, payload = self._outbox.popleft()
            if kind == "sync":
                updates.setdefault(tenant, []).append(payload)
            elif kind == "revoke":
                live.append((self._revoke_channel, payload))
            else:
                live.append((self.channel("live", tenant), payload))
        header = self._me + b"\n"
        messages: list[tuple[str, bytes]] = []
        for tenant, parts in updates.items():
            try:
                merged = [merge_updates(*parts)] if len(parts) > 1 else parts
            except Exception:  # committed bytes merge; if not, send them as they came
                merged = parts
            messages.extend((self.channel("sync", tenant), header + update) for update in merged)
        for tenant in sorted(self._dropped_tenants):
            messages.append((self.channel("sync", tenant), header))  # empty update: "resync from the DB"
        self._dropped_tenants.clear()
        return messages + live

    async def _publish_forever(self) -> None:
        backoff = self.min_backoff
        in_flight: list[tuple[str, bytes]] = []
        while True:
            if not in_flight:
                await self._wake.wait()
                self._wake.clear()
                in_flight = self._take_batch()
                if not in_flight:
                    continue
            assert self._client is not None
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for channel, payload in in_flight:
                        pipe.publish(channel, payload)
                    await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the batch and retry it (at least once: a CRDT update applied twice is harmless).
                self._note_down(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.published += len(in_flight)
            in_flight = []
            backoff = self.min_backoff

    # -- receiving -----------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        assert self._client is not None
        backoff = self.min_backoff
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(self._sync_prefix + "*", self._live_prefix + "*", self._revoke_channel)
                confirmed = 0
                while confirmed < 3:  # the subscription is live once Redis confirms every pattern
                    message = await pubsub.get_message(timeout=self.connect_timeout)
                    if message is None:
                        raise ConnectionError("redis did not confirm the subscription")
                    if message["type"] == "psubscribe":
                        confirmed += 1
                self._subscribed.set()
                self._first_attempt.set()
                backoff = self.min_backoff
                if self._down_since is not None:
                    log.warning("redis fan-out reconnected after %.1f s", time.monotonic() - self._down_since)
                    self._down_since = None
                self._wake.set()  # send whatever queued up meanwhile
                # Anything published while this instance was not subscribed is in the database.
                self._spawn(self._resync(None))
                self._spawn(self._revocations.deliver(REVOCATIONS, {"all": True}))
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] == "pmessage":
                        await self._dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._subscribed.clear()
                self._first_attempt.set()
                self._note_down(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _dispatch(self, raw_channel: bytes | str, data: bytes | str) -> None:
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else raw_channel
        payload = data.encode() if isinstance(data, str) else data
        try:
            if channel.startswith(self._sync_prefix):
                tenant_id = channel[len(self._sync_prefix):]
                sender, _, update = payload.partition(b"\n")
                if sender == self._me:
                    return
                self.received += 1
                if self.sink is None:
                    return
                if update:
                    await self.sink.apply_remote(tenant_id, update)
                else:
                    self._spawn(self._resync(tenant_id))
            elif channel == self._revoke_channel:
                message = json.loads(payload)
                if message.get("from") == self.instance_id:
                    return
                self.received += 1
                event = message.get("event")
                if isinstance(event, dict):
                    await self._revocations.deliver(REVOCATIONS, event)
            elif channel.startswith(self._live_prefix):
                tenant_id = channel[len(self._live_prefix):]
                if not self._live.has(tenant_id):
                    return
                message = json.loads(payload)
                if message.get("from") == self.instance_id:
                    return
                self.received += 1
                event = message.get("event")
                if isinstance(event, dict):
                    await self._live.deliver(tenant_id, event)
        except Exception:  # one bad message must not cost the subscription
            log.exception("redis fan-out: could not handle a message on %s", channel)

    async def _resync(self, tenant_id: str | None) -> None:
        if self.sink is not None:
            await self.sink.resync(tenant_id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("redis fan-out: resync failed", exc_info=task.exception())

    def _note_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._down_logged_at = now
            log.warning("redis fan-out unreachable at %s (%s); serving locally and retrying",
                        _redacted(self.url), exc)
        elif now - self._down_logged_at >= 60:
            self._down_logged_at = now
            log.warning("redis fan-out still unreachable after %.0f s (%s)", now - self._down_since, exc)


def create_fanout(redis_url: str | None) -> Fanout:
    """RedisFanout when REDIS_URL is set, else the in-process LocalFanout."""
    return RedisFanout(redis_url) if redis_url else LocalFanout()
