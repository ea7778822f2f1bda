"""The sync client against the in-memory hub: its status, its durable pending count, what it does
when the server refuses its credentials, and how it backs off and reconnects."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from storage import Store
from sync.channel import Channel, memory_channel_pair
from sync.client import AuthRejected, StaticToken, SyncClient, SyncState
from sync.mirror import Mirror
from sync.testing import MemoryHub

from .conftest import Peer, Replicas, eventually, hub_connector, run


class RefreshableToken:
    """A token source whose refresh answers from a script, counting the calls."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.refreshes = 0

    async def access_token(self) -> str:
        return f"token-{self.refreshes}"

    async def refresh(self) -> bool:
        self.refreshes += 1
        return self.answers.pop(0) if self.answers else False


class RecordingRandom(random.Random):
    """The client's jitter source, keeping every draw."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.draws.append(value)
        return value


def test_status_goes_offline_connecting_syncing_synced(replicas: Replicas) -> None:
    async def body() -> None:
        hub = MemoryHub()
        peer = Peer(replicas.mirror("a"), hub_connector(hub))
        assert peer.client.status.state == SyncState.OFFLINE
        assert peer.client.status.last_synced_at is None
        peer.start()
        try:
            status = await peer.synced()
            assert peer.states() == [SyncState.OFFLINE, SyncState.CONNECTING, SyncState.SYNCING, SyncState.SYNCED]
            assert status.pending == 0 and status.last_synced_at is not None and not status.read_only

            await hub.drop_all()
            await eventually(lambda: peer.states()[-1] == SyncState.SYNCED and len(peer.states()) > 4,
                             message="back in sync after the drop")
            assert peer.states()[4:] == [SyncState.OFFLINE, SyncState.CONNECTING, SyncState.SYNCING,
                                         SyncState.SYNCED]
        finally:
            await peer.stop()
            await hub.close()
        assert peer.client.status.state == SyncState.OFFLINE and peer.client.status.detail == "stopped"

        # The last sync time survives a restart of the app.
        reopened = replicas.reopen(peer.mirror)
        assert SyncClient(reopened, hub_connector(hub)).status.last_synced_at == pytest.approx(
            status.last_synced_at, abs=60)

    run(body())


def test_pending_count_is_durable_and_falls_to_zero_only_after_the_server_commits(replicas: Replicas) -> None:
    async def body() -> None:
        hub = MemoryHub()
        hub.online = False
        peer = Peer(replicas.mirror("a"), hub_connector(hub)).start()
        try:
            await peer.client.wait_for(lambda s: s.state == SyncState.OFFLINE and "cannot connect" in s.detail)
            ids = [peer.fleet.create("vehicles", {"name": f"Van {i}"}) for i in range(3)]
            status = await peer.client.wait_for(lambda s: s.pending == 3)
            assert status.state == SyncState.OFFLINE
        finally:
            await peer.stop()

        # Durable: the count is in the store, not in memory.
        mirror = replicas.reopen(peer.mirror)
        assert mirror.store.sync_log.pending_count() == 3
        peer = Peer(mirror, hub_connector(hub))
        assert peer.client.status.pending == 3

        # The first commit fails: no ack, the room closes the socket, the client comes back.
        hub.persistence.fail_next = 1
        hub.online = True
        peer.start()
        try:
            await peer.synced()
        finally:
            await peer.stop()
            await hub.close()

        assert hub.persistence.fail_next == 0, "the simulated outage never happened"
        failed = [i for i, s in enumerate(peer.statuses)
                  if s.state == SyncState.OFFLINE and "1011" in s.detail]
        assert failed, f"no connection was closed after the failed commit: {peer.statuses}"
        first_zero = next(i for i, s in enumerate(peer.statuses) if s.pending == 0)
        assert first_zero > failed[0]
        assert all(s.pending == 3 for s in peer.statuses[:first_zero])
        assert peer.statuses[first_zero].state == SyncState.SYNCED
        assert mirror.store.sync_log.pending_count() == 0
        assert all(e.acked for e in mirror.store.sync_log.entries())
        stored = Mirror(Store(replicas.root / "check.sqlite"))
        replicas.stores.append(stored.store)
        for update in await hub.persistence.load("tenant"):
            stored.apply_remote(update)
        assert stored.document.ids("vehicles") == set(ids)

    run(body())


def test_against_a_server_without_acks_the_pending_count_is_unknown(replicas: Replicas) -> None:
    async def body() -> None:
        hub = MemoryHub()
        peer = Peer(replicas.mirror("a"), hub_connector(hub, acks=False)).start()
        try:
            status = await peer.client.wait_for(lambda s: s.state == SyncState.UNKNOWN)
            assert status.pending is None
            van = peer.fleet.create("vehicles", {"name": "Van"})
            await eventually(lambda: van in hub.rooms["tenant"].document.ids("vehicles"), message="edit arrives")
            assert peer.client.status.state == SyncState.UNKNOWN and peer.client.status.pending is None
            assert SyncState.SYNCED not in peer.states()
            # The store still knows the edit was never confirmed.
            assert peer.store.sync_log.pending_count() == 1
        finally:
            await peer.stop()
            await hub.close()

    run(body())


def test_a_rejected_token_that_cannot_be_refreshed_stops_the_client(replicas: Replicas) -> None:
    async def body() -> None:
        calls = 0

        async def connect() -> Channel:
            nonlocal calls
            calls += 1
            raise AuthRejected(4401, "token expired")

        for tokens in (None, StaticToken("old")):
            calls = 0
            client = SyncClient(replicas.mirror(f"a{id(tokens)}"), connect, tokens=tokens, min_backoff=0.01)
            await asyncio.wait_for(client.run(), 5)  # returns by itself: no retry loop
            assert calls == 1
            assert client.status.state == SyncState.SIGN_IN_REQUIRED
            assert "token expired" in client.status.detail

    run(body())


def test_a_forbidden_tenant_is_final_even_with_a_refreshable_token(replicas: Replicas) -> None:
    async def body() -> None:
        calls = 0

        async def connect() -> Channel:
            nonlocal calls
            calls += 1
            raise AuthRejected(4403, "wrong tenant")

        tokens = RefreshableToken(True)
        client = SyncClient(replicas.mirror("a"), connect, tokens=tokens, min_backoff=0.01)
        await asyncio.wait_for(client.run(), 5)
        assert (calls, tokens.refreshes) == (1, 0)
        assert client.status.state == SyncState.SIGN_IN_REQUIRED

    run(body())


def test_a_rejected_token_is_refreshed_once_and_retried(replicas: Replicas) -> None:
    async def body() -> None:
        hub = MemoryHub()
        calls = 0

        async def connect() -> Channel:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise AuthRejected(4401, "token expired")
            return await hub.connect("tenant")

        tokens = RefreshableToken(True)
        peer = Peer(replicas.mirror("a"), connect, tokens=tokens).start()
        try:
            await peer.synced()
            assert (calls, tokens.refreshes) == (2, 1)
            assert SyncState.SIGN_IN_REQUIRED not in peer.states()
        finally:
            await peer.stop()
            await hub.close()

    run(body())


def test_a_server_that_rejects_the_refreshed_token_too_is_not_hammered(replicas: Replicas) -> None:
    async def body() -> None:
        calls = 0

        async def connect() -> Channel:
            nonlocal calls
            calls += 1
            raise AuthRejected(4401, "account disabled")

        tokens = RefreshableToken(True, True, True, True)
        client = SyncClient(replicas.mirror("a"), connect, tokens=tokens, min_backoff=0.01)
        await asyncio.wait_for(client.run(), 5)
        assert (calls, tokens.refreshes) == (2, 1)
        assert client.status.state == SyncState.SIGN_IN_REQUIRED

    run(body())


def test_a_socket_closed_with_an_auth_code_after_accept_asks_for_sign_in(replicas: Replicas) -> None:
    async def body() -> None:
        for code in (4401, 4403):
            calls = 0

            async def connect(code: int = code) -> Channel:
                nonlocal calls
                calls += 1
                client_end, server_end = memory_channel_pair("/sync/tenant")
                await server_end.close(code, "token expired")
                return client_end

            client = SyncClient(replicas.mirror(f"a{code}"), connect, min_backoff=0.01)
            await asyncio.wait_for(client.run(), 5)
            assert calls == 1
            assert client.status.state == SyncState.SIGN_IN_REQUIRED

    run(body())


def test_backoff_grows_exponentially_with_jitter_is_capped_and_resets_after_success(replicas: Replicas) -> None:
    async def body() -> None:
        hub = MemoryHub()
        failures = 6
        seen_attempts: list[int] = []
        call_times: list[float] = []

        async def connect() -> Channel:
            seen_attempts.append(peer.client.attempts)
            call_times.append(time.monotonic())
            if len(call_times) <= failures:
                raise OSError("network unreachable")
            return await hub.connect("tenant")

        rng = RecordingRandom(7)
        peer = Peer(replicas.mirror("a"), connect, rng=rng)
        delays: list[float] = []
        real_sleep = peer.client._sleep

        async def recording_sleep(seconds: float) -> None:
            delays.append(seconds)
            await real_sleep(seconds)

        peer.client._sleep = recording_sleep  # type: ignore[method-assign]
        peer.start()
        try:
            await peer.synced()
            assert seen_attempts == list(range(failures + 1))
            assert peer.client.attempts == 0  # reset by the successful sync

            bases = [0.01, 0.02, 0.04, 0.05, 0.05, 0.05]  # doubling from min_backoff, capped at max_backoff
            assert len(delays) == failures
            for delay, base, draw in zip(delays, bases, rng.draws, strict=True):
                assert 0.5 <= draw <= 1.0
                assert delay == pytest.approx(base * draw)
            assert len(set(rng.draws)) == failures  # jittered, not a fixed schedule
            assert max(delays) <= 0.05
            # It really waited: each retry came at least the jittered delay after the failure.
            for before, after, delay in zip(call_times, call_times[1:], delays, strict=False):
                assert after - before >= delay - 0.002

            await hub.drop_all()
            await eventually(lambda: len(delays) == failures + 1, message="a retry after the drop")
            assert delays[-1] == pytest.approx(0.01 * rng.draws[-1])  # back to the shortest delay
            await peer.synced()
        finally:
            await peer.stop()
            await hub.close()

    run(body())


def test_a_read_only_connection_is_reported_and_its_writes_never_reach_the_room(replicas: Replicas) -> None:
    async def body() -> None:
        hub = MemoryHub()
        field = Peer(replicas.mirror("field"), hub_connector(hub, can_write=False, user_id="field")).start()
        dispatcher = Peer(replicas.mirror("dispatch"), hub_connector(hub, user_id="dispatcher")).start()
        try:
            await dispatcher.synced()
            status = await field.client.wait_for(lambda s: s.read_only)
            assert "read-only" in status.detail

            attempt = field.fleet.create("vehicles", {"name": "From the field"})
            await field.client.wait_for(lambda s: s.pending == 1)  # sent, never confirmed
            allowed = dispatcher.fleet.create("vehicles", {"name": "From dispatch"})
            await dispatcher.synced()
            await eventually(lambda: field.mirror.document.record("vehicles", allowed) is not None,
                             message="the field client still receives")

            room = hub.rooms["tenant"]
            assert room.document.ids("vehicles") == {allowed}
            assert dispatcher.mirror.document.ids("vehicles") == {allowed}
            assert field.client.status.read_only and field.client.status.pending == 1
            assert field.client.status.state == SyncState.SYNCING
            assert {u.user_id for u in hub.persistence.rooms["tenant"]} == {"dispatcher"}

            # A reconnect sends the whole difference again as its step 2; the room refuses that
            # write too, and its refusal is what marks the new session read-only.
            before = len(field.statuses)
            await hub.drop_all()
            await eventually(lambda: any(s.state == SyncState.OFFLINE for s in field.statuses[before:])
                             and field.client.status.read_only, message="reconnected and refused again")
            assert attempt not in hub.rooms["tenant"].document.ids("vehicles")
            assert field.store.sync_log.pending_count() == 1
        finally:
            await field.stop()
            await dispatcher.stop()
            await hub.close()

    run(body())
