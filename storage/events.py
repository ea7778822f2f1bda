"""Geofence, overspeed and route events, computed locally or received from the server."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.store import Store

EVENT_KINDS = ("geofence_enter", "geofence_exit", "overspeed", "route_deviation", "route_return")


@dataclass(frozen=True, slots=True)
class Event:
    vehicle_id: str
    kind: str
    event_time: float
    geofence_id: str | None = None
    route_id: str | None = None
    lon: float | None = None
    lat: float | None = None
    speed_kph: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = "local"


class UnknownEventKind(ValueError):
    """An event kind outside EVENT_KINDS."""


class EventRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add_many(self, events: Iterable[Event]) -> int:
        """Store events; one already stored (same vehicle, kind, time and target) is skipped."""
        rows = []
        for e in events:
            if e.kind not in EVENT_KINDS:
                raise UnknownEventKind(f"event kind {e.kind!r} is not one of {', '.join(EVENT_KINDS)}")
            rows.append((e.vehicle_id, e.kind, e.event_time, e.geofence_id, e.route_id, e.lon, e.lat,
                         e.speed_kph, json.dumps(e.attributes) if e.attributes else None, e.source))
        with self._store.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (vehicle_id, kind, event_time, geofence_id, route_id, lon, lat, "
                "speed_kph, attributes, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return int(conn.total_changes - before)

    def add(self, event: Event) -> bool:
        return self.add_many([event]) == 1

    def recent(self, *, vehicle_id: str | None = None, since: float | None = None, limit: int = 500) -> list[Event]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if vehicle_id is not None:
            where.append("vehicle_id = ?")
            params.append(vehicle_id)
        if since is not None:
            where.append("event_time >= ?")
            params.append(since)
        rows = self._store.query(
            "SELECT vehicle_id, kind, event_time, geofence_id, route_id, lon, lat, speed_kph, attributes, source "
            f"FROM events WHERE {' AND '.join(where)} ORDER BY event_time DESC, fid DESC LIMIT ?",
            (*params, limit),
        )
        return [
            Event(vehicle_id=row[0], kind=row[1], event_time=row[2], geofence_id=row[3], route_id=row[4], lon=row[5],
                  lat=row[6], speed_kph=row[7], attributes=json.loads(row[8]) if row[8] else {}, source=row[9])
            for row in rows
        ]
