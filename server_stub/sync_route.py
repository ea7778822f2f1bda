"""`WS /sync/{tenant_id}?token=…`: authenticate before accepting, then serve the tenant's room.

pycrdt-websocket's ASGIServer answers a rejection with HTTP 500, so authentication lives here
in a Starlette route: a bad or expired token gets 401, another tenant's token 403, never a 500.
An accepted socket is registered with its credential (server_stub/revocation.py): when that
credential is revoked, disabled or reset the socket is closed with 4401/4403 and the reason;
when the user is demoted it turns read-only.
"""

from __future__ import annotations

import contextlib
import logging

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from server_stub.auth import AuthError, Principal, require_tenant, resolve_token
from server_stub.revocation import OpenSocket, registry
from server_stub.rooms import RoomUnavailable
from sync.channel import ChannelClosed

log = logging.getLogger(__name__)


class StarletteChannel:
    """A Starlette WebSocket as a sync Channel."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self.path = websocket.url.path

    async def send(self, message: bytes) -> None:
        try:
            await self._ws.send_bytes(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise ChannelClosed(1006, "client went away") from exc

    async def recv(self) -> bytes:
        while True:
            try:
                event = await self._ws.receive()
            except (RuntimeError, OSError) as exc:
                raise ChannelClosed(1006, "client went away") from exc
            if event["type"] == "websocket.disconnect":
                raise ChannelClosed(int(event.get("code", 1000)), str(event.get("reason") or ""))
            data = event.get("bytes")
            if data is not None:
                return bytes(data)
            # Text frames are not part of the y-websocket protocol; ignore them.

    async def close(self, code: int = 1000, reason: str = "") -> None:
        with contextlib.suppress(RuntimeError, OSError):  # already closed
            await self._ws.close(code, reason)


async def deny(websocket: WebSocket, status: int, reason: str) -> None:
    """Refuse the handshake with an HTTP status when the server supports it, else a close code."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse({"errors": [{"status": str(status), "title": reason}]}, status_code=status)
        )
    else:
        await websocket.close(code=4000 + status, reason=reason)


async def sync_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state
    tenant_id = websocket.path_params["tenant_id"]
    token = websocket.query_params.get("token") or _bearer(websocket)
    sockets = registry(state)
    since = sockets.generation  # before resolving: a revocation from here on is not missed
    try:
        if not token:
            raise AuthError(401, "token required")
        principal = await resolve_token(state.db, state.settings, token)
        require_tenant(principal, tenant_id)
        if not principal.can_read_fleet:  # e.g. an API key scoped to position uploads only
            raise AuthError(403, "this account cannot read fleet data")
    except AuthError as exc:
        await deny(websocket, exc.status, exc.reason)
        return
    await websocket.accept()
    try:
        room = await state.rooms.get(tenant_id)
    except RoomUnavailable:  # this tenant's log cannot load (see /admin/sync); the client retries
        await websocket.close(code=1011, reason="tenant data unavailable, retrying")
        return
    channel = StarletteChannel(websocket)

    def role_changed(now: Principal) -> None:
        # Still signed in, with another role: a demoted writer's updates are ignored from now on
        # (the room answers the next one with its read-only notice), a promoted one may write.
        for connection in room.connections:
            if connection.channel is channel:
                connection.can_write = now.can_write_fleet
                connection.denied_notice_sent = False

    unregister = sockets.register(OpenSocket("sync", tenant_id, principal, token, channel.close, role_changed), since)
    try:
        # No await between register() and serve() creating the room connection: a role change
        # handled meanwhile could not find it.
        await room.serve(
            channel,
            user_id=principal.user_id or principal.api_key_id,
            can_write=principal.can_write_fleet,
            acks=websocket.query_params.get("acks") == "1",
        )
    finally:
        unregister()


def _bearer(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None
