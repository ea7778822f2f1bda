"""Field mode: recording from a GPS source with live speed and position, outbox counts, geofence and
route-corridor alerts computed offline, and no way to edit fleet data."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.context import FleetContext
from app.corridor import CorridorWatcher, distance_m, watched_route
from app.demo import ROUTES, DemoFleet, demo_track, populate
from app.field import FieldWindow
from storage.positions import Fix

from .conftest import wait_map


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
    field.vehicle.setCurrentIndex(field.vehicle.findText("Van 01"))
    fixes = off_route_drive(vehicle)
    assert field.start_recording(fixes)
    assert field.record_button.text() == "■ Stop"
    qtbot.waitUntil(lambda: field.recording_state.text() == "Source finished", timeout=30_000)
    qtbot.waitUntil(lambda: field.outbox.text() == f"Outbox: {len(fixes)} waiting · 0 uploaded", timeout=10_000)
    assert field.speed.text().endswith(" km/h") and field.speed.text() != "— km/h"
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


def test_stop_ends_a_live_source(qtbot: QtBot, field: FieldWindow, ctx: FleetContext) -> None:
    field.source.setCurrentIndex(field.source.findData("simulator"))
    field.source_param.setText("60")
    qtbot.mouseClick(field.record_button, Qt.MouseButton.LeftButton)
    assert field.recorder.recording
    qtbot.waitUntil(lambda: field.fixes_seen >= 1, timeout=10_000)
    assert field.speed.text() == "60 km/h"
    qtbot.mouseClick(field.record_button, Qt.MouseButton.LeftButton)
    assert not field.recorder.recording
    assert field.recording_state.text() == "Stopped"
    qtbot.waitUntil(lambda: ctx.store.positions.counts().pending >= 1, timeout=10_000)


def test_a_missing_nmea_file_is_reported_not_crashed(qtbot: QtBot, field: FieldWindow, tmp_path: Path) -> None:
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


def test_unassigned_routes_count_for_the_field_vehicle() -> None:
    line = {"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.17]]}
    route = watched_route("r", {"name": "Any", "geometry": line})
    assert route is not None and route.corridor_m == 100.0
    watcher = CorridorWatcher([route], unassigned_for="me")
    assert [e.kind for e in watcher.process("me", 1, 24.945, 60.175)] == ["route_deviation"]
    assert watcher.process("someone else", 1, 24.945, 60.175) == []
