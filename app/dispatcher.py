"""The dispatcher window: the live map beside tabs for vehicles, drivers, routes, geofences and events,
the selected vehicle's details and history, and the sync status bar."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QItemSelection, QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.context import FleetContext
from app.details import EventsPanel, VehicleDetails
from app.fleetmap import FleetMapController
from app.forms import TITLES, RecordDialog
from app.mapview import MapView, options_for_tiles
from app.models import ID_ROLE, RecordTableModel, SearchProxy
from app.statusbar import FleetStatus
from app.sync_thread import SyncThread
from app.transfer import Transfers
from maps.assets import demo_mbtiles_path
from maps.page import MapOptions

log = logging.getLogger(__name__)

ServerSession = Callable[[], tuple[str, str] | None]


class CollectionTab(QWidget):
    """Search box, add/edit/delete buttons and the table of one collection."""

    selected = Signal(str)  # record id

    def __init__(self, ctx: FleetContext, collection: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.collection = collection
        self.model = RecordTableModel(ctx, collection, self)
        self.proxy = SearchProxy(self.model, self)
        self.dialog: RecordDialog | None = None

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.search = QLineEdit()
        self.search.setObjectName(f"search_{collection}")
        self.search.setPlaceholderText(f"Search {collection}…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.setFilterFixedString)
        row.addWidget(self.search, 1)
        self.add_button = QPushButton("Add")
        self.edit_button = QPushButton("Edit")
        self.delete_button = QPushButton("Delete")
        for name, button in (("add", self.add_button), ("edit", self.edit_button), ("delete", self.delete_button)):
            button.setObjectName(f"{name}_{collection}")
            button.setVisible(not ctx.read_only)
            row.addWidget(button)
        self.add_button.clicked.connect(lambda: self.open_dialog(None))
        self.edit_button.clicked.connect(self.edit_selected)
        self.delete_button.clicked.connect(lambda: self.delete_selected(confirm=True))
        layout.addLayout(row)

        self.table = QTableView()
        self.table.setObjectName(f"table_{collection}")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        layout.addWidget(self.table)

    def visible_rows(self) -> int:
        return self.proxy.rowCount()

    def selected_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return None if not rows else str(rows[0].data(ID_ROLE))

    def select_id(self, record_id: str) -> bool:
        row = self.model.row_of(record_id)
        if row < 0:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        self.table.selectRow(index.row())
        self.table.scrollTo(index)
        return True

    def _selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        record_id = self.selected_id()
        if record_id is not None:
            self.selected.emit(record_id)

    def _double_clicked(self, index: QModelIndex) -> None:
        if not self.ctx.read_only:
            self.open_dialog(str(index.data(ID_ROLE)))

    def edit_selected(self) -> None:
        record_id = self.selected_id()
        if record_id is not None:
            self.open_dialog(record_id)

    def open_dialog(self, record_id: str | None) -> RecordDialog | None:
        if self.ctx.read_only:
            return None
        dialog = RecordDialog(self.ctx, self.collection, record_id, parent=self.window())
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        self.dialog = dialog
        dialog.saved.connect(self.select_after_save)
        dialog.finished.connect(lambda _r: dialog.deleteLater())
        dialog.open()
        return dialog

    def select_after_save(self, record_id: str) -> None:
        def select() -> None:
            self.select_id(record_id)
            self.model.refreshed.disconnect(select)

        self.model.refreshed.connect(select)

    def delete_selected(self, *, confirm: bool) -> None:
        record_id = self.selected_id()
        if record_id is None or self.ctx.read_only:
            return
        if confirm:
            answer = QMessageBox.question(self, f"Delete {TITLES[self.collection]}",
                                          f"Delete this {TITLES[self.collection]}? Other users will see it go.")
            if answer != QMessageBox.StandardButton.Yes:
                return
        fleet, collection = self.ctx.fleet, self.collection

        def failed(exc: BaseException) -> None:
            QMessageBox.warning(self, "Not deleted", str(exc))

        self.ctx.ops.write(lambda: fleet.delete(collection, record_id), None, failed)


class DispatcherWindow(QMainWindow):
    def __init__(self, ctx: FleetContext, *, has_server: bool = False, server: ServerSession | None = None,
                 map_options: MapOptions | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.sync: SyncThread | None = None
        self.session_keeper: QObject | None = None  # set by app.launch when signed in to a server
        self.setObjectName("dispatcher_window")
        title = "WebHost Fleet — Dispatcher"
        if ctx.settings.email:
            title += f" — {ctx.settings.email}"
        self.setWindowTitle(title + (" (read-only)" if ctx.read_only else ""))
        self.resize(1400, 860)

        tiles = demo_mbtiles_path()
        options = map_options or options_for_tiles(tiles, read_only=ctx.read_only,
                                                   online_tiles=ctx.settings.online_tiles)
        self.map = MapView(options, tiles=tiles)
        self.map.setObjectName("map")
        self.map_controller = FleetMapController(ctx, self.map, self)

        self.tabs = QTabWidget()
        self.collection_tabs: dict[str, CollectionTab] = {}
        for collection in ("vehicles", "drivers", "routes", "geofences"):
            tab = CollectionTab(ctx, collection)
            self.collection_tabs[collection] = tab
            self.tabs.addTab(tab, collection.capitalize())
        self.events = EventsPanel(ctx)
        self.tabs.addTab(self.events, "Events")
        self.details = VehicleDetails(ctx, self.map, server)
        self.collection_tabs["vehicles"].selected.connect(self.select_vehicle)
        self.map.bridge.vehicle_clicked.connect(self._vehicle_clicked)

        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(self.tabs)
        side.addWidget(self.details)
        side.setSizes([430, 430])
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.map)
        splitter.addWidget(side)
        splitter.setSizes([820, 580])
        self.setCentralWidget(splitter)

        self.status = FleetStatus(ctx, self.statusBar(), has_server=has_server)
        self.transfers = Transfers(ctx, self)
        self.transfers.finished.connect(lambda text: self.statusBar().showMessage(text, 15000))
        self._menus()

    # -- menus ---------------------------------------------------------------------------------------

    def _menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        if not self.ctx.read_only:
            importing = QAction("&Import GPX, GeoJSON or CSV…", self)
            importing.triggered.connect(self._import)
            file_menu.addAction(importing)
        exporting = QAction("&Export…", self)
        exporting.triggered.connect(self._export)
        file_menu.addAction(exporting)
        file_menu.addSeparator()
        quitting = QAction("&Quit", self)
        quitting.triggered.connect(self.close)
        file_menu.addAction(quitting)
        view = self.menuBar().addMenu("&View")
        fit = QAction("&Fit the fleet", self)
        fit.triggered.connect(lambda: self.map.call("fitFleet"))
        view.addAction(fit)
        self.online_tiles = QAction("Use &online OpenStreetMap tiles (needs internet)", self)
        self.online_tiles.setCheckable(True)
        self.online_tiles.setChecked(self.ctx.settings.online_tiles)
        self.online_tiles.toggled.connect(self._toggle_online_tiles)
        view.addAction(self.online_tiles)

    def _csv_collection(self) -> str:
        widget = self.tabs.currentWidget()
        return widget.collection if isinstance(widget, CollectionTab) else "vehicles"

    def _import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import", "", "Fleet data (*.geojson *.json *.gpx *.csv)")
        if path:
            self.transfers.import_file(path, self._csv_collection())

    def _export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export", "fleet.geojson",
                                              "GeoJSON (*.geojson);;GPX (*.gpx);;CSV of the current tab (*.csv)")
        if path:
            self.transfers.export_file(path, self._csv_collection())

    def _toggle_online_tiles(self, enabled: bool) -> None:
        self.ctx.settings.online_tiles = enabled
        self.ctx.settings.save(self.ctx.profile_dir)
        tiles = demo_mbtiles_path()
        self.map.options = options_for_tiles(tiles, read_only=self.ctx.read_only, online_tiles=enabled)
        self.map.recorder.allow_network = enabled
        self.map.load_page()

    # -- selection -----------------------------------------------------------------------------------

    def select_vehicle(self, vehicle_id: str) -> None:
        self.details.show_vehicle(vehicle_id)
        self.map.call("focusVehicle", vehicle_id)

    def _vehicle_clicked(self, vehicle_id: str) -> None:
        self.tabs.setCurrentWidget(self.collection_tabs["vehicles"])
        if not self.collection_tabs["vehicles"].select_id(vehicle_id):
            self.details.show_vehicle(vehicle_id)

    # -- sync ----------------------------------------------------------------------------------------

    def attach_sync(self, sync: SyncThread) -> None:
        self.sync = sync
        sync.status_changed.connect(self.status.set_sync_status)
        self.status.set_sync_status(sync.status)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.sync is not None:
            self.sync.stop()
        super().closeEvent(event)
