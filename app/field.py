"""Field mode: large touch-friendly controls to record the vehicle's track from a GPS source, with the
current speed and position, the outbox counts, and geofence and route-corridor alerts computed
locally (offline). Fleet data is read-only here: no edit buttons, no drawing on the map."""

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
"""


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
        """Watch the routes assigned to the vehicle; with none assigned, every route counts."""
        routes = [watched_route(r.id, r.data) for r in self.ctx.store.routes.list()]
        watcher = CorridorWatcher([r for r in routes if r is not None])
        if vehicle_id is not None and not watcher.routes_for(vehicle_id):
            watcher.unassigned_for = vehicle_id
        self.corridors = watcher

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

        self.load_routes(vehicle_id)
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
        self._last_pan = 0.0
        self.fixes_seen = 0

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
        self.vehicle.setObjectName("field_vehicle")
        self.record_button = QPushButton("● Record")
        self.record_button.setObjectName("record")
        self.record_button.clicked.connect(self.toggle_recording)
        grid.addWidget(QLabel("GPS source"), 0, 0)
        grid.addWidget(self.source, 0, 1)
        grid.addWidget(QLabel("Source setting"), 1, 0)
        grid.addWidget(self.source_param, 1, 1)
        grid.addWidget(QLabel("Vehicle"), 2, 0)
        grid.addWidget(self.vehicle, 2, 1)
        grid.addWidget(self.record_button, 3, 0, 1, 2)
        self.speed = QLabel("— km/h")
        self.speed.setObjectName("speed")
        self.position = QLabel("No fix yet")
        self.position.setObjectName("position")
        self.recording_state = QLabel("Not recording")
        self.recording_state.setObjectName("recording_state")
        self.outbox = QLabel("Outbox: —")
        self.outbox.setObjectName("outbox")
        grid.addWidget(self.speed, 4, 0, 1, 2)
        grid.addWidget(self.position, 5, 0, 1, 2)
        grid.addWidget(self.recording_state, 6, 0, 1, 2)
        grid.addWidget(self.outbox, 7, 0, 1, 2)
        grid.setRowStretch(8, 1)

        self.alerts = QListWidget()
        self.alerts.setObjectName("alerts")
        fleet_tabs = QTabWidget()
        fleet_tabs.addTab(self.alerts, "Alerts")
        self.collection_tabs: dict[str, CollectionTab] = {}
        for collection in ("vehicles", "routes", "geofences"):
            tab = CollectionTab(ctx, collection)
            self.collection_tabs[collection] = tab
            fleet_tabs.addTab(tab, collection.capitalize())

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(controls)
        left_layout.addWidget(fleet_tabs, 1)
        tiles = demo_mbtiles_path()
        self.map = MapView(options_for_tiles(tiles, read_only=True, online_tiles=ctx.settings.online_tiles),
                           tiles=tiles)
        self.map.setObjectName("map")
        self.map_controller = FleetMapController(ctx, self.map, self)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.map)
        splitter.setSizes([520, 760])
        container = QWidget()
        row = QHBoxLayout(container)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(splitter)
        self.setCentralWidget(container)

        self.status = FleetStatus(ctx, self.statusBar(), has_server=has_server)
        ctx.signals.changed.connect(self._on_changed)
        self._outbox_timer = QTimer(self)
        self._outbox_timer.setInterval(2000)
        self._outbox_timer.timeout.connect(self.refresh_outbox)
        self._outbox_timer.start()
        self._source_changed()
        self.refresh_vehicles()
        self.refresh_outbox()

    # -- set-up -----------------------------------------------------------------------------------------

    def _source_changed(self) -> None:
        key = self.source.currentData()
        self.source_param.setPlaceholderText(PARAM_HINTS.get(key, ""))

    def refresh_vehicles(self) -> None:
        store = self.ctx.store

        def load() -> list[tuple[str, str, str | None]]:
            return [(v.id, v.name or v.id, v.device_id) for v in store.vehicles.list()]

        self.ctx.ops.read(load, self._vehicles_loaded)

    def _vehicles_loaded(self, vehicles: list[tuple[str, str, str | None]]) -> None:
        current = self.vehicle.currentData() or self.ctx.settings.vehicle_id
        self.vehicle.clear()
        for vehicle_id, name, device in vehicles:
            self.vehicle.addItem(name, (vehicle_id, device))
        for i in range(self.vehicle.count()):
            if self.vehicle.itemData(i)[0] == (current[0] if isinstance(current, tuple) else current):
                self.vehicle.setCurrentIndex(i)

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
                raise ValueError("no route to simulate: assign a route to this vehicle first")
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
        routes = self.ctx.store.routes.list()
        mine = [r for r in routes if r.vehicle_id == vehicle_id] or routes
        for route in mine:
            geometry = route.data.get("geometry")
            if isinstance(geometry, dict) and geometry.get("type") == "LineString":
                return geometry
        return None

    def start_recording(self, source: Iterable[Fix] | None = None) -> bool:
        if self.recorder.recording:
            return False
        vehicle_id, _device = self.selected_vehicle()
        self.recorder.reset()
        try:
            fixes = source if source is not None else self.build_source()
            self.recorder.start(fixes, vehicle_id)
        except Exception as exc:
            self.recording_state.setText(f"Cannot record: {exc}")
            return False
        if vehicle_id is not None and vehicle_id != self.ctx.settings.vehicle_id:
            self.ctx.settings.vehicle_id = vehicle_id
            self.ctx.settings.save(self.ctx.profile_dir)
        self._first_fix_time = None
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
        self.record_button.setText("● Record")
        self.record_button.setProperty("recording", "false")
        self.record_button.style().polish(self.record_button)
        self.recording_state.setText(text)
        self.source.setEnabled(True)
        self.vehicle.setEnabled(True)
        self.refresh_outbox()

    @Slot(object)
    def _on_fix(self, fix: Fix) -> None:
        self.fixes_seen += 1
        if self._first_fix_time is None:
            # Alerts are the events of this recording: from its first fix's time on (a replayed
            # log has old fix times, so the wall clock would hide them).
            self._first_fix_time = fix.fix_time
        if time.monotonic() - self._last_pan > 2.0 and fix.vehicle_id:
            self._last_pan = time.monotonic()
            self.map.call("panToVehicle", fix.vehicle_id)
        self.speed.setText("— km/h" if fix.speed_kph is None else f"{fix.speed_kph:.0f} km/h")
        ns = "N" if fix.lat >= 0 else "S"
        ew = "E" if fix.lon >= 0 else "W"
        self.position.setText(f"{abs(fix.lat):.5f}° {ns}, {abs(fix.lon):.5f}° {ew}")

    # -- alerts and outbox --------------------------------------------------------------------------------

    def _on_changed(self, _origin: str, touched: Touched) -> None:
        if "events" in touched:
            self.refresh_alerts()
        if "positions" in touched:
            self.refresh_outbox()
        if "vehicles" in touched:
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
        outbox = self.ctx.store.positions
        self.ctx.ops.read(lambda: outbox.counts(), self._outbox_loaded)

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
        self.recorder.stop()
        if self.sync is not None:
            self.sync.stop()
        super().closeEvent(event)

