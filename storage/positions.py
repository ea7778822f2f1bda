"""The field outbox: GPS fixes recorded on this device, waiting for upload in batches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from storage.repository import check_bbox

if TYPE_CHECKING:
    from storage.store import Store


@dataclass(frozen=True, slots=True)
class Fix:
    """One GPS fix. `fix_time` is Unix seconds (UTC); speeds are km/h, course in degrees."""

    device_id: str
    fix_time: float
    lat: float
    lon: float
    vehicle_id: str | None = None
    speed_kph: float | None = None
    course: float | None = None
    altitude: float | None = None
    accuracy: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredFix:
    fid: int
    fix: Fix
    upload_state: str
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    pending: int
    uploaded: int
    failed: int


_COLUMNS = "fid, device_id, fix_time, lat, lon, vehicle_id, speed_kph, course, altitude, accuracy, attributes, " \
           "upload_state, attempts"


def _stored(row: Any) -> StoredFix:
    fix = Fix(row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
              json.loads(row[10]) if row[10] else {})
    return StoredFix(row[0], fix, row[11], row[12])


class PositionOutbox:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add_many(self, fixes: Iterable[Fix]) -> int:
        """Insert fixes in one transaction; a fix already recorded (same device and time) is skipped.
        Returns how many were new."""
        rows = [
            (f.device_id, f.fix_time, f.lat, f.lon, f.vehicle_id, f.speed_kph, f.course, f.altitude, f.accuracy,
             json.dumps(f.attributes, separators=(",", ":")) if f.attributes else None)
            for f in fixes
        ]
        with self._store.transaction() as conn:
            cursor = conn.executemany(
                "INSERT OR IGNORE INTO positions (device_id, fix_time, lat, lon, vehicle_id, speed_kph, course, "
                "altitude, accuracy, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            # rowcount sums sqlite3_changes(), which counts only rows this statement inserted: not the
            # R*Tree trigger's writes (nor its shadow tables'), which total_changes would include.
            return max(int(cursor.rowcount), 0)

    def add(self, fix: Fix) -> bool:
        return self.add_many([fix]) == 1

    def pending_batch(self, limit: int = 1000) -> list[StoredFix]:
        rows = self._store.query(
            f"SELECT {_COLUMNS} FROM positions WHERE upload_state = 'pending' ORDER BY fid LIMIT ?", (limit,)
        )
        return [_stored(row) for row in rows]

    def mark_uploaded(self, fids: Sequence[int]) -> None:
        now = time.time()
        with self._store.transaction() as conn:
            conn.executemany(
                "UPDATE positions SET upload_state = 'uploaded', uploaded_at = ?, last_error = NULL WHERE fid = ?",
                [(now, fid) for fid in fids],
            )

    def mark_attempt_failed(self, fids: Sequence[int], error: str) -> None:
        """A transient failure: the fixes stay pending and are retried."""
        with self._store.transaction() as conn:
            conn.executemany(
                "UPDATE positions SET attempts = attempts + 1, last_error = ? WHERE fid = ?",
                [(error, fid) for fid in fids],
            )

    def mark_rejected(self, rejections: Iterable[tuple[int, str]]) -> None:
        """The server refused these fixes for good; keep them, with the reason, for the user to see."""
        with self._store.transaction() as conn:
            conn.executemany(
                "UPDATE positions SET upload_state = 'failed', attempts = attempts + 1, last_error = ? WHERE fid = ?",
                [(reason, fid) for fid, reason in rejections],
            )

    def counts(self) -> OutboxCounts:
        rows = self._store.query("SELECT upload_state, count(*) FROM positions GROUP BY upload_state")
        by_state = {row[0]: row[1] for row in rows}
        return OutboxCounts(by_state.get("pending", 0), by_state.get("uploaded", 0), by_state.get("failed", 0))

    def in_bbox(self, bbox: Iterable[float], *, limit: int | None = None) -> list[StoredFix]:
        min_lon, min_lat, max_lon, max_lat = check_bbox(bbox)
        rows = self._store.query(
            f"SELECT {_COLUMNS} FROM positions WHERE fid IN (SELECT fid FROM positions_rtree "
            "WHERE min_lon <= ? AND max_lon >= ? AND min_lat <= ? AND max_lat >= ?) "
            # The R*Tree stores 32-bit floats rounded outwards; the exact test trims the edges.
            "AND lon BETWEEN ? AND ? AND lat BETWEEN ? AND ? ORDER BY fix_time LIMIT ?",
            (max_lon, min_lon, max_lat, min_lat, min_lon, max_lon, min_lat, max_lat, -1 if limit is None else limit),
        )
        return [_stored(row) for row in rows]

    def count_in_bbox(self, bbox: Iterable[float]) -> int:
        min_lon, min_lat, max_lon, max_lat = check_bbox(bbox)
        return int(self._store.scalar(
            "SELECT count(*) FROM positions WHERE fid IN (SELECT fid FROM positions_rtree "
            "WHERE min_lon <= ? AND max_lon >= ? AND min_lat <= ? AND max_lat >= ?) "
            "AND lon BETWEEN ? AND ? AND lat BETWEEN ? AND ?",
            (max_lon, min_lon, max_lat, min_lat, min_lon, max_lon, min_lat, max_lat),
        ))

    def track(self, vehicle_id: str, start: float, end: float) -> list[Fix]:
        rows = self._store.query(
            f"SELECT {_COLUMNS} FROM positions WHERE vehicle_id = ? AND fix_time BETWEEN ? AND ? ORDER BY fix_time",
            (vehicle_id, start, end),
        )
        return [_stored(row).fix for row in rows]

    def prune_uploaded(self, older_than: float) -> int:
        """Forget uploaded fixes older than a cut-off; the server has them."""
        with self._store.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM positions WHERE upload_state = 'uploaded' AND uploaded_at < ?", (older_than,)
            )
            return int(cursor.rowcount)
