"""The recorder: fixes from a source, through the filter, into the outbox; geofence events offline.

Accepted fixes are written in small batches (`batch_size` fixes or `flush_interval_s` seconds,
whichever comes first). Each batch is one transaction: the fixes go into the outbox
(`store.positions.add_many`), each vehicle's newest fix into `latest_fixes`, the geofence and
overspeed events EventDetector derived from them into `events` (source 'local'), and the
detector's per-vehicle state into `sync_meta`, so that a restart neither repeats nor loses an
event. Fixes without a vehicle (a device not assigned to one) are recorded, but yield no events.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from storage.events import Event
from storage.positions import Fix
from storage.vehicles import LatestFix, VehicleId
from sync.geofencing import EventDetector, GeofenceIndex
from sync.gps.filters import FixFilter

if TYPE_CHECKING:
    from storage.store import Store

log = logging.getLogger(__name__)

STATE_KEY_PREFIX = "geofence_state:"


@dataclass
class RecorderStats:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    stored: int = 0  # new rows in the outbox (a fix recorded before is not stored twice)
    events: int = 0
    batches: int = 0
    rejections: dict[str, int] = field(default_factory=dict)


def geofence_index(store: Store) -> GeofenceIndex:
    """A GeofenceIndex over the geofences in the local store (their full document records)."""
    return GeofenceIndex.from_records({g.id: g.data for g in store.geofences.list(order_by="id")})


class Recorder:
    def __init__(self, store: Store, source: Iterable[Fix], fix_filter: FixFilter | None = None,
                 detector: EventDetector | None = None, *, vehicle_id: str | None = None,
                 detect_events: bool = True, batch_size: int = 50, flush_interval_s: float = 5.0,
                 on_batch: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.source = source
        self.filter = fix_filter if fix_filter is not None else FixFilter()
        self.detect_events = detect_events
        self.detector = detector if detector is not None else (
            EventDetector(geofence_index(store)) if detect_events else EventDetector())
        self.vehicle_id = vehicle_id  # for fixes that name no vehicle; else looked up by device
        self.batch_size = max(1, batch_size)
        self.flush_interval_s = flush_interval_s
        self.on_batch = on_batch  # e.g. wake the uploader
        self.stats = RecorderStats()
        self._clock = clock
        self._pending: list[Fix] = []
        self._events: list[Event] = []
        self._touched: set[str] = set()
        self._last_flush = clock()
        self._stop = threading.Event()
        self._vehicle_by_device: dict[str, str | None] = {}
        self._limits: dict[str, float | None] = {}
        self._restored: set[str] = set()

    # -- running ------------------------------------------------------------------------------

    def run(self) -> RecorderStats:
        """Record until the source ends or stop() is called; flushes what is pending at the end."""
        try:
            for fix in self.source:
                self.record(fix)
                if self._stop.is_set():
                    break
        finally:
            self.flush()
        return self.stats

    def stop(self) -> None:
        """Ask run() to finish after the current fix."""
        self._stop.set()

    def reload_geofences(self) -> None:
        """Pick up geofence edits (call it when the mirror reports geofence changes)."""
        self.detector.index = geofence_index(self.store)
        self._limits.clear()
        self._vehicle_by_device.clear()

    # -- one fix ------------------------------------------------------------------------------

    def record(self, fix: Fix) -> bool:
        """Filter one fix and queue it; returns whether it was accepted."""
        self.stats.received += 1
        reason = self.filter.process(fix)
        if reason is not None:
            self.stats.rejected += 1
            self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1
            return False
        self.stats.accepted += 1
        vehicle_id = fix.vehicle_id or self._vehicle_for(fix.device_id)
        if vehicle_id is not None and vehicle_id != fix.vehicle_id:
            fix = replace(fix, vehicle_id=vehicle_id)
        self._pending.append(fix)
        if vehicle_id is not None and self.detect_events:
            self._detect(vehicle_id, fix)
        if len(self._pending) >= self.batch_size or self._clock() - self._last_flush >= self.flush_interval_s:
            self.flush()
        return True

    def _vehicle_for(self, device_id: str) -> str | None:
        if self.vehicle_id is not None:
            return self.vehicle_id
        if device_id not in self._vehicle_by_device:
            vehicle = self.store.vehicles.by_device(device_id)
            self._vehicle_by_device[device_id] = None if vehicle is None else vehicle.id
        return self._vehicle_by_device[device_id]

    def _limit_for(self, vehicle_id: str) -> float | None:
        if vehicle_id not in self._limits:
            vehicle = self.store.vehicles.get(vehicle_id)
            limit = vehicle.speed_limit_kph if vehicle is not None else None
            self._limits[vehicle_id] = float(limit) if isinstance(limit, (int, float)) and limit > 0 else None
        return self._limits[vehicle_id]

    def _detect(self, vehicle_id: str, fix: Fix) -> None:
        if vehicle_id not in self._restored:
            self._restored.add(vehicle_id)
            saved = self.store.sync_log.get_meta(STATE_KEY_PREFIX + vehicle_id)
            if saved and self.detector.state(vehicle_id) is None:
                try:
                    self.detector.restore(vehicle_id, json.loads(saved))
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring unreadable geofence state of vehicle %s", vehicle_id)
        events = self.detector.process(vehicle_id, fix.fix_time, fix.lon, fix.lat, fix.speed_kph,
                                       self._limit_for(vehicle_id))
        self._events.extend(e.to_event("local") for e in events)
        self._touched.add(vehicle_id)

    # -- writing ------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write the queued fixes, latest fixes, events and detector state in one transaction."""
        self._last_flush = self._clock()
        if not self._pending and not self._events:
            return 0
        fixes, events, touched = self._pending, self._events, self._touched
        newest: dict[str, Fix] = {}
        for fix in fixes:
            if fix.vehicle_id is not None:
                current = newest.get(fix.vehicle_id)
                if current is None or fix.fix_time > current.fix_time:
                    newest[fix.vehicle_id] = fix
        with self.store.transaction():
            stored = self.store.positions.add_many(fixes)
            for vid, fix in newest.items():
                self.store.vehicles.record_fix(LatestFix(VehicleId(vid), fix.fix_time, fix.lon, fix.lat,
                                                         fix.speed_kph, fix.course))
            added = self.store.events.add_many(events) if events else 0
            for vid in touched:
                state = self.detector.state(vid)
                if state is not None:
                    self.store.sync_log.set_meta(STATE_KEY_PREFIX + vid, json.dumps(state))
        self._pending, self._events, self._touched = [], [], set()
        self.stats.stored += stored
        self.stats.events += added
        self.stats.batches += 1
        if self.on_batch is not None:
            try:
                self.on_batch(stored)
            except Exception:
                log.exception("recorder on_batch callback failed")
        return stored
