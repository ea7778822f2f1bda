"""Table models show the store's rows and refresh from the one change signal, for local edits and
for remote updates merged through the mirror alike."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.context import FleetContext
from app.demo import populate
from app.models import INVALID_ROLE, RecordTableModel, SearchProxy
from storage import Store
from sync.mirror import Mirror
from sync.services import LocalFleet


def rows(model: RecordTableModel, column: int = 0) -> list[str]:
    return [model.index(r, column).data() for r in range(model.rowCount())]


def test_vehicle_table_shows_every_stored_vehicle_with_driver_names(qtbot: QtBot, ctx: FleetContext) -> None:
    demo = populate(ctx.mirror)
    model = RecordTableModel(ctx, "vehicles")
    qtbot.waitUntil(lambda: model.rowCount() == len(demo.vehicle_ids))
    assert model.columnCount() == 6
    assert model.headerData(3, Qt.Orientation.Horizontal) == "Driver"
    first = rows(model).index("Van 01")
    assert model.index(first, 3).data() == "Aino Virtanen"
    assert model.index(first, 1).data() == "HEL-100"


def test_an_invalid_record_is_shown_with_a_warning_and_its_reason(qtbot: QtBot, ctx: FleetContext) -> None:
    populate(ctx.mirror)
    model = RecordTableModel(ctx, "vehicles")
    qtbot.waitUntil(lambda: model.rowCount() > 0)
    row = rows(model).index("Van 99 (bad limit)")
    assert "speed_limit_kph" in model.index(row, 0).data(INVALID_ROLE)
    assert model.index(row, 2).data(Qt.ItemDataRole.ToolTipRole).startswith("Invalid: speed_limit_kph")
    assert not model.index(row, 0).data(Qt.ItemDataRole.DecorationRole).isNull()
    valid = rows(model).index("Van 01")
    assert model.index(valid, 0).data(Qt.ItemDataRole.ToolTipRole) is None


def test_a_local_edit_refreshes_the_table_through_the_change_signal(qtbot: QtBot, ctx: FleetContext) -> None:
    model = RecordTableModel(ctx, "drivers")
    qtbot.waitUntil(lambda: model.loads == 1)
    with qtbot.waitSignal(ctx.signals.changed, timeout=5000) as changed:
        driver = ctx.fleet.create("drivers", {"name": "Helmi Lehtonen", "phone": "+358 40 1"})
    assert changed.args == ["local", {"drivers": {driver}}]
    qtbot.waitUntil(lambda: rows(model) == ["Helmi Lehtonen"])
    ctx.fleet.update("drivers", driver, {"name": "Helmi L."})
    qtbot.waitUntil(lambda: rows(model) == ["Helmi L."])
    ctx.fleet.delete("drivers", driver)
    qtbot.waitUntil(lambda: model.rowCount() == 0)


def test_a_remote_update_refreshes_the_table_like_a_local_edit(qtbot: QtBot, ctx: FleetContext,
                                                                tmp_path: Path) -> None:
    model = RecordTableModel(ctx, "vehicles")
    qtbot.waitUntil(lambda: model.loads == 1)
    other_store = Store(tmp_path / "other.sqlite")
    other = Mirror.open(other_store)
    vehicle = LocalFleet(other).create("vehicles", {"name": "Remote van", "plate": "R-1"})
    update = other.document.get_update(ctx.mirror.document.get_state())
    with qtbot.waitSignal(ctx.signals.changed, timeout=5000) as changed:
        ctx.mirror.apply_remote(update)
    assert changed.args[0] == "remote" and vehicle in changed.args[1]["vehicles"]
    qtbot.waitUntil(lambda: rows(model) == ["Remote van"])
    other_store.close()


def test_a_change_from_another_thread_arrives_on_the_ui_thread(qtbot: QtBot, ctx: FleetContext) -> None:
    import threading

    from PySide6.QtCore import QThread

    seen: list[bool] = []
    ctx.signals.changed.connect(lambda *_: seen.append(QThread.currentThread() is ctx.signals.thread()))
    worker = threading.Thread(target=lambda: ctx.fleet.create("drivers", {"name": "From a worker"}))
    with qtbot.waitSignal(ctx.signals.changed, timeout=5000):
        worker.start()
    worker.join()
    assert seen == [True]


def test_renaming_a_driver_refreshes_the_vehicles_that_show_the_name(qtbot: QtBot, ctx: FleetContext) -> None:
    driver = ctx.fleet.create("drivers", {"name": "Old Name"})
    ctx.fleet.create("vehicles", {"name": "Van", "driver_id": driver})
    model = RecordTableModel(ctx, "vehicles")
    qtbot.waitUntil(lambda: model.rowCount() == 1 and model.index(0, 3).data() == "Old Name")
    ctx.fleet.update("drivers", driver, {"name": "New Name"})
    qtbot.waitUntil(lambda: model.index(0, 3).data() == "New Name")


def test_search_filters_across_columns_ignoring_case(qtbot: QtBot, ctx: FleetContext) -> None:
    populate(ctx.mirror)
    model = RecordTableModel(ctx, "vehicles")
    proxy = SearchProxy(model)
    qtbot.waitUntil(lambda: model.rowCount() == 13)
    proxy.setFilterFixedString("hel-10")
    assert proxy.rowCount() == 10  # HEL-100 .. HEL-109
    proxy.setFilterFixedString("MIKKO")
    assert [proxy.index(r, 0).data() for r in range(proxy.rowCount())] == ["Van 02"]
    proxy.setFilterFixedString("")
    assert proxy.rowCount() == 13


def test_bursts_of_changes_coalesce_into_few_reloads(qtbot: QtBot, ctx: FleetContext) -> None:
    model = RecordTableModel(ctx, "drivers")
    qtbot.waitUntil(lambda: model.loads == 1)
    for i in range(30):
        ctx.fleet.create("drivers", {"name": f"Driver {i:02d}"})
    qtbot.waitUntil(lambda: model.rowCount() == 30)
    assert model.loads < 30
