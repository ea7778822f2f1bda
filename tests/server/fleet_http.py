"""Helpers shared by the server tests that talk to a LiveServer over HTTP and websockets."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from server_stub.testing import LiveServer

from .conftest import BACKENDS, backend_url

__all__ = ["BACKENDS"]

COLLECTIONS = ("vehicles", "drivers", "routes", "geofences")


def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The database URL of a module-scoped fixture over BACKENDS (a fresh SQLite file, or the module's Postgres)."""
    return backend_url(request, tmp_path_factory.mktemp("server"))

# A valid record of each collection; `name` is replaced per call so records are distinguishable.
SAMPLES: dict[str, dict[str, Any]] = {
    "vehicles": {"plate": "B-WH 1", "status": "active"},
    "drivers": {"phone": "+49 30 1234567", "status": "active"},
    "routes": {"geometry": {"type": "LineString", "coordinates": [[13.30, 52.50], [13.45, 52.55]]}},
    "geofences": {"kind": "depot", "geometry": {
        "type": "Polygon", "coordinates": [[[13.30, 52.50], [13.40, 52.50], [13.40, 52.60], [13.30, 52.50]]]}},
}


def attributes(collection: str, name: str, **extra: Any) -> dict[str, Any]:
    return {**SAMPLES[collection], "name": name, **extra}


def document(collection: str, attrs: dict[str, Any], record_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": collection, "attributes": attrs}
    if record_id is not None:
        data["id"] = record_id
    return {"data": data}


def client(server: LiveServer, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=15)


def create(server: LiveServer, token: str, collection: str, attrs: dict[str, Any],
           record_id: str | None = None) -> str:
    with client(server, token) as http:
        response = http.post(f"/api/v1/{collection}", json=document(collection, attrs, record_id))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def random_id() -> str:
    return str(uuid.uuid4())


def wait_until(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll `check` until it answers something truthy (no fixed sleeps); fail with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(interval)


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """The asyncio twin of wait_until."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(0.02)


METRIC_LINE = re.compile(r"^([a-z_]+)(\{.*\})? ([0-9.]+)$")


def metrics(server: LiveServer) -> dict[str, float]:
    """The unlabelled samples of GET /metrics (labelled ones summed under their name)."""
    with client(server) as http:
        response = http.get("/metrics")
    assert response.status_code == 200, response.text
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        match = METRIC_LINE.match(line)
        if match:
            samples[match[1]] = samples.get(match[1], 0.0) + float(match[3])
    return samples


def sync_handshake(server: LiveServer, tenant_id: str, token: str | None) -> tuple[int, str]:
    """Open WS /sync/{tenant}: (101, "") when accepted, else the refusal's HTTP status and body."""
    return ws_handshake(server, f"/sync/{tenant_id}", token)


def ws_handshake(server: LiveServer, path: str, token: str | None, **params: str) -> tuple[int, str]:
    """Open a websocket: (101, "") when accepted, else the refusal's HTTP status and body."""
    query = urlencode({**({"token": token} if token is not None else {}), **params})
    url = f"ws://127.0.0.1:{server.port}{path}" + (f"?{query}" if query else "")
    try:
        with ws_connect(url, open_timeout=10):
            return 101, ""
    except InvalidStatus as refused:
        return refused.response.status_code, bytes(refused.response.body or b"").decode()
