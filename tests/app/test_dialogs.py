"""Add and edit dialogs refuse invalid input with the message under the field it concerns, and
write nothing until every problem is fixed."""

from __future__ import annotations

from typing import Any, cast

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QPlainTextEdit
from pytestqt.qtbot import QtBot

from app.context import FleetContext
from app.forms import RecordDialog


def dialog_for(qtbot: QtBot, ctx: FleetContext, collection: str, record_id: str | None = None) -> RecordDialog:
    dialog = RecordDialog(ctx, collection, record_id)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def line(dialog: RecordDialog, field: str) -> QLineEdit:
    return cast(QLineEdit, dialog.editors[field].widget)


def combo(dialog: RecordDialog, field: str) -> QComboBox:
    return cast(QComboBox, dialog.editors[field].widget)


def text(dialog: RecordDialog, field: str) -> QPlainTextEdit:
    return cast(QPlainTextEdit, dialog.editors[field].widget)


def save_ok(qtbot: QtBot, dialog: RecordDialog) -> str:
    with qtbot.waitSignal(dialog.saved, timeout=10_000) as saved:
        qtbot.mouseClick(dialog.buttons.buttons()[0], Qt.MouseButton.LeftButton)
    return cast(str, cast(Any, saved.args)[0])


def test_a_vehicle_without_a_name_is_refused_beside_the_name_field(qtbot: QtBot, ctx: FleetContext) -> None:
    dialog = dialog_for(qtbot, ctx, "vehicles")
    qtbot.keyClicks(line(dialog, "plate"), "B-WH 1")
    dialog.save()
    assert dialog.problem_text("name") == "is required"
    assert dialog.problem_text("plate") == ""
    assert dialog.isVisible()
    assert ctx.store.vehicles.count() == 0
    assert ctx.store.sync_log.size() == 0  # not even an empty CRDT update


def test_words_and_out_of_range_numbers_are_named_under_their_field(qtbot: QtBot, ctx: FleetContext) -> None:
    dialog = dialog_for(qtbot, ctx, "vehicles")
    qtbot.keyClicks(line(dialog, "name"), "Van 1")
    qtbot.keyClicks(line(dialog, "speed_limit_kph"), "fast")
    dialog.save()
    assert dialog.problem_text("speed_limit_kph") == "must be a number"
    line(dialog, "speed_limit_kph").setText("-20")
    dialog.save()
    assert "greater than 0" in dialog.problem_text("speed_limit_kph")
    assert dialog.problem_text("name") == ""
    assert ctx.store.vehicles.count() == 0
    line(dialog, "speed_limit_kph").setText("80")
    vehicle_id = save_ok(qtbot, dialog)
    stored = ctx.store.vehicles.get(vehicle_id)
    assert stored is not None and stored.speed_limit_kph == 80 and stored.name == "Van 1"


def test_a_driver_with_a_bad_email_and_date_is_refused_field_by_field(qtbot: QtBot, ctx: FleetContext) -> None:
    dialog = dialog_for(qtbot, ctx, "drivers")
    qtbot.keyClicks(line(dialog, "name"), "Aino")
    qtbot.keyClicks(line(dialog, "email"), "aino.example.com")
    qtbot.keyClicks(line(dialog, "license_expiry"), "next year")
    dialog.save()
    assert dialog.problem_text("email") != ""
    assert dialog.problem_text("license_expiry") != ""
    assert dialog.problem_text("name") == ""
    assert ctx.store.drivers.count() == 0


def test_a_device_id_already_in_use_comes_back_from_the_service(qtbot: QtBot, ctx: FleetContext) -> None:
    ctx.fleet.create("vehicles", {"name": "First", "device_id": "imei-1"})
    dialog = dialog_for(qtbot, ctx, "vehicles")
    qtbot.keyClicks(line(dialog, "name"), "Second")
    qtbot.keyClicks(line(dialog, "device_id"), "imei-1")
    dialog.save()
    qtbot.waitUntil(lambda: "already used" in dialog.problem_text("device_id"), timeout=10_000)
    assert dialog.isVisible()
    assert [v.name for v in ctx.store.vehicles.list()] == ["First"]


def test_the_driver_of_a_vehicle_is_picked_from_a_list(qtbot: QtBot, ctx: FleetContext) -> None:
    aino = ctx.fleet.create("drivers", {"name": "Aino"})
    ctx.fleet.create("drivers", {"name": "Mikko"})
    dialog = dialog_for(qtbot, ctx, "vehicles")
    drivers = combo(dialog, "driver_id")
    assert [drivers.itemText(i) for i in range(drivers.count())] == ["(none)", "Aino", "Mikko"]
    qtbot.keyClicks(line(dialog, "name"), "Van 2")
    drivers.setCurrentIndex(drivers.findText("Aino"))
    vehicle = ctx.store.vehicles.get(save_ok(qtbot, dialog))
    assert vehicle is not None and vehicle.driver_id == aino


def test_the_vehicle_of_a_route_is_picked_from_a_list(qtbot: QtBot, ctx: FleetContext) -> None:
    van = ctx.fleet.create("vehicles", {"name": "Van 3"})
    dialog = dialog_for(qtbot, ctx, "routes")
    vehicles = combo(dialog, "vehicle_id")
    vehicles.setCurrentIndex(vehicles.findText("Van 3"))
    qtbot.keyClicks(line(dialog, "name"), "Loop")
    text(dialog, "geometry").setPlainText('{"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.171]]}')
    route = ctx.store.routes.get(save_ok(qtbot, dialog))
    assert route is not None and route.vehicle_id == van and route.corridor_m == 100


def test_broken_geojson_is_named_under_the_geometry_field(qtbot: QtBot, ctx: FleetContext) -> None:
    dialog = dialog_for(qtbot, ctx, "geofences")
    qtbot.keyClicks(line(dialog, "name"), "Yard")
    text(dialog, "geometry").setPlainText('{"type": "Polygon", "coordinates": [[[24.9, 60.1], ')
    dialog.save()
    assert dialog.problem_text("geometry").startswith("is not valid JSON")
    text(dialog, "geometry").setPlainText('{"type": "Point", "coordinates": [24.9, 60.1]}')
    dialog.save()
    assert "required when geometry is a Point" in dialog.problem_text("radius_m")
    self_crossing = ('{"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.95, 60.18], [24.95, 60.17], '
                     '[24.94, 60.18], [24.94, 60.17]]]}')
    text(dialog, "geometry").setPlainText(self_crossing)
    dialog.save()
    assert "self-intersection" in dialog.problem_text("geometry").lower()
    assert ctx.store.geofences.count() == 0


def test_editing_changes_only_what_was_changed(qtbot: QtBot, ctx: FleetContext) -> None:
    driver = ctx.fleet.create("drivers", {"name": "Laura", "phone": "+358 1", "email": "laura@example.com"})
    dialog = dialog_for(qtbot, ctx, "drivers", driver)
    assert line(dialog, "phone").text() == "+358 1"
    assert dialog.windowTitle() == "Edit driver"
    line(dialog, "phone").setText("+358 2")
    combo(dialog, "status").setCurrentIndex(combo(dialog, "status").findText("inactive"))
    save_ok(qtbot, dialog)
    stored = ctx.store.drivers.get(driver)
    assert stored is not None
    assert (stored.phone, stored.status, stored.email) == ("+358 2", "inactive", "laura@example.com")


def test_a_geofence_can_be_switched_off(qtbot: QtBot, ctx: FleetContext) -> None:
    square = {"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.945, 60.17], [24.945, 60.172],
                                                  [24.94, 60.172], [24.94, 60.17]]]}
    fence = ctx.fleet.create("geofences", {"name": "Yard", "geometry": square})
    dialog = dialog_for(qtbot, ctx, "geofences", fence)
    active = cast(QCheckBox, dialog.editors["active"].widget)
    assert active.isChecked()
    active.setChecked(False)
    save_ok(qtbot, dialog)
    stored = ctx.store.geofences.get(fence)
    assert stored is not None and stored.active == 0
