"""`WS /api/v1/live?token=…`: new positions and events of the token's tenant, pushed as JSON text frames.

Messages go through `app.state.fanout` (`publish_live`/`subscribe_live`; Redis between instances)
when the app has one, else through the in-process `LiveHub` below. The first frame is
`{"type": "ready"}` once the socket is subscribed; then `{"type": "position", …}` (a vehicle's
newest fix of each ingested batch) and `{"type": "event", …}` (geofence enter/exit, overspeed).
A client that falls `QUEUE_LIMIT` messages behind is closed with 1013 and should reconnect.
A socket whose credential is revoked, disabled or reset is closed with 4401/4403 and the reason
(server_stub/revocation.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import State
from starlette.websockets import WebSocket, WebSocketDisconnect

from server_stub.auth import AuthError, require_tenant, resolve_token
from server_stub.revocation import OpenSocket, registry
from server_stub.sync_route import deny

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
LiveCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class LiveHub:
    """In-process fan-out with the same two calls as the Redis fan-out (one server instance)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[LiveCallback]] = {}

    def subscribe_live(self, tenant_id: str, callback: LiveCallback) -> Callable[[], None]:
        self._subscribers.setdefault(tenant_id, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(tenant_id, [])
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)
            if not callbacks:
                self._subscribers.pop(tenant_id, None)

        return unsubscribe

    async def publish_live(self, tenant_id: str, event: dict[str, Any]) -> None:
        for callback in list(self._subscribers.get(tenant_id, ())):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("live subscriber of %s failed", tenant_id)


def bus(state: State) -> Any:
    """The app's fan-out when it has one, else this process's hub."""
    fanout = getattr(state, "fanout", None)
    if fanout is not None and hasattr(fanout, "publish_live") and hasattr(fanout, "subscribe_live"):
        return fanout
    hub = getattr(state, "live_hub", None)
    if hub is None:
        hub = state.live_hub = LiveHub()
    return hub


def publisher(state: State) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """What ingest calls after each commit (resolves the bus per call: the fan-out may start later)."""

    async def publish(tenant_id: str, event: dict[str, Any]) -> None:
        result = bus(state).publish_live(tenant_id, event)
        if inspect.isawaitable(result):
            await result

    return publish


async def live_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state
    token = websocket.query_params.get("token") or _bearer(websocket)
    sockets = registry(state)
    since = sockets.generation  # before resolving: a revocation from here on is not missed
    try:
        if not token:
            raise AuthError(401, "token required")
        who = await resolve_token(state.db, state.settings, token)
        if not who.can_read_fleet:
            raise AuthError(403, "this account cannot read fleet data")
        tenant_id = who.customer_id or websocket.query_params.get("tenant")
        if not tenant_id:
            raise AuthError(403, "platform admins name the tenant with ?tenant=")
        require_tenant(who, tenant_id)
    except AuthError as exc:
        await deny(websocket, exc.status, exc.reason)
        return
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=QUEUE_LIMIT)
    overflowed = False

    def deliver(event: dict[str, Any]) -> None:
        nonlocal overflowed
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            if not overflowed:
                overflowed = True
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)  # tell the sender to close the socket

    async def close(code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code, reason)

    unsubscribe = bus(state).subscribe_live(tenant_id, deliver)
    unregister = sockets.register(OpenSocket("live", tenant_id, who, token, close), since)
    try:
        await websocket.accept()
        await websocket.send_text('{"type":"ready"}')
        sender = asyncio.create_task(_send(websocket, queue))
        receiver = asyncio.create_task(_drain(websocket))
        _, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        unregister()
        result = unsubscribe()
        if inspect.isawaitable(result):
            await result


async def _send(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    while True:
        event = await queue.get()
        if event is None:
            with contextlib.suppress(RuntimeError, OSError):
                await websocket.close(1013, "too slow: reconnect and reload")
            return
        await websocket.send_text(orjson.dumps(event).decode())


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def _bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None
