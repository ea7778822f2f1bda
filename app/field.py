"""Field mode: large touch-friendly controls to record the vehicle's track from a GPS source, with the
current speed and position, the outbox counts, and geofence and route-corridor alerts computed
locally (offline). Fleet data is read-only here: no edit buttons, no drawing on the map.

The window works for one vehicle: by default the one assigned to the signed-in user's driver
record (driver.email = the user's email, vehicle.driver_id = that driver); choosing another asks
first. Only that vehicle's routes and corridors are shown and watched, and the map follows it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.context import FleetContext
from app.corridor import CorridorWatcher, watched_route
from app.details import describe_event
from app.dispatcher import CollectionTab
from app.fleetmap import FleetMapController
from app.mapview import MapView, options_for_tiles
from app.signals import Touched
from app.statusbar import FleetStatus
from app.sync_thread import SyncThread
from maps.assets import demo_mbtiles_path
from storage import Store
from storage.events import Event
from storage.positions import Fix, OutboxCounts

log = logging.getLogger(__name__)

SOURCES = {
    "simulator": "Simulator (drives the vehicle's route)",
    "file": "NMEA file replay",
    "serial": "Serial NMEA receiver",
    "gpsd": "gpsd",
}
PARAM_HINTS = {"simulator": "speed in km/h (default 40)", "file": "path to an NMEA log",
               "serial": "/dev/ttyUSB0[:4800]", "gpsd": "localhost:2947"}

FIELD_STYLE = """
QWidget { font-size: 17px; }
QPushButton { min-height: 56px; padding: 6px 18px; font-size: 20px; }
QComboBox, QLineEdit { min-height: 44px; }
QLabel#speed { font-size: 56px; font-weight: bold; }
QLabel#position { font-size: 20px; }
QListWidget#alerts { font-size: 19px; }
QPushButton#record[recording="true"] { background: #c62828; color: white; }
QPushButton[toggle="true"] { padding: 6px 12px; font-size: 18px; }
QPushButton[toggle="true"]:checked { background: #1565c0; color: white; }
QLabel#vehicle_note { color: #455a64; font-size: 15px; }
QStatusBar QLabel, QStatusBar QToolButton { font-size: 15px; }
"""
LAYERS = {"routes": "Routes", "corridors": "Corridors", "geofences": "Geofences"}
FOLLOW_INTERVAL_MS = 1000  # at most one pan a second while following, and always to the newest fix
NO_SPEED = "— km/h"


def assigned_vehicle(store: Store, email: str | None) -> str | None:
    """The vehicle whose driver_id is a driver record with this email (case-insensitive); the
    first by name when several are. Reader thread."""
    wanted = (email or "").strip().lower()
    if not wanted:
        return None
    drivers = {d.id for d in store.drivers.list() if (d.email or "").strip().lower() == wanted}
    for vehicle in store.vehicles.list():
        if vehicle.driver_id in drivers:
            return vehicle.id
    return None



class FieldRecorder(QObject):
    """Runs sync.gps.recorder.Recorder on a worker thread; everything it reports arrives by signal."""

    fix_seen = Signal(object)  # Fix, as it arrives (before filtering)
    corridor_event = Signal(object)  # Event
    stopped = Signal(str)  # "" when the source ended, else the error
    _fix_relay = Signal(object)
    _event_relay = Signal(object)
    _stopped_relay = Signal(str)

    def __init__(self, ctx: FleetContext, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.recorder: Any = None
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.corridors = CorridorWatcher()
        self.on_batch: Callable[[int], None] | None = None
        self._source_stopper: Callable[[], None] | None = None
        self._fix_relay.connect(self.fix_seen, Qt.ConnectionType.QueuedConnection)
        self._event_relay.connect(self.corridor_event, Qt.ConnectionType.QueuedConnection)
        self._stopped_relay.connect(self.stopped, Qt.ConnectionType.QueuedConnection)

    @property
    def recording(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def load_routes(self, vehicle_id: str | None) -> None:
        """Watch the routes assigned to the vehicle (the ones the map shows), and no others."""
        records = self.ctx.store.routes.for_vehicle(vehicle_id) if vehicle_id is not None else []
        routes = [watched_route(r.id, r.data) for r in records]
        self.corridors = CorridorWatcher([r for r in routes if r is not None])

    def reset(self) -> None:
        """A fresh stop flag for the next recording (sources built for it wait on this one)."""
        self.stop_event = threading.Event()
        self._source_stopper = None

    def start(self, source: Iterable[Fix], vehicle_id: str | None, *, batch_size: int = 10,
              flush_interval_s: float = 2.0) -> None:
        """Record until stop() or until the source ends."""
        if self.recording:
            return
        from sync.gps.recorder import Recorder  # the field GPS pipeline (optional in lean builds)

        self.corridors = CorridorWatcher()
        store, signals = self.ctx.store, self.ctx.signals

        def batch_written(stored: int) -> None:
            touched: Touched = {"positions": set(), "events": set()}
            if vehicle_id is not None:
                touched["latest_fixes"] = {vehicle_id}
            signals.notify("field", touched)
            if self.on_batch is not None:
                self.on_batch(stored)

        self.recorder = Recorder(store, self._tapped(source, vehicle_id), vehicle_id=vehicle_id,
                                 batch_size=batch_size, flush_interval_s=flush_interval_s, on_batch=batch_written)
        self._thread = threading.Thread(target=self._run, name="field-recorder", daemon=True)
        self._thread.start()

    def _tapped(self, source: Iterable[Fix], vehicle_id: str | None) -> Iterator[Fix]:
        self.load_routes(vehicle_id)  # here, on the recording thread: a store read
        for fix in source:
            if self.stop_event.is_set():
                return
            self._fix_relay.emit(fix)
            vid = fix.vehicle_id or vehicle_id
            if vid is not None:
                events = self.corridors.process(vid, fix.fix_time, fix.lon, fix.lat, fix.speed_kph)
                if events:
                    self.ctx.store.events.add_many(events)
                    self.ctx.signals.notify("field", {"events": {vid}})
                    for event in events:
                        self._event_relay.emit(event)
            yield fix

    def _run(self) -> None:
        error = ""
        try:
            self.recorder.run()
        except Exception as exc:  # a vanished serial port or gpsd: report it, keep what was recorded
            log.exception("recording stopped")
            error = str(exc) or type(exc).__name__
        self._stopped_relay.emit(error)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.recorder is not None:
            self.recorder.stop()
        if self._source_stopper is not None:
            self._source_stopper()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def set_source_stopper(self, stopper: Callable[[], None] | None) -> None:
        self._source_stopper = stopper


class FieldWindow(QMainWindow):
    def __init__(self, ctx: FleetContext, *, has_server: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        ctx.read_only = True  # the field role never edits fleet data
        self.ctx = ctx
        self.sync: SyncThread | None = None
        self.session_keeper: QObject | None = None  # set by app.launch when signed in to a server
        self.setObjectName("field_window")
        self.setWindowTitle("WebHost Fleet — Field")
        self.setStyleSheet(FIELD_STYLE)
        self.resize(1280, 800)
        self.alert_texts: list[str] = []
        self._seen_events: set[tuple[Any, ...]] = set()
        self._first_fix_time: float | None = None
        self._recording = False  # fixes still queued from a stopped recording are not shown
        self.fixes_seen = 0
        self.assigned_vehicle_id: str | None = None
        self.vehicle_names: dict[str, str] = {}
        self._vehicle_id: str | None = None  # the vehicle recordings go to (the drop-down's choice)
        self._user_chose = False  # the choice was made here, not taken from the assignment
        self._filling = False  # the drop-down is being filled or reset by code
        self._last_fix: tuple[float, float] | None = None
        self._follow_pending = False

        self.recorder = FieldRecorder(ctx, self)
        self.recorder.fix_seen.connect(self._on_fix)
        self.recorder.stopped.connect(self._on_stopped)

        controls = QWidget()
        grid = QGridLayout(controls)
        self.source = QComboBox()
        self.source.setObjectName("gps_source")
        for key, text in SOURCES.items():
            self.source.addItem(text, key)
        self.source.currentIndexChanged.connect(self._source_changed)
        self.source_param = QLineEdit()
        self.source_param.setObjectName("gps_param")
        self.vehicle = QComboBox()
        for combo in (self.source, self.vehicle):
            # Long entries must not widen the window beyond a small vehicle screen.
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self.vehicle.setObjectName("field_vehicle")
        self.vehicle.setPlaceholderText("Choose your vehicle…")
        self.vehicle.currentIndexChanged.connect(self._vehicle_changed)
        self.vehicle_note = QLabel("")
        self.vehicle_note.setObjectName("vehicle_note")
        self.vehicle_note.setWordWrap(True)
        self.record_button = QPushButton("● Record")
        self.record_button.setObjectName("record")
        self.record_button.clicked.connect(self.toggle_recording)
        self.record_button.setEnabled(False)
        grid.addWidget(QLabel("GPS source"), 0, 0)
        grid.addWidget(self.source, 0, 1)
        grid.addWidget(QLabel("Source setting"), 1, 0)
        grid.addWidget(self.source_param, 1, 1)
        grid.addWidget(QLabel("Vehicle"), 2, 0)
        grid.addWidget(self.vehicle, 2, 1)
        grid.addWidget(self.vehicle_note, 3, 1)
        grid.addWidget(self.record_button, 4, 0, 1, 2)
        self.speed = QLabel(NO_SPEED)
        self.speed.setObjectName("speed")
        self.position = QLabel("No fix yet")
        self.position.setObjectName("position")
        self.recording_state = QLabel("Not recording")
        self.recording_state.setObjectName("recording_state")
        self.outbox = QLabel("Outbox: —")
        self.outbox.setObjectName("outbox")
        grid.addWidget(self.speed, 5, 0, 1, 2)
        grid.addWidget(self.position, 6, 0, 1, 2)
        grid.addWidget(self.recording_state, 7, 0, 1, 2)
        grid.addWidget(self.outbox, 8, 0, 1, 2)
        grid.setRowStretch(9, 1)

        self.alerts = QListWidget()
        self.alerts.setObjectName("alerts")
        fleet_tabs = QTabWidget()
        fleet_tabs.addTab(self.alerts, "Alerts")
        self.collection_tabs: dict[str, CollectionTab] = {}
        for collection in ("vehicles", "routes", "geofences"):
            tab = CollectionTab(ctx, collection)
            self.collection_tabs[collection] = tab
            fleet_tabs.addTab(tab, collection.capitalize())
        self.collection_tabs["routes"].proxy.only_vehicle(None)  # the vehicle's own routes, once chosen

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(controls)
        left_layout.addWidget(fleet_tabs, 1)
        tiles = demo_mbtiles_path()
        self.map = MapView(options_for_tiles(tiles, read_only=True, online_tiles=ctx.settings.online_tiles),
                           tiles=tiles)
        self.map.setObjectName("map")
        self.map_controller = FleetMapController(ctx, self.map, self)
        self.map_controller.show_routes_of(None)
        self.map.ready.connect(self._apply_layers)
        self.map.bridge.user_moved.connect(self._user_moved_map)

        toggles = QWidget()
        toggle_row = QHBoxLayout(toggles)
        toggle_row.setContentsMargins(6, 6, 6, 0)
        self.follow = self._toggle_button("Follow vehicle", "follow")
        self.follow.toggled.connect(self._follow_toggled)
        toggle_row.addWidget(self.follow)
        toggle_row.addStretch(1)
        self.layer_buttons: dict[str, QPushButton] = {}
        for name, text in LAYERS.items():
            button = self._toggle_button(text, f"layer_{name}")
            button.toggled.connect(lambda on, layer=name: self.map.call("setLayerVisible", layer, on))
            self.layer_buttons[name] = button
            toggle_row.addWidget(button)
        map_side = QWidget()
        map_layout = QVBoxLayout(map_side)
        map_layout.setContentsMargins(0, 0, 0, 0)
        map_layout.addWidget(toggles)
        map_layout.addWidget(self.map, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(map_side)
        splitter.setSizes([520, 760])
        container = QWidget()
        row = QHBoxLayout(container)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(splitter)
        self.setCentralWidget(container)

        self.status = FleetStatus(ctx, self.statusBar(), has_server=has_server)
        self.status.counts_changed.connect(self._outbox_loaded)
        ctx.signals.changed.connect(self._on_changed)
        self._follow_timer = QTimer(self)
        self._follow_timer.setSingleShot(True)
        self._follow_timer.setInterval(FOLLOW_INTERVAL_MS)
        self._follow_timer.timeout.connect(self._follow_tick)
        self._source_changed()
        self.refresh_vehicles()

    def _toggle_button(self, text: str, name: str) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(name)
        button.setCheckable(True)
        button.setChecked(True)
        button.setProperty("toggle", "true")
        return button

    # -- set-up -----------------------------------------------------------------------------------------

    def _source_changed(self) -> None:
        key = self.source.currentData()
        self.source_param.setPlaceholderText(PARAM_HINTS.get(key, ""))

    def refresh_vehicles(self) -> None:
        store, email = self.ctx.store, self.ctx.settings.email

        def load() -> tuple[list[tuple[str, str, str | None]], str | None]:
            vehicles: list[tuple[str, str, str | None]] = [(v.id, v.name or v.id, v.device_id)
                                                           for v in store.vehicles.list()]
            return vehicles, assigned_vehicle(store, email)

        self.ctx.ops.read(load, self._vehicles_loaded)

    def _vehicles_loaded(self, loaded: tuple[list[tuple[str, str, str | None]], str | None]) -> None:
        vehicles, assigned = loaded
        self.assigned_vehicle_id = assigned
        self.vehicle_names = {vehicle_id: name for vehicle_id, name, _device in vehicles}
        # A choice made here (or a running recording) stays; otherwise the assignment decides,
        # and with nothing assigned the drop-down stays empty until the user chooses.
        keep = self._vehicle_id if (self._user_chose or self.recorder.recording) else None
        target = keep if keep in self.vehicle_names else assigned
        self._user_chose = self._user_chose and target == keep
        self._filling = True
        try:
            self.vehicle.clear()
            for vehicle_id, name, device in vehicles:
                self.vehicle.addItem(name, (vehicle_id, device))
            self._select(target)
        finally:
            self._filling = False
        self._vehicle_id = target
        self._vehicle_applied()

    def _select(self, vehicle_id: str | None) -> None:
        index = -1
        for i in range(self.vehicle.count()):
            if self.vehicle.itemData(i)[0] == vehicle_id:
                index = i
        self.vehicle.setCurrentIndex(index)

    def _vehicle_changed(self, index: int) -> None:
        if self._filling:
            return
        data = self.vehicle.itemData(index) if index >= 0 else None
        chosen = data[0] if data else None
        if chosen == self._vehicle_id:
            return
        assigned = self.assigned_vehicle_id
        if chosen is not None and assigned is not None and chosen != assigned and not self._confirm_other(chosen):
            self._filling = True
            try:
                self._select(self._vehicle_id)
            finally:
                self._filling = False
            return
        self._vehicle_id = chosen
        self._user_chose = chosen is not None
        self._vehicle_applied()

    def _confirm_other(self, vehicle_id: str) -> bool:
        assigned = self.vehicle_names.get(self.assigned_vehicle_id or "", "another vehicle")
        other = self.vehicle_names.get(vehicle_id, vehicle_id)
        answer = QMessageBox.question(
            self, "Record to another vehicle?",
            f"{assigned} is the vehicle assigned to you. Record to {other} instead?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _vehicle_applied(self) -> None:
        """The chosen vehicle decides what Record does, the note, and which routes are shown."""
        vehicle_id, assigned = self._vehicle_id, self.assigned_vehicle_id
        assigned_name = self.vehicle_names.get(assigned or "", "")
        if assigned is None:
            note = ("No vehicle is assigned to you: choose the one you are in." if vehicle_id is None
                    else f"Chosen here: {self.vehicle_names.get(vehicle_id, vehicle_id)} (none is assigned to you).")
        elif vehicle_id == assigned:
            note = f"Assigned to you: {assigned_name}"
        elif vehicle_id is None:
            note = f"Assigned to you: {assigned_name}. Choose a vehicle to record."
        else:
            note = f"Not your assigned vehicle ({assigned_name})."
        self.vehicle_note.setText(note)
        self.record_button.setEnabled(self.recorder.recording or vehicle_id is not None)
        self.map_controller.show_routes_of(vehicle_id)
        self.collection_tabs["routes"].proxy.only_vehicle(vehicle_id)

    def selected_vehicle(self) -> tuple[str | None, str]:
        data = self.vehicle.currentData()
        if not data:
            return None, "field-device"
        vehicle_id, device = data
        return vehicle_id, device or f"field-{vehicle_id[:8]}"

    # -- recording --------------------------------------------------------------------------------------

    def toggle_recording(self) -> None:
        if self.recorder.recording:
            self.stop_recording()
        else:
            self.start_recording()

    def build_source(self) -> Iterable[Fix]:
        """The chosen GPS source, as an iterable of fixes (imported lazily from sync.gps)."""
        key = self.source.currentData()
        param = self.source_param.text().strip()
        vehicle_id, device_id = self.selected_vehicle()
        stop = self.recorder.stop_event
        if key == "simulator":
            from sync.gps.simulator import RouteSimulator

            route = self._route_for(vehicle_id)
            if route is None:
                raise ValueError("no route to simulate: this vehicle has no route assigned")
            speed = float(param) if param else 40.0
            simulator = RouteSimulator(route, speed_kph=speed, device_id=device_id, vehicle_id=vehicle_id,
                                       loop=True, realtime=True, stop=stop)
            return simulator
        if key == "file":
            from sync.gps.nmea import parse_file

            if not param:
                raise ValueError("choose an NMEA log file to replay")
            return parse_file(param, device_id, vehicle_id=vehicle_id)
        if key == "serial":
            from sync.gps.nmea import read_serial

            port, _, baud = (param or "/dev/ttyUSB0").partition(":")
            return read_serial(port, int(baud or 4800), device_id, vehicle_id=vehicle_id, stop=stop)
        from sync.gps.gpsd import GpsdClient

        host, _, port = (param or "localhost:2947").partition(":")
        client = GpsdClient(device_id, host=host, port=int(port or 2947), vehicle_id=vehicle_id)
        self.recorder.set_source_stopper(client.stop)
        return client

    def _route_for(self, vehicle_id: str | None) -> dict[str, Any] | None:
        if vehicle_id is None:
            return None
        for route in self.ctx.store.routes.for_vehicle(vehicle_id):
            geometry = route.data.get("geometry")
            if isinstance(geometry, dict) and geometry.get("type") == "LineString":
                return geometry
        return None

    def start_recording(self, source: Iterable[Fix] | None = None) -> bool:
        if self.recorder.recording:
            return False
        vehicle_id, _device = self.selected_vehicle()
        if vehicle_id is None:
            self.recording_state.setText("Cannot record: choose the vehicle you are in first")
            return False
        self.recorder.reset()
        try:
            fixes = source if source is not None else self.build_source()
            self.recorder.start(fixes, vehicle_id)
        except Exception as exc:
            self.recording_state.setText(f"Cannot record: {exc}")
            return False
        self._recording = True
        self._first_fix_time = None
        self._last_fix = None
        self.record_button.setText("■ Stop")
        self.record_button.setProperty("recording", "true")
        self.record_button.style().polish(self.record_button)
        self.recording_state.setText(f"Recording ({self.source.currentText()})")
        self.source.setEnabled(False)
        self.vehicle.setEnabled(False)
        if self.sync is not None:
            self.recorder.on_batch = lambda _stored: self.sync.wake_uploader() if self.sync else None
        return True

    def stop_recording(self) -> None:
        self.recorder.stop()
        self._recording_ended("Stopped")

    def _on_stopped(self, error: str) -> None:
        self._recording_ended(f"Recording stopped: {error}" if error else "Source finished")

    def _recording_ended(self, text: str) -> None:
        self._recording = False
        self.record_button.setText("● Record")
        self.record_button.setProperty("recording", "false")
        self.record_button.style().polish(self.record_button)
        self.record_button.setEnabled(self._vehicle_id is not None)
        self.recording_state.setText(text)
        self.speed.setText(NO_SPEED)  # a speed is only true while fixes arrive
        self.source.setEnabled(True)
        self.vehicle.setEnabled(True)
        self.refresh_outbox()

    @Slot(object)
    def _on_fix(self, fix: Fix) -> None:
        if not self._recording:
            return
        self.fixes_seen += 1
        if self._first_fix_time is None:
            # Alerts are the events of this recording: from its first fix's time on (a replayed
            # log has old fix times, so the wall clock would hide them).
            self._first_fix_time = fix.fix_time
        self._last_fix = (fix.lon, fix.lat)
        if self.follow.isChecked():
            self._follow()
        self.speed.setText(NO_SPEED if fix.speed_kph is None else f"{fix.speed_kph:.0f} km/h")
        ns = "N" if fix.lat >= 0 else "S"
        ew = "E" if fix.lon >= 0 else "W"
        self.position.setText(f"{abs(fix.lat):.5f}° {ns}, {abs(fix.lon):.5f}° {ew}")

    # -- the map: following the vehicle, layers -------------------------------------------------------

    def _follow(self) -> None:
        """Pan to the newest fix now, or (when a pan was just made) once the interval is over: the
        map never lags behind the last fix, and never pans more than once a second."""
        if self._follow_timer.isActive():
            self._follow_pending = True
            return
        self._pan_to_last_fix()
        self._follow_timer.start()

    def _follow_tick(self) -> None:
        if self._follow_pending and self.follow.isChecked():
            self._follow_pending = False
            self._pan_to_last_fix()
            self._follow_timer.start()

    def _pan_to_last_fix(self) -> None:
        if self._last_fix is not None:
            self.map.call("followPosition", *self._last_fix)

    def _follow_toggled(self, on: bool) -> None:
        if on and self._recording:
            self._follow_timer.stop()
            self._follow()

    def _user_moved_map(self) -> None:
        # Dragging the map means the user wants to look elsewhere: stop pulling it back.
        self.follow.setChecked(False)

    def _apply_layers(self) -> None:
        """After (re)loading the page, hide again what the toggles say is hidden."""
        for name, button in self.layer_buttons.items():
            if not button.isChecked():
                self.map.call("setLayerVisible", name, False)

    # -- alerts and outbox --------------------------------------------------------------------------------

    def _on_changed(self, _origin: str, touched: Touched) -> None:
        if "events" in touched:
            self.refresh_alerts()
        if "vehicles" in touched or "drivers" in touched:
            self.refresh_vehicles()

    def refresh_alerts(self) -> None:
        store = self.ctx.store
        since = None if self._first_fix_time is None else self._first_fix_time - 1

        def load() -> list[tuple[tuple[Any, ...], float, str]]:
            vehicles: dict[str, str] = {v.id: v.name or v.id for v in store.vehicles.list()}
            geofences: dict[str, str] = {g.id: g.name or g.id for g in store.geofences.list()}
            routes: dict[str, str] = {r.id: r.name or r.id for r in store.routes.list()}
            events: list[Event] = store.events.recent(since=since, limit=100)
            return [((e.vehicle_id, e.kind, e.event_time, e.geofence_id, e.route_id), e.event_time,
                     describe_event(e, vehicles, geofences, routes)) for e in reversed(events)]

        self.ctx.ops.read(load, self._alerts_loaded)

    def _alerts_loaded(self, rows: list[tuple[tuple[Any, ...], float, str]]) -> None:
        for key, t, text in rows:
            if key in self._seen_events:
                continue
            self._seen_events.add(key)
            line = f"{time.strftime('%H:%M:%S', time.localtime(t))}  {text}"
            self.alert_texts.append(text)
            self.alerts.insertItem(0, line)

    def refresh_outbox(self) -> None:
        """The status bar reads the counts; this line shows what it read (one source)."""
        self.status.refresh_counts()

    def _outbox_loaded(self, counts: OutboxCounts) -> None:
        failed = f" · {counts.failed} failed" if counts.failed else ""
        self.outbox.setText(f"Outbox: {counts.pending} waiting · {counts.uploaded} uploaded{failed}")

    # -- sync --------------------------------------------------------------------------------------------

    def attach_sync(self, sync: SyncThread) -> None:
        self.sync = sync
        sync.status_changed.connect(self.status.set_sync_status)
        sync.upload_status_changed.connect(lambda _status: self.refresh_outbox())
        self.status.set_sync_status(sync.status)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._follow_timer.stop()
        self.recorder.stop()
        if self.sync is not None:
            self.sync.stop()
        super().closeEvent(event)
