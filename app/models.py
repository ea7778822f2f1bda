"""Table models over the store's repositories: one per collection, reloaded in the background when
the change signal says their collection (or a collection they show names from) changed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QIcon
from PySide6.QtWidgets import QApplication, QStyle

from app.context import FleetContext
from app.signals import Touched

ID_ROLE = Qt.ItemDataRole.UserRole
INVALID_ROLE = Qt.ItemDataRole.UserRole + 1
AnyIndex = QModelIndex | QPersistentModelIndex
Lookups = dict[str, dict[str, str]]  # collection -> id -> name


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[Any, Lookups], Any]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _geometry_kind(record: Any, _: Lookups) -> str:
    geometry = record.data.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind == "Point":
        radius = record.data.get("radius_m")
        return f"Circle {radius:g} m" if isinstance(radius, int | float) else "Circle"
    return str(kind or "")


def _stops(record: Any, _: Lookups) -> str:
    stops = record.data.get("stops")
    return str(len(stops)) if isinstance(stops, list) else ""


def _name_of(collection: str, field: str) -> Callable[[Any, Lookups], str]:
    def value(record: Any, lookups: Lookups) -> str:
        ref = getattr(record, field, None)
        if not ref:
            return ""
        return lookups.get(collection, {}).get(ref, f"(missing {ref[:8]})")

    return value


COLUMNS: dict[str, list[Column]] = {
    "vehicles": [
        Column("Name", lambda r, _: r.name),
        Column("Plate", lambda r, _: r.plate),
        Column("Device", lambda r, _: r.device_id),
        Column("Driver", _name_of("drivers", "driver_id")),
        Column("Status", lambda r, _: r.status),
        Column("Speed limit (km/h)", lambda r, _: r.speed_limit_kph),
    ],
    "drivers": [
        Column("Name", lambda r, _: r.name),
        Column("Phone", lambda r, _: r.phone),
        Column("Email", lambda r, _: r.email),
        Column("Licence", lambda r, _: r.license_number),
        Column("Licence expiry", lambda r, _: r.license_expiry),
        Column("Status", lambda r, _: r.status),
    ],
    "routes": [
        Column("Name", lambda r, _: r.name),
        Column("Vehicle", _name_of("vehicles", "vehicle_id")),
        Column("Corridor (m)", lambda r, _: r.corridor_m),
        Column("Stops", _stops),
        Column("Planned start", lambda r, _: r.planned_start),
    ],
    "geofences": [
        Column("Name", lambda r, _: r.name),
        Column("Kind", lambda r, _: r.kind),
        Column("Shape", _geometry_kind),
        Column("Speed limit (km/h)", lambda r, _: r.speed_limit_kph),
        Column("Active", lambda r, _: "yes" if r.active in (None, 1, True) else "no"),
    ],
}

# Which other collections' names a table shows, so their edits refresh it too.
LOOKUPS: dict[str, tuple[str, ...]] = {"vehicles": ("drivers",), "routes": ("vehicles",), "drivers": (),
                                       "geofences": ()}


def warning_icon() -> QIcon:
    style = QApplication.style()
    return style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)


class RecordTableModel(QAbstractTableModel):
    """Rows of one collection. Reloads run on a reader thread; overlapping requests coalesce."""

    refreshed = Signal()

    def __init__(self, ctx: FleetContext, collection: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.collection = collection
        self.columns = COLUMNS[collection]
        self._rows: list[Any] = []
        self._cells: list[list[str]] = []
        self._loading = False
        self._dirty = False
        self.loads = 0
        ctx.signals.changed.connect(self._on_changed)
        self.refresh()

    # -- loading ---------------------------------------------------------------------------------

    def _on_changed(self, _origin: str, touched: Touched) -> None:
        if self.collection in touched or any(c in touched for c in LOOKUPS[self.collection]):
            self.refresh()

    def refresh(self) -> None:
        if self._loading:
            self._dirty = True
            return
        self._loading = True
        self._dirty = False
        store, collection = self.ctx.store, self.collection

        columns = self.columns

        def load() -> tuple[list[Any], list[list[str]]]:
            repository = getattr(store, collection)
            records = repository.list()
            lookups: Lookups = {}
            for other in LOOKUPS[collection]:
                lookups[other] = {r.id: r.name or r.id for r in getattr(store, other).list()}
            # The cell texts too: formatting thousands of rows is work for the reader, not the UI.
            return records, [[_text(c.value(r, lookups)) for c in columns] for r in records]

        self.ctx.ops.read(load, self._loaded, self._load_failed)

    def _loaded(self, result: tuple[list[Any], list[list[str]]]) -> None:
        records, cells = result
        self.beginResetModel()
        self._rows, self._cells = records, cells
        self.endResetModel()
        self.loads += 1
        self._loading = False
        if self._dirty:
            self.refresh()
        else:
            self.refreshed.emit()

    def _load_failed(self, _exc: BaseException) -> None:
        self._loading = False
        if self._dirty:
            self.refresh()

    # -- Qt model ----------------------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.columns[section].title
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        record = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._cells[index.row()][index.column()]
        if role == ID_ROLE:
            return record.id
        if role == INVALID_ROLE:
            return record.invalid_reason
        if record.invalid_reason:
            if role == Qt.ItemDataRole.DecorationRole and index.column() == 0:
                return warning_icon()
            if role == Qt.ItemDataRole.ToolTipRole:
                return f"Invalid: {record.invalid_reason}"
            if role == Qt.ItemDataRole.ForegroundRole:
                return QBrush(QColor("#b71c1c"))
        return None

    # -- helpers -------------------------------------------------------------------------------------

    def record_at(self, row: int) -> Any:
        return self._rows[row]

    def row_of(self, record_id: str) -> int:
        for row, record in enumerate(self._rows):
            if record.id == record_id:
                return row
        return -1

    def ids(self) -> list[str]:
        return [r.id for r in self._rows]

    def names(self) -> list[str]:
        return [r.name or "" for r in self._rows]


class SearchProxy(QSortFilterProxyModel):
    """Case-insensitive search across every column; optionally only the records of one vehicle
    (routes in field mode)."""

    def __init__(self, source: RecordTableModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.source = source
        self.setSourceModel(source)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
        self._vehicle_filter = False
        self._vehicle_id: str | None = None

    def only_vehicle(self, vehicle_id: str | None) -> None:
        """Show only records whose vehicle_id is this one (none at all for None)."""
        if hasattr(self, "beginFilterChange"):  # Qt 6.10 on; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self._vehicle_filter, self._vehicle_id = True, vehicle_id
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._vehicle_filter, self._vehicle_id = True, vehicle_id
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        if self._vehicle_filter:
            vehicle_id = getattr(self.source.record_at(source_row), "vehicle_id", None)
            if self._vehicle_id is None or vehicle_id != self._vehicle_id:
                return False
        return super().filterAcceptsRow(source_row, source_parent)


def format_time(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")
