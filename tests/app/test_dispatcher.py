"""The dispatcher window as a person sees it: tables, details and history, events, status bar,
import and export with progress, all refreshed by the one change signal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton
from pytestqt.qtbot import QtBot

from app.context import FleetContext
from app.demo import DemoFleet, populate
from app.dispatcher import DispatcherWindow
from storage.events import Event
from storage.vehicles import LatestFix, VehicleId

from .conftest import MAP_TIMEOUT_MS, wait_map


@pytest.fixture
def demo(ctx: FleetContext) -> DemoFleet:
    return populate(ctx.mirror)


@pytest.fixture
def window(qtbot: QtBot, ctx: FleetContext, demo: DemoFleet) -> Iterator[DispatcherWindow]:
    win = DispatcherWindow(ctx)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.collection_tabs["vehicles"].model.rowCount() == len(demo.vehicle_ids))
    yield win
    win.close()


def test_tabs_show_the_fleet_and_the_status_bar_says_offline(qtbot: QtBot, window: DispatcherWindow,
                                                             demo: DemoFleet) -> None:
    tabs = window.collection_tabs
    qtbot.waitUntil(lambda: tabs["drivers"].visible_rows() == 8 and tabs["routes"].visible_rows() == 3
                    and tabs["geofences"].visible_rows() == 3)
    assert [window.tabs.tabText(i) for i in range(window.tabs.count())] == \
        ["Vehicles", "Drivers", "Routes", "Geofences", "Events"]
    assert window.status.state.text() == "Offline (no server configured)"
    qtbot.waitUntil(lambda: window.status.pending.text() == "Pending changes: 3")
    qtbot.waitUntil(lambda: window.status.fixes.text() == "Pending fixes: 35")
    assert window.status.synced.text() == "Last synced: never"
    assert all(tab.add_button.isVisibleTo(tab) for tab in tabs.values())


def test_the_map_shows_the_fleet_with_its_layers(qtbot: QtBot, window: DispatcherWindow, demo: DemoFleet) -> None:
    state = wait_map(qtbot, window.map, lambda s: s["markers"] == len(demo.vehicle_ids) and s["tilesLoaded"] > 0
                     and s["layers"]["geofences"] == 3 and s["layers"]["routes"] == 3)
    assert state["byState"]["invalid"] == 1 and state["byState"]["offline"] >= 1
    assert state["layers"]["corridors"] == 3
    assert state["drawControl"] is True
    assert window.map.recorder.requests() == []


def test_search_narrows_the_table(qtbot: QtBot, window: DispatcherWindow) -> None:
    tab = window.collection_tabs["vehicles"]
    qtbot.keyClicks(tab.search, "van 0")
    assert tab.visible_rows() == 9
    tab.search.clear()
    qtbot.keyClicks(tab.search, "bad limit")
    assert tab.visible_rows() == 1


def test_selecting_a_vehicle_shows_its_details_and_history(qtbot: QtBot, window: DispatcherWindow,
                                                           demo: DemoFleet) -> None:
    assert demo.tracked_vehicle is not None and demo.track_span is not None
    tab = window.collection_tabs["vehicles"]
    assert tab.select_id(demo.tracked_vehicle)
    details = window.details
    qtbot.waitUntil(lambda: details.title.text() == "Van 01  (HEL-100)")
    assert details.driver.text() == "Aino Virtanen"
    assert details.device.text() == "demo-00001"
    assert details.speed.text().endswith("km/h")
    details.set_range(demo.track_span[0] - 60, demo.track_span[1] + 60)
    with qtbot.waitSignal(details.track_loaded, timeout=10_000):
        qtbot.mouseClick(details.show_button, Qt.MouseButton.LeftButton)
    assert details.history_status.text() == "35 fixes (local)"
    xs, ys = details.speed_curve.getData()
    assert len(xs) == 35 and max(ys) > 30
    wait_map(qtbot, window.map, lambda s: s["layers"]["track"] == 35)
    with qtbot.waitSignal(details.cursor_moved, timeout=5000) as moved:
        details.move_cursor_to(20)
    assert moved.args == [20]
    state = wait_map(qtbot, window.map, lambda s: s["cursor"] == 20)
    point = details.track.points[20] if details.track else None
    assert point is not None and state["cursorLonLat"] == [point.lon, point.lat]
    assert details.cursor_label.text().endswith(f"({point.lat:.5f}, {point.lon:.5f})")


def test_clicking_a_marker_selects_the_vehicle(qtbot: QtBot, window: DispatcherWindow, demo: DemoFleet) -> None:
    wait_map(qtbot, window.map, lambda s: s["markers"] > 0)
    window.map.bridge.vehicleClicked(demo.vehicle_ids[2])
    assert window.collection_tabs["vehicles"].selected_id() == demo.vehicle_ids[2]
    qtbot.waitUntil(lambda: window.details.title.text().startswith("Van 03"))


def test_a_new_fix_moves_the_marker_without_rebuilding_the_layer(qtbot: QtBot, window: DispatcherWindow,
                                                                 ctx: FleetContext, demo: DemoFleet) -> None:
    wait_map(qtbot, window.map, lambda s: s["markers"] == len(demo.vehicle_ids))
    vehicle = demo.vehicle_ids[3]
    ctx.store.vehicles.record_fix(LatestFix(VehicleId(vehicle), time.time(), 24.9400, 60.1750, 36.0, 90.0))
    with qtbot.waitSignal(window.map_controller.pushed, timeout=5000, check_params_cb=lambda w: w == "moves"):
        ctx.signals.notify("live", {"latest_fixes": {vehicle}})
    state = wait_map(qtbot, window.map, lambda s: s["movesApplied"] >= 1 and s["pendingMoves"] == 0)
    assert state["markers"] == len(demo.vehicle_ids)
    from .conftest import evaluate

    assert evaluate(qtbot, window.map, f"markerPosition('{vehicle}')") == [24.94, 60.175, "moving"]


def test_events_appear_in_the_events_list(qtbot: QtBot, window: DispatcherWindow, ctx: FleetContext,
                                          demo: DemoFleet) -> None:
    ctx.store.events.add_many([
        Event(demo.vehicle_ids[0], "geofence_enter", time.time(), geofence_id=demo.geofence_ids[0]),
        Event(demo.vehicle_ids[1], "overspeed", time.time() + 1, speed_kph=72.0),
    ])
    ctx.signals.notify("live", {"events": {demo.vehicle_ids[0]}})
    qtbot.waitUntil(lambda: window.events.table.rowCount() == 2)
    assert window.events.texts() == ["Van 02 overspeed (72 km/h)", "Van 01 entered Central Station depot"]


def test_deleting_a_vehicle_removes_its_row_and_marker(qtbot: QtBot, window: DispatcherWindow,
                                                       demo: DemoFleet) -> None:
    tab = window.collection_tabs["vehicles"]
    tab.select_id(demo.vehicle_ids[5])
    tab.delete_selected(confirm=False)
    qtbot.waitUntil(lambda: tab.model.rowCount() == len(demo.vehicle_ids) - 1)
    wait_map(qtbot, window.map, lambda s: s["markers"] == len(demo.vehicle_ids) - 1)


def test_add_button_opens_the_dialog_and_the_new_row_is_selected(qtbot: QtBot, window: DispatcherWindow) -> None:
    tab = window.collection_tabs["drivers"]
    window.tabs.setCurrentWidget(tab)
    qtbot.mouseClick(tab.add_button, Qt.MouseButton.LeftButton)
    dialog = tab.dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.keyClicks(dialog.editors["name"].widget, "Zoe Zetterberg")  # type: ignore[arg-type]
    with qtbot.waitSignal(dialog.saved, timeout=10_000):
        dialog.save()
    qtbot.waitUntil(lambda: tab.selected_id() is not None and tab.model.rowCount() == 9)
    assert tab.model.record_at(tab.model.row_of(tab.selected_id() or "")).name == "Zoe Zetterberg"


def test_geojson_import_creates_valid_records_and_reports_the_rest(qtbot: QtBot, window: DispatcherWindow,
                                                                   ctx: FleetContext, tmp_path: Path) -> None:
    line = {"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.172]]}
    source = tmp_path / "plan.geojson"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": line, "properties": {"name": "Imported route", "corridor_m": 75}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.945, 60.171]},
         "properties": {"name": "Imported circle", "radius_m": 50}},
        {"type": "Feature", "geometry": line, "properties": {"name": "Too wide", "corridor_m": 99_999}},
        {"type": "Feature", "geometry": None, "properties": {"collection": "drivers", "name": "Imported driver"}},
    ]}))
    with qtbot.waitSignal(window.transfers.finished, timeout=20_000) as done:
        window.transfers.import_file(str(source))
    assert done.args is not None and done.args[0].startswith("Imported 3 of 4 from plan.geojson; 1 skipped")
    assert "corridor_m" in done.args[0]
    routes = window.collection_tabs["routes"]
    qtbot.waitUntil(lambda: routes.model.rowCount() == 4 and window.collection_tabs["drivers"].visible_rows() == 9)
    wait_map(qtbot, window.map, lambda s: s["layers"]["routes"] == 4 and s["layers"]["geofences"] == 4)


def test_a_cancelled_import_keeps_what_it_created(qtbot: QtBot, window: DispatcherWindow,
                                                  ctx: FleetContext, tmp_path: Path) -> None:
    source = tmp_path / "drivers.csv"
    source.write_text("name,phone\n" + "".join(f"Driver {i:04d},+358 {i}\n" for i in range(3000)))
    before = ctx.store.drivers.count()
    op = window.transfers.import_file(str(source), "drivers")
    # The user cancels as soon as a chunk is in (on the worker, so the timing is exact). On a busy
    # machine the worker may be past the first chunk before this is connected: note where it was.
    cancelled_at: list[int] = []

    def cancel(done: int, _total: int, _text: str) -> None:
        if done >= 100 and not cancelled_at:
            cancelled_at.append(done)
            op.progress.cancel()

    op.relay.progress.connect(cancel, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(window.transfers.finished, timeout=20_000) as done:
        pass
    result = window.transfers.last_result
    assert cancelled_at and cancelled_at[0] < 3000
    kept = cancelled_at[0]
    assert result is not None and result.cancelled and result.done == kept
    assert done.args == [f"Imported {kept} of 3000 from drivers.csv (cancelled)"]
    assert ctx.store.drivers.count() == before + kept
    assert window.transfers.dialog is None


def test_the_progress_dialog_cancel_button_stops_the_import(qtbot: QtBot, window: DispatcherWindow,
                                                            ctx: FleetContext, tmp_path: Path) -> None:
    import threading

    source = tmp_path / "drivers.csv"
    source.write_text("name\n" + "".join(f"Driver {i}\n" for i in range(500)))
    gate = threading.Event()
    ctx.ops.write(gate.wait)  # the writer is busy: the import waits its turn
    before = ctx.store.drivers.count()
    op = window.transfers.import_file(str(source), "drivers")
    dialog = window.transfers.dialog
    assert dialog is not None and dialog.isVisible() and dialog.labelText() == "Importing"
    qtbot.mouseClick(dialog.findChild(QPushButton), Qt.MouseButton.LeftButton)
    assert op.progress.cancelled
    with qtbot.waitSignal(window.transfers.finished, timeout=20_000) as done:
        gate.set()
    assert done.args == ["Imported 0 of 500 from drivers.csv (cancelled)"]
    assert ctx.store.drivers.count() == before


def test_gpx_import_turns_tracks_and_routes_into_routes(qtbot: QtBot, window: DispatcherWindow,
                                                        ctx: FleetContext, tmp_path: Path) -> None:
    source = tmp_path / "drive.gpx"
    source.write_text('<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
                      '<rte><name>Harbour run</name><rtept lat="60.167" lon="24.951"/><rtept lat="60.168" '
                      'lon="24.952"/></rte><trk><name>Tuesday</name><trkseg><trkpt lat="60.17" lon="24.94"/>'
                      '<trkpt lat="60.171" lon="24.941"/></trkseg></trk></gpx>')
    with qtbot.waitSignal(window.transfers.finished, timeout=20_000):
        window.transfers.import_file(str(source))
    names = {r.name for r in ctx.store.routes.list()}
    assert {"Harbour run", "Tuesday"} <= names


def test_exports_write_every_format(qtbot: QtBot, window: DispatcherWindow, tmp_path: Path,
                                    demo: DemoFleet) -> None:
    for name in ("fleet.geojson", "routes.gpx", "vehicles.csv"):
        with qtbot.waitSignal(window.transfers.finished, timeout=20_000) as done:
            window.transfers.export_file(str(tmp_path / name), "vehicles")
        assert done.args is not None and done.args[0].startswith("Exported")
    geojson = json.loads((tmp_path / "fleet.geojson").read_text())
    kinds = {f["properties"]["collection"] for f in geojson["features"]}
    assert kinds == {"routes", "geofences", "vehicles"}
    assert (tmp_path / "routes.gpx").read_text().count("<rte>") == 3
    csv_lines = (tmp_path / "vehicles.csv").read_text().splitlines()
    assert csv_lines[0].startswith("id,name,plate") and len(csv_lines) == len(demo.vehicle_ids) + 1


def test_online_tiles_are_an_opt_in_setting(qtbot: QtBot, window: DispatcherWindow, ctx: FleetContext) -> None:
    assert not window.online_tiles.isChecked()
    assert window.map.options.online_tiles is False
    window.online_tiles.setChecked(True)
    assert ctx.settings.online_tiles is True
    assert window.map.options.tile_url.startswith("https://tile.openstreetmap.org/")
    assert window.map.recorder.allow_network is True
    window.online_tiles.setChecked(False)
    with qtbot.waitSignal(window.map.ready, timeout=MAP_TIMEOUT_MS):
        pass
    assert window.map.recorder.allow_network is False
