"""Projects tenant documents into the relational tables SQL users and the REST API read.

Projection runs beside sync, never in its way: rooms report what each commit touched, a worker
coalesces those ids per tenant and writes them in one transaction together with the watermark
(the update-log position the tables now reflect). After a restart, any tenant whose watermark
is behind its log is re-projected in full, so projection is idempotent and restartable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server_stub.db.base import Database, time_param
from storage import geometry
from sync.document import Changes, FleetDocument
from sync.mirror import invalid_reason
from sync.room import Room
from sync.schema import COLLECTIONS

log = logging.getLogger(__name__)

NUMBER, TEXT, BOOL, JSON = "number", "text", "bool", "json"

# Typed columns of each projected table; every record also lands whole in `data`.
COLUMNS: dict[str, dict[str, str]] = {
    "vehicles": {"name": TEXT, "plate": TEXT, "vin": TEXT, "device_id": TEXT, "driver_id": TEXT, "status": TEXT,
                 "speed_limit_kph": NUMBER, "notes": TEXT, "created_at": TEXT, "updated_at": TEXT},
    "drivers": {"name": TEXT, "phone": TEXT, "email": TEXT, "license_number": TEXT, "license_expiry": TEXT,
                "status": TEXT, "notes": TEXT, "created_at": TEXT, "updated_at": TEXT},
    "routes": {"name": TEXT, "vehicle_id": TEXT, "stops": JSON, "corridor_m": NUMBER, "planned_start": TEXT,
               "notes": TEXT, "created_at": TEXT, "updated_at": TEXT},
    "geofences": {"name": TEXT, "kind": TEXT, "speed_limit_kph": NUMBER, "active": BOOL, "notes": TEXT,
                  "radius_m": NUMBER, "created_at": TEXT, "updated_at": TEXT},
}
GEOMETRY = {"routes", "geofences"}


def _coerce(value: Any, kind: str) -> Any:
    """A value the column type accepts; a mistyped field (already flagged invalid) becomes NULL."""
    if value is None:
        return None
    if kind == NUMBER:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == BOOL:
        return value if isinstance(value, bool) else None
    if kind == JSON:
        return json.dumps(value)
    return value if isinstance(value, str) else json.dumps(value)


def geometry_wkb(collection: str, record: Mapping[str, Any]) -> bytes | None:
    if collection == "geofences":
        return geometry.to_wkb(geometry.geofence_shape(record))
    geom = geometry.from_geojson(record.get("geometry"))
    return geometry.to_wkb(geom) if geom is not None and geom.geom_type == "LineString" else None


@dataclass
class _Pending:
    touched: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in COLLECTIONS})
    upto: int = 0


class Projector:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: dict[str, tuple[Room, _Pending]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self.projected_seq: dict[str, int] = {}
        self._upsert_sql = {c: self._build_upsert(c) for c in COLUMNS}

    def _build_upsert(self, collection: str) -> str:
        columns = ["customer_id", "id", *COLUMNS[collection], "data", "projection_error", "projected_at"]
        values = ["?"] * len(columns)
        if self.db.dialect == "postgres":
            values[columns.index("data")] = "CAST(? AS jsonb)"
            if "stops" in columns:
                values[columns.index("stops")] = "CAST(? AS jsonb)"
        if collection in GEOMETRY:
            columns.append("geometry")
            values.append("ST_GeomFromWKB(?, 4326)" if self.db.dialect == "postgres" else "GeomFromWKB(?, 4326)")
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("customer_id", "id"))
        return (
            f"INSERT INTO {collection} ({', '.join(columns)}) VALUES ({', '.join(values)}) "
            f"ON CONFLICT (customer_id, id) DO UPDATE SET {updates}"
        )

    def _row(self, tenant_id: str, collection: str, record_id: str, record: Mapping[str, Any]) -> tuple[Any, ...]:
        values: list[Any] = [tenant_id, record_id]
        values.extend(_coerce(record.get(name), kind) for name, kind in COLUMNS[collection].items())
        if collection == "routes" and values[2 + list(COLUMNS["routes"]).index("corridor_m")] is None:
            values[2 + list(COLUMNS["routes"]).index("corridor_m")] = 100.0
        if collection == "geofences" and record.get("active") is None:
            values[2 + list(COLUMNS["geofences"]).index("active")] = True
        values.append(json.dumps(record))
        values.append(invalid_reason(collection, record))
        values.append(time_param(self.db, datetime.now(UTC)))
        if collection in GEOMETRY:
            values.append(geometry_wkb(collection, record))
        return tuple(values)

    # -- writing -------------------------------------------------------------------------------

    async def project(self, tenant_id: str, document: FleetDocument, touched: Mapping[str, Iterable[str]],
                      upto_seq: int | None) -> None:
        """Write the touched records as the document has them now, and advance the watermark."""
        async with self.db.transaction(customer_id=tenant_id) as tx:
            for collection, ids in touched.items():
                ids = list(ids)
                if not ids:
                    continue
                records = document.records(collection) if len(ids) > 200 else None
                upserts, deletes = [], []
                for record_id in ids:
                    record = records.get(record_id) if records is not None else document.record(collection, record_id)
                    if record is None:
                        deletes.append((tenant_id, record_id))
                    else:
                        upserts.append(self._row(tenant_id, collection, record_id, record))
                if upserts:
                    await tx.executemany(self._upsert_sql[collection], upserts)
                if deletes:
                    await tx.executemany(f"DELETE FROM {collection} WHERE customer_id = ? AND id = ?", deletes)
            if upto_seq is not None:
                await tx.execute(
                    "INSERT INTO projection_state (customer_id, watermark) VALUES (?, ?) ON CONFLICT (customer_id) "
                    "DO UPDATE SET watermark = CASE WHEN excluded.watermark > projection_state.watermark "
                    "THEN excluded.watermark ELSE projection_state.watermark END",
                    (tenant_id, upto_seq),
                )
        if upto_seq is not None:
            self.projected_seq[tenant_id] = max(upto_seq, self.projected_seq.get(tenant_id, 0))

    async def reproject(self, tenant_id: str, document: FleetDocument, upto_seq: int | None) -> None:
        """Make the tenant's tables equal the document: every record written, strays deleted."""
        touched: dict[str, set[str]] = {}
        async with self.db.transaction(customer_id=tenant_id) as tx:
            for collection in COLLECTIONS:
                rows = await tx.fetch(f"SELECT id FROM {collection} WHERE customer_id = ?", (tenant_id,))
                touched[collection] = {row["id"] for row in rows} | document.ids(collection)
        await self.project(tenant_id, document, touched, upto_seq)

    async def watermark(self, tenant_id: str) -> int:
        async with self.db.transaction(customer_id=tenant_id) as tx:
            value = await tx.fetchval("SELECT watermark FROM projection_state WHERE customer_id = ?", (tenant_id,))
        return int(value or 0)

    async def catch_up(self, room: Room) -> bool:
        """After a (re)load: re-project in full when the tables lag the log. True if it had to."""
        behind = room.committed_seq is not None and await self.watermark(room.name) < room.committed_seq
        if behind:
            await self.reproject(room.name, room.document, room.committed_seq)
        return behind

    # -- the background worker -----------------------------------------------------------------

    async def on_applied(self, room: Room, changes: Changes) -> None:
        entry = self._pending.get(room.name)
        pending = entry[1] if entry is not None else _Pending()
        # Keep the newest room: after an unload and reload the old room's document is frozen, and
        # projecting the new room's changes from it would drop them (behind an advanced watermark).
        self._pending[room.name] = (room, pending)
        for collection, ids in changes.touched.items():
            pending.touched[collection] |= ids
        pending.upto = max(pending.upto, room.committed_seq or 0)
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                tenant_id = next(iter(self._pending))
                room, pending = self._pending.pop(tenant_id)
                try:
                    await self.project(tenant_id, room.document, pending.touched, pending.upto or None)
                except Exception:
                    log.exception("projection of %s failed; it will be redone from the watermark", tenant_id)
            self._idle.set()

    async def flush(self) -> None:
        """Wait until every change reported so far is in the tables (REST read-your-writes)."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
