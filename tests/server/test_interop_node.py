"""Interop with the stock JavaScript Yjs stack: `yjs` + `y-websocket` from npm, run by node."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from sync.client import SyncState
from tests.server.test_sync_server import eventually, make_client, running

JS = Path(__file__).resolve().parents[1] / "js"
pytestmark = pytest.mark.node


def stock_client(live: LiveServer, tenant: Tenant, *args: str, token: str | None = None, timeout: int = 20
                 ) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "y-websocket").exists():
        pytest.fail("node and tests/js/node_modules are required (make test installs them)")
    command = [node, str(JS / "stock_client.mjs"), "--server", f"ws://127.0.0.1:{live.port}/sync",
               "--room", tenant.id, "--timeout", str(timeout), *args]
    if token is not None:
        command += ["--token", token]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 15, cwd=JS)
    assert done.stdout, f"stock client printed nothing: {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["exit_code"] = done.returncode
    return result


@pytest.fixture
def live(database_url: str) -> Any:
    with LiveServer(settings_for(database_url)) as server:
        yield server


def test_stock_yjs_client_and_python_client_see_each_others_vehicles(tmp_path: Path, live: LiveServer) -> None:
    tenant = provision_tenant(live.settings)
    client, fleet = make_client(tmp_path, "py", live, tenant)
    js_vehicle = "0b7f3c52-3f0e-4bb4-9a43-1f0c2a9d7e11"
    js_fields = {"name": "JS Van", "plate": "JS-1", "status": "active", "device_id": "js-phone",
                 "created_at": "2026-11-25T08:00:00Z", "updated_at": "2026-11-25T08:00:00Z"}

    async def body() -> None:
        await client.wait_for(lambda s: s.state == SyncState.SYNCED)
        py_vehicle = fleet.create("vehicles", {"name": "Python Truck", "plate": "PY-1"})
        await client.wait_for(lambda s: s.state == SyncState.SYNCED and s.pending == 0)
        result = await asyncio.to_thread(
            stock_client, live, tenant, "--write", "vehicles", js_vehicle, json.dumps(js_fields),
            "--expect", "vehicles", py_vehicle, token=tenant.tokens["dispatcher"])
        assert result["exit_code"] == 0, result
        # The stock client read the Python client's vehicle, field by field.
        assert result["doc"]["vehicles"][py_vehicle]["plate"] == "PY-1"
        # And its own vehicle arrived in the Python client's SpatiaLite mirror.
        mirrored = await eventually(lambda: client.mirror.store.vehicles.get(js_vehicle))
        assert (mirrored.name, mirrored.plate, mirrored.device_id, mirrored.invalid_reason) == \
            ("JS Van", "JS-1", "js-phone", None)
        async with httpx.AsyncClient(base_url=live.url, timeout=10,
                                     headers={"Authorization": f"Bearer {tenant.tokens['admin']}"}) as http:
            response = await http.get("/api/v1/vehicles")
            names = {r["attributes"]["name"] for r in response.json()["data"]}
        assert {"JS Van", "Python Truck"} <= names

    asyncio.run(running(client, body=body))


def test_stock_client_without_token_is_refused_and_writes_nothing(live: LiveServer) -> None:
    tenant = provision_tenant(live.settings)
    result = stock_client(live, tenant, "--write", "vehicles", "intruder", json.dumps({"name": "Intruder"}),
                          timeout=3)
    assert result["exit_code"] == 1 and result["synced"] is False
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {tenant.tokens['admin']}"}) as http:
        assert http.get("/api/v1/vehicles/intruder").status_code == 404


def test_stock_client_never_receives_the_ack_extension(live: LiveServer) -> None:
    """A stock client that did not opt in syncs cleanly; y-websocket cannot read message type 100."""
    tenant = provision_tenant(live.settings)
    result = stock_client(live, tenant, "--write", "drivers", "d-1", json.dumps({"name": "Dana"}),
                          "--expect", "drivers", "d-1", token=tenant.tokens["dispatcher"])
    assert result["exit_code"] == 0 and result["synced"] is True

    def driver() -> Any:
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {tenant.tokens['admin']}"}) as http:
            response = http.get("/api/v1/drivers/d-1")
        return response.json() if response.status_code == 200 else None

    found = asyncio.run(eventually(driver))
    assert found["data"]["attributes"]["name"] == "Dana"
