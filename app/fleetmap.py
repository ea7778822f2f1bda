"""Keeps a MapView in step with the store: vehicles (with their latest fix and state), geofences and
routes, refreshed from the one change signal; shapes drawn or edited on the map are saved through
LocalFleet, and a rule they break is shown on the map (and in the dialog for new shapes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QWidget

from app.context import FleetContext
from app.forms import RecordDialog
from app.mapview import MapView
from app.signals import Touched
from maps.layers import VehicleMarker, feature_collection, geofence_feature, move_update, route_feature, vehicle_state
from sync.services import RecordNotFound
from sync.validation import ValidationError

log = logging.getLogger(__name__)

STATE_REFRESH_MS = 30_000  # fixes go stale (vehicle offline) without any change arriving


def vehicle_markers(ctx: FleetContext, now: float | None = None) -> list[dict[str, Any]]:
    """Every vehicle with a fix, as bridge JSON (run on a reader thread)."""
    now = time.time() if now is None else now
    fixes = {f.vehicle_id: f for f in ctx.store.vehicles.latest_fixes()}
    markers = []
    for vehicle in ctx.store.vehicles.list():
        fix = fixes.get(vehicle.id)
        if fix is None:
            continue
        state = vehicle_state(invalid=vehicle.invalid_reason is not None, fix_time=fix.fix_time,
                              speed_kph=fix.speed_kph, now=now)
        markers.append(VehicleMarker(vehicle.id, vehicle.name or vehicle.id, fix.lon, fix.lat, state,
                                     fix.speed_kph).to_json())
    return markers


def moved_markers(ctx: FleetContext, vehicle_ids: Iterable[str], invalid: set[str] | frozenset[str] = frozenset(),
                  now: float | None = None) -> list[list[Any]]:
    """moveVehicles() entries for vehicles whose latest fix changed."""
    now = time.time() if now is None else now
    wanted = set(vehicle_ids)
    updates = []
    for fix in ctx.store.vehicles.latest_fixes():
        if fix.vehicle_id in wanted:
            state = vehicle_state(invalid=fix.vehicle_id in invalid, fix_time=fix.fix_time,
                                  speed_kph=fix.speed_kph, now=now)
            updates.append(move_update(fix.vehicle_id, fix.lon, fix.lat, state))
    return updates


class FleetMapController(QObject):
    """Pushes store contents to the map; turns map drawing into validated edits."""

    pushed = Signal(str)  # "vehicles" | "geofences" | "routes" | "moves", after the bridge call
    edit_failed = Signal(str)  # the message shown on the map

    def __init__(self, ctx: FleetContext, view: MapView, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.view = view
        self.dialog: RecordDialog | None = None
        self._pending_vehicle_push = False
        self._vehicles_dirty = False
        self.on_map: set[str] = set()  # vehicles with a marker, as of the last full push
        self._routes_of: tuple[str | None] | None = None  # (vehicle id,): only its routes; None: all
        self._invalid: set[str] = set()
        ctx.signals.changed.connect(self._on_changed)
        view.ready.connect(self.push_all)
        view.bridge.shape_drawn.connect(self._shape_drawn)
        view.bridge.shape_edited.connect(self._shape_edited)
        view.bridge.shape_deleted.connect(self._shape_deleted)
        self._stale = QTimer(self)
        self._stale.setInterval(STATE_REFRESH_MS)
        self._stale.timeout.connect(self.push_vehicles)
        self._stale.start()
        if view.is_ready:
            self.push_all()

    # -- store -> map --------------------------------------------------------------------------------

    def push_all(self) -> None:
        self.push_vehicles()
        self.push_geofences()
        self.push_routes()

    def push_vehicles(self) -> None:
        if self._pending_vehicle_push:
            self._vehicles_dirty = True
            return
        self._pending_vehicle_push = True
        self._vehicles_dirty = False
        ctx = self.ctx

        def done(markers: list[dict[str, Any]]) -> None:
            self._pending_vehicle_push = False
            if self._vehicles_dirty:
                self.push_vehicles()
                return
            self.on_map = {m["id"] for m in markers}
            self._invalid = {m["id"] for m in markers if m["state"] == "invalid"}
            self.view.call("setVehicles", markers)
            self.pushed.emit("vehicles")

        def failed(exc: BaseException) -> None:
            self._pending_vehicle_push = False
            if self._vehicles_dirty:
                self.push_vehicles()
            log.error("could not load vehicles for the map", exc_info=exc)

        ctx.ops.read(lambda: vehicle_markers(ctx), done, failed)

    def push_geofences(self) -> None:
        store = self.ctx.store

        def load() -> dict[str, Any]:
            return feature_collection(geofence_feature(g.id, g.data, g.invalid_reason) for g in store.geofences.list())

        self.ctx.ops.read(load, lambda fc: self._call("setGeofences", fc, "geofences"))

    def show_routes_of(self, vehicle_id: str | None) -> None:
        """From now on only this vehicle's routes (and corridors); none while it is None."""
        if self._routes_of == (vehicle_id,):
            return
        self._routes_of = (vehicle_id,)
        self.push_routes()

    def push_routes(self) -> None:
        store, only = self.ctx.store, self._routes_of

        def load() -> dict[str, Any]:
            if only is None:
                routes = store.routes.list()
            else:
                routes = [] if only[0] is None else store.routes.for_vehicle(only[0])
            return feature_collection(route_feature(r.id, r.data, r.invalid_reason) for r in routes)

        self.ctx.ops.read(load, lambda fc: self._call("setRoutes", fc, "routes"))

    def move_vehicles(self, vehicle_ids: Iterable[str]) -> None:
        """Move markers without rebuilding the layer; a vehicle's first fix needs a full push."""
        ids = list(vehicle_ids)
        if not set(ids) <= self.on_map:
            self.push_vehicles()
            return
        ctx, invalid = self.ctx, set(self._invalid)
        self.ctx.ops.read(lambda: moved_markers(ctx, ids, invalid),
                          lambda updates: self._call("moveVehicles", updates, "moves"))

    def _call(self, function: str, payload: Any, what: str) -> None:
        self.view.call(function, payload)
        self.pushed.emit(what)

    def _on_changed(self, _origin: str, touched: Touched) -> None:
        if "vehicles" in touched:
            self.push_vehicles()
        elif "latest_fixes" in touched:
            self.move_vehicles(touched["latest_fixes"])
        if "geofences" in touched:
            self.push_geofences()
        if "routes" in touched:
            self.push_routes()

    # -- map -> store ----------------------------------------------------------------------------------

    def _message(self, text: str) -> None:
        self.view.call("showMessage", text, "error")
        self.edit_failed.emit(text)

    def _shape_drawn(self, kind: str, shape: dict[str, Any]) -> None:
        """A new polygon, circle or line: ask for its name (and the rest) in the usual dialog."""
        if self.ctx.read_only:
            return
        collection = "routes" if kind == "route" else "geofences"
        preset: dict[str, Any] = {"geometry": shape.get("geometry")}
        if collection == "geofences" and shape.get("radius_m") is not None:
            preset["radius_m"] = round(float(shape["radius_m"]), 1)
        parent = self.view.window() if isinstance(self.view.window(), QWidget) else None
        dialog = RecordDialog(self.ctx, collection, preset=preset, parent=parent)
        dialog.setWindowModality(dialog.windowModality().WindowModal)
        self.dialog = dialog
        dialog.finished.connect(lambda _r: self._dialog_closed(dialog))
        dialog.open()

    def _dialog_closed(self, dialog: RecordDialog) -> None:
        if self.dialog is dialog:
            self.dialog = None
        dialog.deleteLater()

    def _shape_edited(self, collection: str, record_id: str, shape: dict[str, Any]) -> None:
        if self.ctx.read_only or collection not in ("routes", "geofences"):
            return
        changes: dict[str, Any] = {"geometry": shape.get("geometry")}
        if collection == "geofences":
            changes["radius_m"] = None if shape.get("radius_m") is None else round(float(shape["radius_m"]), 1)
        fleet = self.ctx.fleet
        self.ctx.ops.write(lambda: fleet.update(collection, record_id, changes), None,
                           lambda exc: self._edit_failed(collection, exc))

    def _shape_deleted(self, collection: str, record_id: str) -> None:
        if self.ctx.read_only or collection not in ("routes", "geofences"):
            return
        fleet = self.ctx.fleet
        self.ctx.ops.write(lambda: fleet.delete(collection, record_id), None,
                           lambda exc: self._edit_failed(collection, exc))

    def _edit_failed(self, collection: str, exc: BaseException) -> None:
        if isinstance(exc, ValidationError):
            text = "Not saved: " + "; ".join(f"{p.field} {p.reason}" for p in exc.problems)
        elif isinstance(exc, RecordNotFound):
            text = "Not saved: the record was deleted meanwhile"
        else:
            log.error("map edit failed", exc_info=exc)
            text = f"Not saved: {exc}"
        self._message(text)
        # Put the stored shape back: the map must never show what the store does not hold.
        if collection == "geofences":
            self.push_geofences()
        else:
            self.push_routes()
