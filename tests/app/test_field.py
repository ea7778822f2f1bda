"""Field mode: recording from a GPS source with live speed and position, outbox counts, geofence and
route-corridor alerts computed offline, and no way to edit fleet data; the vehicle assigned to the
user, its own routes on a map that follows it, layer toggles, and status texts that fit and agree."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox
from pytestqt.qtbot import QtBot

from app.context import FleetContext
from app.corridor import CorridorWatcher, distance_m, watched_route
from app.demo import ROUTES, DemoFleet, demo_track, populate
from app.field import FieldWindow
from storage.positions import Fix
from sync.client import SyncState, SyncStatus

from .conftest import evaluate, wait_map

FIELD_EMAIL = "aino.virtanen@example.fi"


@pytest.fixture
def demo(ctx: FleetContext) -> DemoFleet:
    return populate(ctx.mirror, with_track=False)


@pytest.fixture
def field(qtbot: QtBot, ctx: FleetContext, demo: DemoFleet) -> Iterator[FieldWindow]:
    window = FieldWindow(ctx)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.vehicle.count() == len(demo.vehicle_ids))
    yield window
    window.close()


def choose(field: FieldWindow, name: str) -> None:
    """Pick a vehicle in the drop-down, as the user does."""
    index = field.vehicle.findText(name)
    assert index >= 0, name
    field.vehicle.setCurrentIndex(index)


class Questions:
    """Stands in for QMessageBox.question: records what was asked and gives a set answer."""

    def __init__(self, answer: QMessageBox.StandardButton) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def __call__(self, _parent: Any, _title: str, text: str, *_args: Any) -> QMessageBox.StandardButton:
        self.asked.append(text)
        return self.answer


@pytest.fixture
def questions(monkeypatch: pytest.MonkeyPatch) -> Questions:
    asked = Questions(QMessageBox.StandardButton.No)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(asked))
    return asked


def off_route_drive(vehicle_id: str) -> list[Fix]:
    fixes = list(demo_track(vehicle_id, ROUTES["Station - Hakaniemi"], start=time.time() - 600))
    middle = len(fixes) // 2
    for k in range(middle, middle + 6):  # 0.004 degrees of longitude east is about 220 m: off the 40 m corridor
        fixes[k] = dataclasses.replace(fixes[k], lon=fixes[k].lon + 0.004)
    return fixes


def test_field_mode_offers_no_edit_controls(qtbot: QtBot, field: FieldWindow, ctx: FleetContext) -> None:
    assert ctx.read_only
    for tab in field.collection_tabs.values():
        assert not tab.add_button.isVisibleTo(tab)
        assert not tab.edit_button.isVisibleTo(tab)
        assert not tab.delete_button.isVisibleTo(tab)
        assert tab.open_dialog(None) is None
    state = wait_map(qtbot, field.map, lambda s: s["ready"] and s["markers"] > 0)
    assert state["readOnly"] is True and state["drawControl"] is False
    assert field.record_button.minimumSizeHint().height() >= 56


def test_recording_shows_speed_position_outbox_and_alerts(qtbot: QtBot, field: FieldWindow, ctx: FleetContext,
                                                          demo: DemoFleet) -> None:
    vehicle = demo.vehicle_ids[0]
    choose(field, "Van 01")
    fixes = off_route_drive(vehicle)
    speeds: list[str] = []
    field.recorder.fix_seen.connect(lambda _fix: speeds.append(field.speed.text()))
    assert field.start_recording(fixes)
    assert field.record_button.text() == "■ Stop"
    qtbot.waitUntil(lambda: field.recording_state.text() == "Source finished", timeout=30_000)
    qtbot.waitUntil(lambda: field.outbox.text() == f"Outbox: {len(fixes)} waiting · 0 uploaded", timeout=10_000)
    assert field.status.fixes.text() == f"Pending fixes: {len(fixes)}"  # read once, shown twice
    assert any(text.endswith(" km/h") and text[0].isdigit() for text in speeds)
    assert field.speed.text() == "— km/h"  # recording over: no speed to show
    last = fixes[-1]
    assert field.position.text() == f"{last.lat:.5f}° N, {last.lon:.5f}° E"
    expected = ["Van 01 entered Central Station depot", "Van 01 left Central Station depot",
                "Van 01 entered Customer: Kluuvi", "Van 01 left Customer: Kluuvi",
                "Van 01 left route corridor Station - Hakaniemi", "Van 01 back on route Station - Hakaniemi"]
    qtbot.waitUntil(lambda: sorted(field.alert_texts) == sorted(expected), timeout=10_000)
    assert field.alerts.count() == len(expected)
    kinds = {e.kind for e in ctx.store.events.recent(vehicle_id=vehicle)}
    assert kinds == {"geofence_enter", "geofence_exit", "route_deviation", "route_return"}
    qtbot.waitUntil(lambda: field.status.fixes.text() == f"Pending fixes: {len(fixes)}")
    assert field.record_button.text() == "● Record"


def test_stop_ends_a_live_source_and_clears_the_speed(qtbot: QtBot, field: FieldWindow, ctx: FleetContext) -> None:
    choose(field, "Van 01")
    field.source.setCurrentIndex(field.source.findData("simulator"))
    field.source_param.setText("60")
    qtbot.mouseClick(field.record_button, Qt.MouseButton.LeftButton)
    assert field.recorder.recording
    qtbot.waitUntil(lambda: field.fixes_seen >= 1, timeout=10_000)
    assert field.speed.text() == "60 km/h"
    qtbot.mouseClick(field.record_button, Qt.MouseButton.LeftButton)
    assert not field.recorder.recording
    assert field.recording_state.text() == "Stopped"
    assert field.speed.text() == "— km/h"
    qtbot.waitUntil(lambda: ctx.store.positions.counts().pending >= 1, timeout=10_000)
    assert field.speed.text() == "— km/h"  # fixes still queued from the stopped source are not shown


def test_a_missing_nmea_file_is_reported_not_crashed(qtbot: QtBot, field: FieldWindow, tmp_path: Path) -> None:
    choose(field, "Van 04")
    field.source.setCurrentIndex(field.source.findData("file"))
    field.source_param.setText(str(tmp_path / "nowhere.nmea"))
    field.start_recording()
    qtbot.waitUntil(lambda: field.recording_state.text().startswith("Recording stopped:"), timeout=10_000)
    assert "nowhere.nmea" in field.recording_state.text()
    assert field.record_button.text() == "● Record"


def test_an_nmea_log_is_replayed(qtbot: QtBot, field: FieldWindow, ctx: FleetContext, tmp_path: Path) -> None:
    from sync.gps.nmea import with_checksum

    log = tmp_path / "drive.nmea"
    lines = []
    for i in range(5):
        minute = f"{1 + i:02d}"
        lines.append(with_checksum(f"GPRMC,1200{minute}.00,A,6010.200,N,02456.500,E,{10 + i}.0,90.0,250624,,,A"))
    log.write_text("\n".join(lines) + "\n")
    choose(field, "Van 04")
    field.source.setCurrentIndex(field.source.findData("file"))
    field.source_param.setText(str(log))
    field.start_recording()
    qtbot.waitUntil(lambda: field.recording_state.text() == "Source finished", timeout=10_000)
    assert field.fixes_seen == 5
    assert field.position.text() == "60.17000° N, 24.94167° E"
    qtbot.waitUntil(lambda: ctx.store.positions.counts().pending == 5)


def test_corridor_distance_and_events() -> None:
    line = {"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.17]]}
    route = watched_route("r", {"name": "East", "geometry": line, "corridor_m": 50, "vehicle_id": "v"})
    assert route is not None
    assert distance_m(route, 24.945, 60.17) < 0.01
    assert abs(distance_m(route, 24.945, 60.171) - 111.3) < 1.0
    watcher = CorridorWatcher([route])
    assert watcher.process("v", 1, 24.945, 60.1702) == []  # on the route: nothing to say
    left = watcher.process("v", 2, 24.945, 60.171)
    assert [(e.kind, e.route_id, e.attributes["corridor_m"]) for e in left] == [("route_deviation", "r", 50.0)]
    assert watcher.process("v", 3, 24.946, 60.1712) == []  # still off: said once
    assert [e.kind for e in watcher.process("v", 4, 24.947, 60.17)] == ["route_return"]
    assert watcher.process("other", 5, 24.945, 60.18) == []  # not this vehicle's route
    assert watched_route("bad", {"geometry": {"type": "Point", "coordinates": [1, 2]}}) is None


def test_only_the_vehicles_own_routes_are_watched() -> None:
    line = {"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.17]]}
    unassigned = watched_route("r1", {"name": "Any", "geometry": line})
    theirs = watched_route("r2", {"name": "Theirs", "geometry": line, "vehicle_id": "other"})
    mine = watched_route("r3", {"name": "Mine", "geometry": line, "vehicle_id": "me"})
    assert unassigned is not None and theirs is not None and mine is not None and unassigned.corridor_m == 100.0
    assert CorridorWatcher([unassigned, theirs]).process("me", 1, 24.945, 60.175) == []
    watcher = CorridorWatcher([unassigned, theirs, mine])
    assert [(e.kind, e.route_id) for e in watcher.process("me", 1, 24.945, 60.175)] == [("route_deviation", "r3")]


# -- which vehicle -----------------------------------------------------------------------------------------


def test_with_nothing_assigned_the_vehicle_starts_empty_and_record_waits(
        qtbot: QtBot, field: FieldWindow, demo: DemoFleet, questions: Questions) -> None:
    assert field.vehicle.currentIndex() == -1 and field.vehicle.currentText() == ""
    assert field.vehicle_note.text() == "No vehicle is assigned to you: choose the one you are in."
    assert not field.record_button.isEnabled()
    assert field.collection_tabs["routes"].visible_rows() == 0  # no vehicle, no routes of its own
    wait_map(qtbot, field.map, lambda s: s["ready"] and s["layers"]["geofences"] == 3 and s["layers"]["routes"] == 0)
    choose(field, "Van 02")
    assert questions.asked == []  # nothing assigned: any first choice is fine
    assert field.vehicle_note.text() == "Chosen here: Van 02 (none is assigned to you)."
    assert field.record_button.isEnabled()
    assert field.selected_vehicle()[0] == demo.vehicle_ids[1]
    routes = field.collection_tabs["routes"]
    qtbot.waitUntil(lambda: routes.visible_rows() == 1)
    assert routes.proxy.index(0, 0).data() == "Unioninkatu - Esplanadi"
    state = wait_map(qtbot, field.map, lambda s: s["layers"]["routes"] == 1)
    assert state["layers"]["corridors"] == 1


def test_the_assigned_vehicle_is_the_default_and_another_needs_confirmation(
        qtbot: QtBot, ctx: FleetContext, demo: DemoFleet, questions: Questions) -> None:
    # Van 03 is driven by the third demo driver; give that driver the user's email.
    ctx.fleet.update("drivers", demo.driver_ids[2], {"email": FIELD_EMAIL.upper()})
    ctx.settings.email = FIELD_EMAIL
    field = FieldWindow(ctx)
    qtbot.addWidget(field)
    field.show()
    qtbot.waitUntil(lambda: field.vehicle.currentText() == "Van 03")
    assert field.vehicle_note.text() == "Assigned to you: Van 03"
    assert field.record_button.isEnabled()
    wait_map(qtbot, field.map, lambda s: s["ready"] and s["layers"]["routes"] == 1)
    assert field.collection_tabs["routes"].proxy.index(0, 0).data() == "Mannerheimintie"

    choose(field, "Van 05")  # the user answers No
    assert questions.asked == ["Van 03 is the vehicle assigned to you. Record to Van 05 instead?"]
    assert field.vehicle.currentText() == "Van 03"

    questions.answer = QMessageBox.StandardButton.Yes
    choose(field, "Van 05")
    assert field.vehicle.currentText() == "Van 05"
    assert field.vehicle_note.text() == "Not your assigned vehicle (Van 03)."
    wait_map(qtbot, field.map, lambda s: s["layers"]["routes"] == 0)  # Van 05 has no route
    van05 = demo.vehicle_ids[4]
    fixes = list(demo_track(van05, ROUTES["Mannerheimintie"], start=time.time() - 300, device_id="demo-00005"))[:5]
    assert field.start_recording(fixes)
    qtbot.waitUntil(lambda: field.recording_state.text() == "Source finished", timeout=30_000)
    qtbot.waitUntil(lambda: ctx.store.positions.counts().pending == 5)
    assert {f.fix.vehicle_id for f in ctx.store.positions.pending_batch(limit=10)} == {van05}
    field.close()


def test_an_assignment_made_while_open_is_taken_up(qtbot: QtBot, field: FieldWindow, ctx: FleetContext,
                                                   demo: DemoFleet) -> None:
    ctx.settings.email = FIELD_EMAIL
    assert field.vehicle.currentIndex() == -1
    ctx.fleet.update("drivers", demo.driver_ids[0], {"email": FIELD_EMAIL})  # arrives like a synced edit
    qtbot.waitUntil(lambda: field.vehicle.currentText() == "Van 01")
    assert field.vehicle_note.text() == "Assigned to you: Van 01" and field.record_button.isEnabled()


# -- the map ---------------------------------------------------------------------------------------------


def near(a: list[float], b: tuple[float, float], tolerance: float = 1e-4) -> bool:
    return abs(a[0] - b[0]) < tolerance and abs(a[1] - b[1]) < tolerance


def test_the_map_follows_the_recording_vehicle_until_the_user_drags_it(
        qtbot: QtBot, field: FieldWindow, demo: DemoFleet) -> None:
    wait_map(qtbot, field.map, lambda s: s["ready"] and s["markers"] > 0)
    assert field.follow.isChecked()  # on by default
    choose(field, "Van 01")
    fixes = off_route_drive(demo.vehicle_ids[0])
    last = (fixes[-1].lon, fixes[-1].lat)
    assert field.start_recording(fixes)
    state = wait_map(qtbot, field.map, lambda s: s["followed"] is not None and near(s["center"], last), 20_000)
    assert near(state["followed"], last, 1e-9)

    evaluate(qtbot, field.map, "fleetMap().fire('dragstart'), 1")  # what a drag by hand sends
    qtbot.waitUntil(lambda: not field.follow.isChecked())
    qtbot.waitUntil(lambda: field.recording_state.text() == "Source finished", timeout=30_000)
    centre = wait_map(qtbot, field.map, lambda s: True)["center"]
    again = list(demo_track(demo.vehicle_ids[0], ROUTES["Mannerheimintie"], start=time.time() - 3000))
    assert field.start_recording(again)
    qtbot.waitUntil(lambda: field.recording_state.text() == "Source finished", timeout=30_000)
    state = wait_map(qtbot, field.map, lambda s: True)
    assert state["center"] == centre and near(state["followed"], last, 1e-9)  # not followed any more


def test_big_layer_toggles_hide_and_show_routes_corridors_and_geofences(
        qtbot: QtBot, field: FieldWindow) -> None:
    choose(field, "Van 01")
    wait_map(qtbot, field.map, lambda s: s["ready"] and s["shown"] == {"routes": 1, "corridors": 1, "geofences": 3})
    for name, button in field.layer_buttons.items():
        assert button.isChecked() and button.minimumSizeHint().height() >= 56, name
    qtbot.mouseClick(field.layer_buttons["routes"], Qt.MouseButton.LeftButton)
    state = wait_map(qtbot, field.map, lambda s: s["shown"]["routes"] == 0)
    assert state["visible"] == {"routes": False, "corridors": True, "geofences": True}
    assert state["shown"] == {"routes": 0, "corridors": 1, "geofences": 3}
    qtbot.mouseClick(field.layer_buttons["corridors"], Qt.MouseButton.LeftButton)
    qtbot.mouseClick(field.layer_buttons["geofences"], Qt.MouseButton.LeftButton)
    wait_map(qtbot, field.map, lambda s: s["shown"] == {"routes": 0, "corridors": 0, "geofences": 0})
    choose(field, "Van 02")  # new routes arrive while hidden: they stay hidden
    wait_map(qtbot, field.map, lambda s: s["layers"]["routes"] == 1 and s["shown"]["routes"] == 0)
    for button in field.layer_buttons.values():
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    wait_map(qtbot, field.map, lambda s: s["shown"] == {"routes": 1, "corridors": 1, "geofences": 3})


# -- the status bar -------------------------------------------------------------------------------------


def fits(label: QLabel) -> bool:
    return not label.isVisible() or label.contentsRect().width() >= label.fontMetrics().horizontalAdvance(label.text())


def test_status_texts_fit_a_vehicle_screen_and_say_each_thing_once(qtbot: QtBot, ctx: FleetContext,
                                                                   demo: DemoFleet) -> None:
    field = FieldWindow(ctx, has_server=True)
    qtbot.addWidget(field)
    field.resize(1024, 700)
    field.show()
    assert field.minimumSizeHint().width() <= 1024  # the whole window fits a small vehicle screen
    qtbot.waitUntil(lambda: field.width() == 1024)
    status = field.status
    labels = [status.state, status.pending, status.fixes, status.synced]
    read_only = SyncStatus(SyncState.SYNCED, 0, time.time(), "read-only: this account cannot change fleet data",
                           read_only=True)
    status.set_sync_status(read_only)
    assert status.state.text() == "Online (view only)"
    assert "cannot change fleet data" in status.state.toolTip()
    assert not status.pending.isVisible()  # a read-only window has no changes to send
    qtbot.waitUntil(lambda: all(fits(label) for label in labels))
    status.set_sync_status(SyncStatus(SyncState.OFFLINE, 0, None, "cannot connect: [Errno 111] Connection refused"))
    assert status.state.text() == "Offline"
    assert "Connection refused" in status.state.toolTip()
    qtbot.waitUntil(lambda: all(fits(label) for label in labels))
    qtbot.waitUntil(lambda: field.outbox.text() == "Outbox: 0 waiting · 0 uploaded")
    assert status.fixes.text() == "Pending fixes: 0"
    field.close()
