"""The dispatcher's live feed: `WS /api/v1/live` positions and events, written to the local store in
batches (latest fix per vehicle, events) so the map and the events list refresh from the store.

Asyncio only, no Qt; the sync thread runs it beside the SyncClient and reports what each batch
touched through `on_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from storage import Store
from storage.events import EVENT_KINDS, Event
from storage.vehicles import LatestFix, VehicleId
from sync.client import TokenSource

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.25
CATCH_UP_SECONDS = 300.0  # on (re)connect, fixes from this far back fill in what the feed missed
CATCH_UP_LIMIT = 20_000


def live_url(server_url: str, token: str) -> str:
    parts = urlsplit(server_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path + "/api/v1/live", f"token={quote(token, safe='')}", ""))


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def apply_messages(store: Store, messages: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Write one batch of live messages; returns what it touched ({"latest_fixes": ids, "events": …})."""
    fixes: dict[str, LatestFix] = {}
    events: list[Event] = []
    for message in messages:
        kind = message.get("type")
        vehicle_id = message.get("vehicle_id")
        if not isinstance(vehicle_id, str):
            continue
        if kind == "position":
            t = _epoch(message.get("fix_time"))
            lon, lat = message.get("lon"), message.get("lat")
            if t is None or not isinstance(lon, int | float) or not isinstance(lat, int | float):
                continue
            current = fixes.get(vehicle_id)
            if current is None or t > current.fix_time:
                fixes[vehicle_id] = LatestFix(VehicleId(vehicle_id), t, float(lon), float(lat),
                                              message.get("speed_kph"), message.get("course"))
        elif kind == "event" and message.get("kind") in EVENT_KINDS:
            t = _epoch(message.get("event_time"))
            if t is None:
                continue
            events.append(Event(vehicle_id, str(message["kind"]), t, geofence_id=message.get("geofence_id"),
                                route_id=message.get("route_id"), lon=message.get("lon"), lat=message.get("lat"),
                                speed_kph=message.get("speed_kph"), attributes=message.get("attributes") or {},
                                source="server"))
    touched: dict[str, set[str]] = {}
    if not fixes and not events:
        return touched
    with store.transaction():
        store.vehicles.record_fixes(fixes.values())
        if events:
            store.events.add_many(events)
    if fixes:
        touched["latest_fixes"] = set(fixes)
    if events:
        touched["events"] = {e.vehicle_id for e in events}
    return touched


class LiveFeed:
    def __init__(self, store: Store, server_url: str, tokens: TokenSource,
                 on_change: Callable[[dict[str, set[str]]], None], *, max_backoff: float = 30.0) -> None:
        self.store = store
        self.server_url = server_url
        self.tokens = tokens
        self.on_change = on_change
        self.max_backoff = max_backoff
        self.connected = False
        self.received = 0
        self._stopping = False
        self._socket: Any = None

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        attempt = 0
        while not self._stopping:
            try:
                async with connect(live_url(self.server_url, await self.tokens.access_token()),
                                   open_timeout=10, ping_interval=20) as socket:
                    self._socket = socket
                    self.connected = True
                    attempt = 0
                    await self._catch_up()
                    await self._read(socket)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403) and not await self.tokens.refresh():
                    log.info("live feed refused the credentials; stopping it")
                    return
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.info("live feed disconnected: %s", exc)
            finally:
                self.connected = False
                self._socket = None
            if self._stopping:
                return
            attempt += 1
            await asyncio.sleep(min(self.max_backoff, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))

    async def _catch_up(self) -> None:
        """The newest fixes of the last few minutes, which the feed cannot replay after an outage."""
        import time

        import httpx

        try:
            async with httpx.AsyncClient(base_url=self.server_url.rstrip("/"), timeout=15) as http:
                response = await http.get("/api/v1/positions", params={
                    "from": time.time() - CATCH_UP_SECONDS, "format": "json", "limit": CATCH_UP_LIMIT},
                    headers={"Authorization": f"Bearer {await self.tokens.access_token()}"})
                response.raise_for_status()
                rows = response.json().get("data", [])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.info("live feed catch-up skipped: %s", exc)
            return
        messages = [{**row, "type": "position"} for row in rows if isinstance(row, dict)]
        if messages:
            touched = await asyncio.to_thread(apply_messages, self.store, messages)
            if touched:
                self.on_change(touched)

    async def _read(self, socket: Any) -> None:
        loop = asyncio.get_running_loop()
        batch: list[dict[str, Any]] = []
        deadline = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                raw = await asyncio.wait_for(socket.recv(), timeout)
            except TimeoutError:
                raw = None
            if raw is not None:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("type") in ("position", "event"):
                    batch.append(message)
                    self.received += 1
                    if deadline is None:
                        deadline = loop.time() + BATCH_SECONDS
            if batch and (raw is None or (deadline is not None and loop.time() >= deadline)):
                messages, batch, deadline = batch, [], None
                touched = await asyncio.to_thread(apply_messages, self.store, messages)
                if touched:
                    self.on_change(touched)

    async def stop(self) -> None:
        self._stopping = True
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
