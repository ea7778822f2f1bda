"""Add and edit dialogs for vehicles, drivers, routes and geofences, built from the shared schema.

Saving checks the record with sync.validation first (the same rules the server uses) and shows
each problem under the field it concerns; then it saves through LocalFleet on the write worker,
and any problem found there (a device id already in use) comes back the same way. Nothing is
written while a problem remains.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.context import FleetContext
from sync.schema import DEFAULTS, FIELDS, FieldSpec
from sync.services import RecordNotFound
from sync.validation import Problem, ValidationError, problems

log = logging.getLogger(__name__)

SKIPPED = ("created_at", "updated_at")
LABELS = {
    "name": "Name", "plate": "Plate", "vin": "VIN", "device_id": "Device id", "driver_id": "Driver",
    "status": "Status", "speed_limit_kph": "Speed limit (km/h)", "notes": "Notes", "phone": "Phone",
    "email": "Email", "license_number": "Licence number", "license_expiry": "Licence expiry",
    "geometry": "Geometry (GeoJSON)", "vehicle_id": "Vehicle", "stops": "Stops (JSON list)",
    "corridor_m": "Corridor (m)", "planned_start": "Planned start", "radius_m": "Radius (m)", "kind": "Kind",
    "active": "Active",
}
HINTS = {"date": "YYYY-MM-DD", "datetime": "YYYY-MM-DDTHH:MM:SSZ", "email": "name@example.com"}
TITLES = {"vehicles": "vehicle", "drivers": "driver", "routes": "route", "geofences": "geofence"}
ERROR_STYLE = "color: #b71c1c;"
NONE_TEXT = "(none)"


class FieldEditor:
    """One input, with the label under it that shows this field's problems."""

    def __init__(self, spec: FieldSpec, widget: QWidget, container: QWidget, error: QLabel) -> None:
        self.spec = spec
        self.widget = widget
        self.container = container
        self.error = error

    def show_problem(self, reasons: list[str]) -> None:
        text = "; ".join(reasons)
        self.error.setText(text)
        self.error.setVisible(bool(text))
        self.widget.setStyleSheet("border: 1px solid #c62828;" if text else "")


class RecordDialog(QDialog):
    """Create (record_id None) or edit one record. `saved(record_id)` fires after a successful save."""

    saved = Signal(str)

    def __init__(self, ctx: FleetContext, collection: str, record_id: str | None = None, *,
                 preset: dict[str, Any] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.collection = collection
        self.record_id = record_id
        self.saving = False
        self.save_attempts = 0
        current = None
        if record_id is not None:
            repository = getattr(ctx.store, collection)
            stored = repository.get(record_id)
            current = dict(stored.data) if stored is not None else None
        self.current: dict[str, Any] = current or {}
        verb = "Edit" if record_id else "New"
        self.setWindowTitle(f"{verb} {TITLES[collection]}")
        self.setObjectName(f"dialog_{collection}")
        self.setMinimumWidth(460)

        layout = QVBoxLayout(self)
        self.general_error = QLabel()
        self.general_error.setObjectName("error_general")
        self.general_error.setStyleSheet(ERROR_STYLE)
        self.general_error.setWordWrap(True)
        self.general_error.hide()
        layout.addWidget(self.general_error)
        form = QFormLayout()
        layout.addLayout(form)
        self.editors: dict[str, FieldEditor] = {}
        values = {**DEFAULTS.get(collection, {}), **self.current, **(preset or {})} if record_id is None \
            else {**self.current, **(preset or {})}
        for spec in FIELDS[collection].values():
            if spec.name in SKIPPED:
                continue
            editor = self._editor(spec, values.get(spec.name))
            self.editors[spec.name] = editor
            label = LABELS.get(spec.name, spec.name) + (" *" if spec.required else "")
            form.addRow(label, editor.container)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    # -- building ------------------------------------------------------------------------------------

    def _editor(self, spec: FieldSpec, value: Any) -> FieldEditor:
        container = QWidget()
        box = QVBoxLayout(container)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        widget: QWidget
        if spec.kind == "enum":
            combo = QComboBox()
            if not spec.default:
                combo.addItem(NONE_TEXT, None)
            for choice in spec.choices or ():
                combo.addItem(choice, choice)
            index = combo.findData(value)
            combo.setCurrentIndex(max(index, 0))
            widget = combo
        elif spec.kind == "ref":
            combo = QComboBox()
            combo.addItem(NONE_TEXT, None)
            for record in getattr(self.ctx.store, spec.references or "").list():
                combo.addItem(record.name or record.id, record.id)
            if value and combo.findData(value) < 0:
                combo.addItem(f"(missing {str(value)[:8]})", value)
            combo.setCurrentIndex(max(combo.findData(value), 0))
            widget = combo
        elif spec.kind == "bool":
            check = QCheckBox()
            check.setChecked(value is not False)
            widget = check
        elif spec.kind in ("geometry", "stops") or spec.name == "notes":
            text = QPlainTextEdit()
            if value is not None:
                text.setPlainText(value if isinstance(value, str) else json.dumps(value))
            text.setFixedHeight(70 if spec.name == "notes" else 90)
            widget = text
        else:
            line = QLineEdit()
            if value is not None:
                line.setText(f"{value:g}" if isinstance(value, float) else str(value))
            line.setPlaceholderText(HINTS.get(spec.kind, ""))
            widget = line
        widget.setObjectName(f"field_{spec.name}")
        error = QLabel()
        error.setObjectName(f"error_{spec.name}")
        error.setStyleSheet(ERROR_STYLE)
        error.setWordWrap(True)
        error.hide()
        box.addWidget(widget)
        box.addWidget(error)
        if self.ctx.read_only:
            widget.setEnabled(False)
        return FieldEditor(spec, widget, container, error)

    # -- reading -------------------------------------------------------------------------------------

    def _value(self, editor: FieldEditor) -> tuple[Any, str | None]:
        """The field's value, or a reason it cannot be read (a number field holding words)."""
        spec, widget = editor.spec, editor.widget
        if isinstance(widget, QComboBox):
            return widget.currentData(), None
        if isinstance(widget, QCheckBox):
            return widget.isChecked(), None
        raw = widget.toPlainText() if isinstance(widget, QPlainTextEdit) else widget.text()  # type: ignore[attr-defined]
        text = str(raw).strip()
        if not text:
            return None, None
        if spec.kind == "number":
            try:
                number = float(text.replace(",", "."))
            except ValueError:
                return None, "must be a number"
            return (int(number) if number.is_integer() and "." not in text else number), None
        if spec.kind in ("geometry", "stops"):
            try:
                return json.loads(text), None
            except json.JSONDecodeError as exc:
                return None, f"is not valid JSON ({exc.msg} at line {exc.lineno})"
        return text, None

    def values(self) -> tuple[dict[str, Any], list[Problem]]:
        values: dict[str, Any] = {}
        unreadable: list[Problem] = []
        for name, editor in self.editors.items():
            value, reason = self._value(editor)
            if reason is not None:
                unreadable.append(Problem(name, reason))
            values[name] = value
        return values, unreadable

    # -- saving --------------------------------------------------------------------------------------

    def show_problems(self, found: list[Problem]) -> None:
        by_field: dict[str, list[str]] = {}
        general: list[str] = []
        for problem in found:
            if problem.field in self.editors:
                by_field.setdefault(problem.field, []).append(problem.reason)
            else:
                general.append(f"{problem.field}: {problem.reason}")
        for name, editor in self.editors.items():
            editor.show_problem(by_field.get(name, []))
        self.general_error.setText("; ".join(general))
        self.general_error.setVisible(bool(general))
        first = next((self.editors[p.field] for p in found if p.field in self.editors), None)
        if first is not None:
            first.widget.setFocus()

    def problem_text(self, field: str) -> str:
        """What the dialog says under a field (tests and screen readers)."""
        label = self.editors[field].error
        return label.text() if label.isVisibleTo(self) else ""

    def save(self) -> None:
        if self.saving or self.ctx.read_only:
            return
        self.save_attempts += 1
        values, unreadable = self.values()
        if self.record_id is None:
            fields = {k: v for k, v in values.items() if v is not None}
            candidate = {**DEFAULTS.get(self.collection, {}), **fields}
        else:
            fields = {k: v for k, v in values.items() if self.current.get(k) != v}
            candidate = {k: v for k, v in {**self.current, **fields}.items() if v is not None}
        unreadable_fields = {p.field for p in unreadable}
        found = unreadable + [p for p in problems(self.collection, candidate) if p.field not in unreadable_fields]
        if found:
            self.show_problems(found)
            return
        self.show_problems([])
        self.saving = True
        self.buttons.setEnabled(False)
        fleet, collection, record_id = self.ctx.fleet, self.collection, self.record_id

        def write() -> str:
            if record_id is None:
                return fleet.create(collection, fields)
            fleet.update(collection, record_id, fields)
            return record_id

        self.ctx.ops.write(write, self._saved, self._failed)

    def _saved(self, record_id: str) -> None:
        self.saving = False
        self.buttons.setEnabled(True)
        self.record_id = record_id
        self.saved.emit(record_id)
        self.accept()

    def _failed(self, exc: BaseException) -> None:
        self.saving = False
        self.buttons.setEnabled(True)
        if isinstance(exc, ValidationError):
            self.show_problems(exc.problems)
        elif isinstance(exc, RecordNotFound):
            self.show_problems([Problem("record", "was deleted meanwhile (perhaps by another user)")])
        else:
            log.exception("saving %s failed", self.collection, exc_info=exc)
            self.show_problems([Problem("save", f"failed: {exc}")])

    def keyPressEvent(self, event: Any) -> None:
        # Enter inside a multi-line GeoJSON box must add a line, not save the dialog.
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and isinstance(self.focusWidget(), QPlainTextEdit):
            return
        super().keyPressEvent(event)
