"""The vehicle details panel (latest fix, driver, speed, history chart) and the events list.

History queries run on a reader thread; the chart's cursor moves a marker along the track on the
map through the bridge's setCursor().
"""

from __future__ import annotations

import bisect
import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QDateTime, Qt, Signal
from PySide6.QtWidgets import (
    QDateTimeEdit,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.context import FleetContext
from app.history import Track, load_track
from app.mapview import MapView
from app.models import format_time
from app.signals import Touched
from storage.events import Event

pg.setConfigOptions(antialias=True, background="w", foreground="#333")

ServerSession = Callable[[], tuple[str, str] | None]


class VehicleDetails(QWidget):
    track_loaded = Signal(object)  # Track
    cursor_moved = Signal(int)

    def __init__(self, ctx: FleetContext, view: MapView, server: ServerSession | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.view = view
        self.server = server
        self.vehicle_id: str | None = None
        self.track: Track | None = None
        self._times: list[float] = []

        layout = QVBoxLayout(self)
        self.title = QLabel("Select a vehicle")
        self.title.setObjectName("details_title")
        self.title.setStyleSheet("font-weight: bold; font-size: 14px;")
        layout.addWidget(self.title)
        form = QFormLayout()
        self.driver = QLabel("—")
        self.device = QLabel("—")
        self.fix = QLabel("—")
        self.speed = QLabel("—")
        self.invalid = QLabel("")
        self.invalid.setStyleSheet("color: #b71c1c;")
        self.invalid.setWordWrap(True)
        for name, widget in (("Driver", self.driver), ("Device", self.device), ("Latest fix", self.fix),
                             ("Speed", self.speed)):
            widget.setObjectName(f"details_{name.lower().replace(' ', '_')}")
            form.addRow(name, widget)
        layout.addLayout(form)
        layout.addWidget(self.invalid)

        history = QGroupBox("History")
        history_layout = QVBoxLayout(history)
        row = QHBoxLayout()
        now = QDateTime.currentDateTime()
        self.start_edit = QDateTimeEdit(now.addSecs(-24 * 3600))
        self.end_edit = QDateTimeEdit(now.addSecs(3600))
        for edit in (self.start_edit, self.end_edit):
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setCalendarPopup(True)
        self.show_button = QPushButton("Show track")
        self.show_button.setObjectName("show_track")
        self.show_button.clicked.connect(self.load_history)
        self.show_button.setEnabled(False)
        row.addWidget(QLabel("From"))
        row.addWidget(self.start_edit)
        row.addWidget(QLabel("to"))
        row.addWidget(self.end_edit)
        row.addWidget(self.show_button)
        history_layout.addLayout(row)
        self.history_status = QLabel("")
        self.history_status.setObjectName("history_status")
        history_layout.addWidget(self.history_status)

        self.chart = pg.GraphicsLayoutWidget()
        self.chart.setMinimumHeight(180)
        self.speed_plot = self.chart.addPlot(row=0, col=0, axisItems={"bottom": pg.DateAxisItem()})
        self.speed_plot.setLabel("left", "km/h")
        self.speed_plot.showGrid(x=True, y=True, alpha=0.3)
        self.alt_plot = self.chart.addPlot(row=1, col=0, axisItems={"bottom": pg.DateAxisItem()})
        self.alt_plot.setLabel("left", "altitude m")
        self.alt_plot.setXLink(self.speed_plot)
        self.alt_plot.showGrid(x=True, y=True, alpha=0.3)
        self.speed_curve = self.speed_plot.plot(pen=pg.mkPen("#1565c0", width=2))
        self.alt_curve = self.alt_plot.plot(pen=pg.mkPen("#6d4c41", width=2))
        self.chart_cursor = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen("#ef6c00", width=2))
        self.chart_cursor.setVisible(False)
        self.speed_plot.addItem(self.chart_cursor)
        self.chart_cursor.sigPositionChanged.connect(self._cursor_changed)
        self.cursor_label = QLabel("")
        self.cursor_label.setObjectName("cursor_label")
        history_layout.addWidget(self.chart)
        history_layout.addWidget(self.cursor_label)
        layout.addWidget(history)
        ctx.signals.changed.connect(self._on_changed)

    # -- the selected vehicle ----------------------------------------------------------------------------

    def show_vehicle(self, vehicle_id: str | None) -> None:
        self.vehicle_id = vehicle_id
        self.show_button.setEnabled(vehicle_id is not None)
        self.refresh()

    def refresh(self) -> None:
        vehicle_id, store = self.vehicle_id, self.ctx.store
        if vehicle_id is None:
            self.title.setText("Select a vehicle")
            return

        def load() -> tuple[Any, Any, Any]:
            vehicle = store.vehicles.get(vehicle_id)
            driver = store.drivers.get(vehicle.driver_id) if vehicle and vehicle.driver_id else None
            return vehicle, driver, store.vehicles.latest_fix(vehicle_id)

        self.ctx.ops.read(load, self._show)

    def _show(self, result: tuple[Any, Any, Any]) -> None:
        vehicle, driver, fix = result
        if vehicle is None or vehicle.id != self.vehicle_id:
            if vehicle is None:
                self.title.setText("Vehicle deleted")
            return
        self.title.setText(f"{vehicle.name or vehicle.id}" + (f"  ({vehicle.plate})" if vehicle.plate else ""))
        self.driver.setText(driver.name if driver is not None else ("(missing)" if vehicle.driver_id else "—"))
        self.device.setText(vehicle.device_id or "—")
        self.invalid.setText(f"\u26a0 Invalid: {vehicle.invalid_reason}" if vehicle.invalid_reason else "")
        if fix is None:
            self.fix.setText("no fix yet")
            self.speed.setText("—")
        else:
            self.fix.setText(f"{format_time(fix.fix_time)}  ({fix.lat:.5f}, {fix.lon:.5f})")
            self.speed.setText("—" if fix.speed_kph is None else f"{fix.speed_kph:.0f} km/h")

    def _on_changed(self, _origin: str, touched: Touched) -> None:
        if self.vehicle_id is None:
            return
        if self.vehicle_id in touched.get("vehicles", ()) or self.vehicle_id in touched.get("latest_fixes", ()) \
                or "drivers" in touched:
            self.refresh()

    # -- history ----------------------------------------------------------------------------------------

    def set_range(self, start: float, end: float) -> None:
        self.start_edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(start)))
        self.end_edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(end) + 60))

    def load_history(self) -> None:
        if self.vehicle_id is None:
            return
        start = float(self.start_edit.dateTime().toSecsSinceEpoch())
        end = float(self.end_edit.dateTime().toSecsSinceEpoch())
        vehicle_id, store, server = self.vehicle_id, self.ctx.store, self.server
        self.history_status.setText("Loading…")
        self.show_button.setEnabled(False)
        self.ctx.ops.read(lambda: load_track(store, vehicle_id, start, end, server), self._history_loaded,
                          self._history_failed)

    def _history_failed(self, exc: BaseException) -> None:
        self.show_button.setEnabled(True)
        self.history_status.setText(f"History failed: {exc}")

    def _history_loaded(self, track: Track) -> None:
        self.show_button.setEnabled(True)
        if track.vehicle_id != self.vehicle_id:
            return
        self.track = track
        self._times = [p.t for p in track.points]
        speeds = [p.speed_kph or 0.0 for p in track.points]
        altitudes = [p.altitude if p.altitude is not None else float("nan") for p in track.points]
        self.speed_curve.setData(self._times, speeds)
        self.alt_curve.setData(self._times, altitudes, connect="finite")
        text = f"{len(track.points)} fixes ({track.source})"
        self.history_status.setText(text + (f" — {track.detail}" if track.detail else ""))
        self.view.call("showTrack", track.coords())
        if self._times:
            self.chart_cursor.setVisible(True)
            self.chart_cursor.setValue(self._times[0])
            self.speed_plot.enableAutoRange()
        else:
            self.chart_cursor.setVisible(False)
        self.track_loaded.emit(track)

    def move_cursor_to(self, index: int) -> None:
        if 0 <= index < len(self._times):
            self.chart_cursor.setValue(self._times[index])

    def _cursor_changed(self) -> None:
        if not self._times or self.track is None:
            return
        x = float(self.chart_cursor.value())
        i = bisect.bisect_left(self._times, x)
        if i > 0 and (i == len(self._times) or x - self._times[i - 1] <= self._times[i] - x):
            i -= 1
        point = self.track.points[i]
        speed = "—" if point.speed_kph is None else f"{point.speed_kph:.0f} km/h"
        self.cursor_label.setText(f"{format_time(point.t)}  {speed}  ({point.lat:.5f}, {point.lon:.5f})")
        self.view.call("setCursor", i)
        self.cursor_moved.emit(i)


EVENT_TEXT = {
    "geofence_enter": "entered", "geofence_exit": "left", "overspeed": "overspeed",
    "route_deviation": "left route corridor", "route_return": "back on route",
}


def describe_event(event: Event, vehicles: Mapping[str, str], geofences: Mapping[str, str],
                   routes: Mapping[str, str]) -> str:
    what = EVENT_TEXT.get(event.kind, event.kind)
    if event.geofence_id:
        what += f" {geofences.get(event.geofence_id, event.geofence_id[:8])}"
    if event.route_id:
        what += f" {routes.get(event.route_id, event.route_id[:8])}"
    if event.kind == "overspeed" and event.speed_kph is not None:
        what += f" ({event.speed_kph:.0f} km/h)"
    return f"{vehicles.get(event.vehicle_id, event.vehicle_id[:8])} {what}"


class EventsPanel(QWidget):
    """Recent geofence, overspeed and route events (store.events.recent)."""

    refreshed = Signal()

    def __init__(self, ctx: FleetContext, parent: QWidget | None = None, *, limit: int = 200) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.limit = limit
        layout = QVBoxLayout(self)
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("events_table")
        self.table.setHorizontalHeaderLabels(["Time", "Event", "Source"])
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        layout.addWidget(self.table)
        self._loading = False
        self._dirty = False
        ctx.signals.changed.connect(self._on_changed)
        self.refresh()

    def _on_changed(self, _origin: str, touched: Touched) -> None:
        if "events" in touched or "vehicles" in touched:
            self.refresh()

    def refresh(self) -> None:
        if self._loading:
            self._dirty = True
            return
        self._loading = True
        self._dirty = False
        store, limit = self.ctx.store, self.limit

        def load() -> list[tuple[float, str, str]]:
            vehicles: dict[str, str] = {v.id: v.name or v.id for v in store.vehicles.list()}
            geofences: dict[str, str] = {g.id: g.name or g.id for g in store.geofences.list()}
            routes: dict[str, str] = {r.id: r.name or r.id for r in store.routes.list()}
            return [(e.event_time, describe_event(e, vehicles, geofences, routes), e.source)
                    for e in store.events.recent(limit=limit)]

        self.ctx.ops.read(load, self._loaded, lambda _e: setattr(self, "_loading", False))

    def _loaded(self, rows: list[tuple[float, str, str]]) -> None:
        self._loading = False
        if self._dirty:
            self.refresh()
            return
        self.table.setRowCount(len(rows))
        for i, (t, text, source) in enumerate(rows):
            stamp = dt.datetime.fromtimestamp(t).strftime("%H:%M:%S" if time.time() - t < 86400 else "%Y-%m-%d %H:%M")
            for j, value in enumerate((stamp, text, source)):
                item = QTableWidgetItem(value)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(i, j, item)
        self.refreshed.emit()

    def texts(self) -> list[str]:
        items = [self.table.item(i, 1) for i in range(self.table.rowCount())]
        return [item.text() for item in items if item is not None]
