"""Import and export (GPX, GeoJSON, CSV) on the write worker, with a progress dialog that can cancel.

An import goes through the same validation as every edit: a record that breaks a rule is skipped
and reported, the others are created, in chunks of one local transaction each (so a cancelled
import keeps what it already created, and every chunk syncs like any edit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMessageBox, QProgressDialog, QWidget

from app.context import FleetContext
from app.formats import (
    FormatError,
    ImportItem,
    format_of,
    parse_csv,
    parse_geojson,
    parse_gpx,
    write_csv,
    write_geojson,
    write_gpx,
)
from app.ops import Op, Progress
from sync.mirror import Mirror
from sync.services import create_record
from sync.validation import ValidationError

log = logging.getLogger(__name__)

CHUNK = 100


@dataclass
class TransferResult:
    path: str
    total: int = 0
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    cancelled: bool = False

    def summary(self, verb: str) -> str:
        text = f"{verb} {self.done} of {self.total} from {Path(self.path).name}" if verb == "Imported" \
            else f"{verb} {self.done} records to {Path(self.path).name}"
        if self.cancelled:
            text += " (cancelled)"
        if self.failed:
            text += f"; {len(self.failed)} skipped: " + "; ".join(f"{what}: {why}" for what, why in self.failed[:5])
            if len(self.failed) > 5:
                text += "; …"
        return text


def read_items(path: str, csv_collection: str) -> list[ImportItem]:
    text = Path(path).read_text(encoding="utf-8-sig")
    kind = format_of(path)
    if kind == "geojson":
        return parse_geojson(text)
    if kind == "gpx":
        return parse_gpx(text)
    return parse_csv(text, csv_collection)


def import_items(mirror: Mirror, items: list[ImportItem], progress: Progress, result: TransferResult) -> TransferResult:
    result.total = len(items)
    for start in range(0, len(items), CHUNK):
        if progress.cancelled:
            result.cancelled = True
            break
        chunk = items[start:start + CHUNK]
        with mirror.edit() as document:
            for item in chunk:
                try:
                    create_record(document, item.collection, item.fields)
                except ValidationError as exc:
                    # Validation runs before anything is written, so the rest of the chunk is unaffected.
                    result.failed.append((item.label, "; ".join(f"{p.field} {p.reason}" for p in exc.problems)))
                else:
                    result.done += 1
        progress.report(min(start + CHUNK, len(items)), len(items), f"{result.done} imported")
    return result


def export_records(ctx: FleetContext, path: str, csv_collection: str, progress: Progress) -> TransferResult:
    store = ctx.store
    result = TransferResult(path)
    kind = format_of(path)
    progress.report(0, 3, "reading the store")
    if kind == "csv":
        records = [{**r.data, "id": r.id} for r in getattr(store, csv_collection).list()]
        text = write_csv(csv_collection, records)
        result.total = result.done = len(records)
    else:
        routes = [{**r.data, "id": r.id} for r in store.routes.list()]
        geofences = [{**g.data, "id": g.id} for g in store.geofences.list()]
        progress.report(1, 3, "writing")
        progress.check()
        if kind == "gpx":
            text = write_gpx(routes)
            result.total = result.done = len(routes)
        else:
            fixes = {f.vehicle_id: f for f in store.vehicles.latest_fixes()}
            vehicles = [({**v.data, "id": v.id}, fixes[v.id].lon, fixes[v.id].lat)
                        for v in store.vehicles.list() if v.id in fixes]
            text = write_geojson(routes, geofences, vehicles)
            result.total = result.done = len(routes) + len(geofences) + len(vehicles)
    progress.check()
    Path(path).write_text(text, encoding="utf-8")
    progress.report(3, 3, "done")
    return result


class Transfers(QObject):
    """Runs imports and exports with a progress dialog; `finished(text)` says what happened."""

    finished = Signal(str)

    def __init__(self, ctx: FleetContext, parent: QWidget | None = None, *, show_results: bool = True) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.parent_widget = parent
        self.show_results = show_results
        self.dialog: QProgressDialog | None = None
        self.last_result: TransferResult | None = None
        self.last_text = ""

    def _progress_dialog(self, title: str, op: Op[Any]) -> QProgressDialog:
        dialog = QProgressDialog(title, "Cancel", 0, 0, self.parent_widget)
        dialog.setObjectName("transfer_progress")
        dialog.setWindowTitle(title)
        # Not modal: a modal QProgressDialog runs the event loop inside setValue(), where the
        # operation's own "done" could delete the dialog under its feet.
        dialog.setWindowModality(Qt.WindowModality.NonModal)
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(op.progress.cancel)

        def on_progress(done: int, total: int, text: str) -> None:
            if self.dialog is not dialog:
                return
            dialog.setMaximum(max(total, 1))
            dialog.setValue(done)
            if text:
                dialog.setLabelText(f"{title}: {text}")

        op.relay.progress.connect(on_progress)
        dialog.show()
        self.dialog = dialog
        return dialog

    def import_file(self, path: str, csv_collection: str = "vehicles") -> Op[TransferResult]:
        if self.ctx.read_only:
            raise PermissionError("this profile is read-only (field role)")
        mirror = self.ctx.mirror
        result = TransferResult(path)

        def work(progress: Progress) -> TransferResult:
            items = read_items(path, csv_collection)
            progress.report(0, len(items), "parsed")
            return import_items(mirror, items, progress, result)

        op = self.ctx.ops.long(work, lambda r: self._done(r, "Imported"), lambda e: self._failed(e, result))
        self._progress_dialog("Importing", op)
        return op

    def export_file(self, path: str, csv_collection: str = "vehicles") -> Op[TransferResult]:
        ctx = self.ctx
        op = ctx.ops.long(lambda progress: export_records(ctx, path, csv_collection, progress),
                          lambda r: self._done(r, "Exported"), lambda e: self._failed(e, TransferResult(path)),
                          writes=False)
        self._progress_dialog("Exporting", op)
        return op

    def _close_dialog(self) -> None:
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None

    def _done(self, result: TransferResult, verb: str) -> None:
        self._close_dialog()
        self.last_result = result
        self._report(result.summary(verb), error=False)

    def _failed(self, exc: BaseException, result: TransferResult) -> None:
        self._close_dialog()
        self.last_result = result
        if isinstance(exc, FormatError | OSError | UnicodeDecodeError):
            text = f"Could not read or write {Path(result.path).name}: {exc}"
        else:
            log.error("transfer failed", exc_info=exc)
            text = f"Failed: {exc}"
        result.cancelled = result.cancelled or type(exc).__name__ == "Cancelled"
        self._report(text if not result.cancelled else "Cancelled", error=not result.cancelled)

    def _report(self, text: str, *, error: bool) -> None:
        self.last_text = text
        self.finished.emit(text)
        if self.show_results and self.parent_widget is not None:
            box = QMessageBox(QMessageBox.Icon.Warning if error else QMessageBox.Icon.Information,
                              "Import and export", text, QMessageBox.StandardButton.Ok, self.parent_widget)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()
