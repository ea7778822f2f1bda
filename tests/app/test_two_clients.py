"""Two desktop apps with two profiles against a real server (uvicorn on an ephemeral port): a
vehicle added in one appears in the other's table and on its map, also when the second app was
offline during the edit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.context import FleetContext
from app.dispatcher import DispatcherWindow
from app.sync_thread import SyncThread
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from sync.client import StaticToken

from .conftest import MAP_TIMEOUT_MS, wait_map

SYNC_TIMEOUT_MS = 20_000


@dataclass
class App:
    ctx: FleetContext
    window: DispatcherWindow
    sync: SyncThread

    def names(self) -> list[str]:
        model = self.window.collection_tabs["vehicles"].model
        return [model.index(r, 0).data() for r in range(model.rowCount())]

    def restart_sync(self, live: LiveServer, tenant: Tenant) -> None:
        self.sync = start_sync(self.ctx, self.window, live, tenant)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('server') / 'fleet-server.sqlite'}"
    with LiveServer(settings_for(url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings, f"Two Apps {time.monotonic_ns()}")


def start_sync(ctx: FleetContext, window: DispatcherWindow, live: LiveServer, tenant: Tenant) -> SyncThread:
    sync = SyncThread(ctx, live.url, tenant.id, StaticToken(tenant.tokens["dispatcher"]), min_backoff=0.05,
                      max_backoff=0.5, parent=window)
    window.attach_sync(sync)
    sync.start()
    return sync


@pytest.fixture
def apps(qtbot: QtBot, tmp_path: Path, live: LiveServer, tenant: Tenant) -> Iterator[tuple[App, App]]:
    opened = []
    for name in ("first", "second"):
        ctx = FleetContext.open(tmp_path / name)
        window = DispatcherWindow(ctx, has_server=True)
        qtbot.addWidget(window)
        window.show()
        opened.append(App(ctx, window, start_sync(ctx, window, live, tenant)))
    for app in opened:
        qtbot.waitUntil(lambda app=app: app.window.status.state.text().startswith("Online"), timeout=SYNC_TIMEOUT_MS)
    yield opened[0], opened[1]
    for app in opened:
        app.sync.stop()
        app.window.close()
        app.ctx.close()


def post_position(live: LiveServer, tenant: Tenant, vehicle_id: str, lon: float, lat: float) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    answer = httpx.post(f"{live.url}/api/v1/positions", timeout=10,
                        headers={"Authorization": f"Bearer {tenant.tokens['dispatcher']}"},
                        json={"positions": [{"vehicle_id": vehicle_id, "lat": lat, "lon": lon, "fix_time": stamp,
                                             "speed_kph": 25.0}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1, answer.text


def add_vehicle_with_the_dialog(qtbot: QtBot, app: App, name: str) -> str:
    tab = app.window.collection_tabs["vehicles"]
    qtbot.mouseClick(tab.add_button, Qt.MouseButton.LeftButton)
    dialog = tab.dialog
    assert dialog is not None
    qtbot.keyClicks(dialog.editors["name"].widget, name)  # type: ignore[arg-type]
    qtbot.keyClicks(dialog.editors["plate"].widget, "HEL-7")  # type: ignore[arg-type]
    with qtbot.waitSignal(dialog.saved, timeout=10_000) as saved:
        dialog.save()
    return str(saved.args[0]) if saved.args else ""


def wait_synced(qtbot: QtBot, app: App) -> None:
    qtbot.waitUntil(lambda: app.window.status.state.text() == "Online", timeout=SYNC_TIMEOUT_MS)
    assert app.window.status.pending.text() == "Pending changes: 0"
    assert app.window.status.synced.text() != "Last synced: never"


def test_a_vehicle_added_in_one_app_appears_in_the_others_table_and_map(
        qtbot: QtBot, apps: tuple[App, App], live: LiveServer, tenant: Tenant) -> None:
    first, second = apps
    vehicle = add_vehicle_with_the_dialog(qtbot, first, "Van 7")
    wait_synced(qtbot, first)
    qtbot.waitUntil(lambda: second.names() == ["Van 7"], timeout=SYNC_TIMEOUT_MS)
    post_position(live, tenant, vehicle, 24.9440, 60.1710)
    for app in (first, second):
        state = wait_map(qtbot, app.window.map, lambda s: s["markers"] == 1, timeout=MAP_TIMEOUT_MS)
        assert state["byState"]["moving"] == 1
    # An edit in the second app flows back to the first.
    second.ctx.fleet.update("vehicles", vehicle, {"name": "Van 7 (renamed)"})
    qtbot.waitUntil(lambda: first.names() == ["Van 7 (renamed)"], timeout=SYNC_TIMEOUT_MS)


def test_a_vehicle_added_while_the_other_app_is_offline_appears_after_it_reconnects(
        qtbot: QtBot, apps: tuple[App, App], live: LiveServer, tenant: Tenant) -> None:
    first, second = apps
    second.sync.stop()
    qtbot.waitUntil(lambda: second.window.status.state.text().startswith("Offline"), timeout=SYNC_TIMEOUT_MS)
    vehicle = add_vehicle_with_the_dialog(qtbot, first, "Van 8")
    wait_synced(qtbot, first)  # the server has committed it
    # The second app, offline, edits too: its change waits in its log.
    own = second.ctx.fleet.create("vehicles", {"name": "Van 9 (made offline)"})
    qtbot.waitUntil(lambda: second.window.status.pending.text() == "Pending changes: 1", timeout=SYNC_TIMEOUT_MS)
    assert second.names() == ["Van 9 (made offline)"]
    post_position(live, tenant, vehicle, 24.9450, 60.1720)
    second.restart_sync(live, tenant)
    qtbot.waitUntil(lambda: sorted(second.names()) == ["Van 8", "Van 9 (made offline)"], timeout=SYNC_TIMEOUT_MS)
    wait_synced(qtbot, second)
    qtbot.waitUntil(lambda: sorted(first.names()) == ["Van 8", "Van 9 (made offline)"], timeout=SYNC_TIMEOUT_MS)
    # The position sent while it was away reaches its map through the feed's catch-up.
    wait_map(qtbot, second.window.map, lambda s: s["markers"] == 1, timeout=MAP_TIMEOUT_MS)
    post_position(live, tenant, own, 24.9460, 60.1730)
    wait_map(qtbot, first.window.map, lambda s: s["markers"] == 2, timeout=MAP_TIMEOUT_MS)
