"""Credentials take effect at once: open sockets are re-checked when an account or key changes.

A sync or live socket authenticates once, at the handshake. Without this module a revoked API
key, a disabled user, a demoted dispatcher or a reset password would keep a socket that was
opened earlier for as long as the client stays connected.

- The socket routes register every socket they accept with its credential (`SocketRegistry`).
- Whoever changes a credential (the admin pages) calls `credentials_changed()`, which publishes
  the event on the fan-out (`publish_revocation`), so every instance hears it (Redis between
  instances; in-process without REDIS_URL).
- Each instance re-resolves the credential of every matching socket it holds, exactly as a new
  handshake would: an error closes the socket with 4401/4403 and the reason; a still-valid
  credential with another role updates the socket (a demoted user's sync socket turns read-only).

An event is `{"user_id": …}`, `{"api_key_id": …}`, `{"tenant_id": …}` or `{"all": true}` (after
Redis was unreachable and events may have been missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import State

from server_stub.auth import AuthError, Principal, require_tenant, resolve_token

log = logging.getLogger(__name__)

Event = dict[str, Any]
# Close the socket with this code and reason.
Closer = Callable[[int, str], Awaitable[None]]
# The credential is still good but its principal changed (role, scopes): adapt the socket.
Changer = Callable[[Principal], Awaitable[None] | None]
RECENT_EVENTS = 256


@dataclass(eq=False)
class OpenSocket:
    """One accepted socket and the credential it was opened with."""

    kind: str  # "sync" or "live", for logs
    tenant_id: str
    principal: Principal
    token: str
    close: Closer
    changed: Changer | None = None
    closed: bool = False


def matches(event: Event, socket: OpenSocket) -> bool:
    if event.get("all"):
        return True
    principal = socket.principal
    return (
        (event.get("user_id") is not None and event.get("user_id") == principal.user_id)
        or (event.get("api_key_id") is not None and event.get("api_key_id") == principal.api_key_id)
        or (event.get("tenant_id") is not None and event.get("tenant_id") == socket.tenant_id)
    )


class SocketRegistry:
    """The sockets this instance holds, and their re-check when a credential changes."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._sockets: set[OpenSocket] = set()
        self.generation = 0  # events handled so far
        self._recent: deque[tuple[int, Event]] = deque(maxlen=RECENT_EVENTS)

    def __len__(self) -> int:
        return len(self._sockets)

    def register(self, socket: OpenSocket, since: int) -> Callable[[], None]:
        """Track a socket until the returned function is called.

        `since` is `generation` read before its credential was resolved: an event handled in
        between (the handshake raced an admin) re-checks it at once instead of being missed."""
        self._sockets.add(socket)
        forgotten = len(self._recent) == self._recent.maxlen and self._recent[0][0] > since + 1
        missed = since < self.generation and (
            forgotten or any(matches(event, socket) for number, event in self._recent if number > since)
        )
        if missed:
            task = asyncio.ensure_future(self._recheck(socket))
            task.add_done_callback(_log_failure)

        def unregister() -> None:
            self._sockets.discard(socket)

        return unregister

    async def handle(self, event: Event) -> None:
        """Re-check every socket the event names (all of them concurrently: the 1 s promise)."""
        self.generation += 1
        self._recent.append((self.generation, event))
        targets = [socket for socket in self._sockets if matches(event, socket)]
        if targets:
            await asyncio.gather(*(self._recheck(socket) for socket in targets))

    async def _recheck(self, socket: OpenSocket) -> None:
        if socket.closed:
            return
        state = self._state
        try:
            principal = await resolve_token(state.db, state.settings, socket.token, allow_expired=True)
            require_tenant(principal, socket.tenant_id)
            if not principal.can_read_fleet:
                raise AuthError(403, "this account cannot read fleet data")
        except AuthError as exc:
            socket.closed = True
            self._sockets.discard(socket)
            log.info("closing %s socket of tenant %s: %s", socket.kind, socket.tenant_id, exc.reason)
            with contextlib.suppress(Exception):
                await socket.close(4000 + exc.status, exc.reason)
            return
        except Exception:
            log.exception("re-checking a %s socket failed; it stays open", socket.kind)
            return
        if principal != socket.principal:
            socket.principal = principal
            if socket.changed is not None:
                result = socket.changed(principal)
                if inspect.isawaitable(result):
                    await result


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("re-checking a socket failed", exc_info=task.exception())


def registry(state: State) -> SocketRegistry:
    """The app's registry, created on first use and subscribed to the fan-out's revocations."""
    found: SocketRegistry | None = getattr(state, "socket_registry", None)
    if found is None:
        found = state.socket_registry = SocketRegistry(state)
        fanout = getattr(state, "fanout", None)
        if fanout is not None and hasattr(fanout, "subscribe_revocations"):
            fanout.subscribe_revocations(found.handle)
    return found


async def credentials_changed(state: State, **event: Any) -> None:
    """Tell every instance that a user, API key or tenant changed; matching sockets are re-checked.

    Call it after the change is committed. On this instance the re-check is done when it returns."""
    if not event:
        raise ValueError("name the user_id, api_key_id or tenant_id that changed")
    fanout = getattr(state, "fanout", None)
    if fanout is not None and hasattr(fanout, "publish_revocation"):
        registry(state)  # subscribed before publishing, so this instance hears its own event
        await fanout.publish_revocation(event)
    else:
        await registry(state).handle(event)
