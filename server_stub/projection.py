"""Projects tenant documents into the relational tables SQL users and the REST API read.

Projection runs beside sync, never in its way: rooms report what each commit touched, a worker
coalesces those ids per tenant and writes them, then the watermark (the update-log position the
tables now reflect). After a restart, any tenant whose watermark is behind its log is
re-projected in full, so projection is idempotent and restartable.

Projection is total: no document content makes it raise. The document is already merged, so a
record the tables cannot hold as it is (a NUL character, NaN, a value nested thousands deep, a
Y.Text where a record's Y.Map belongs, an id no table can key on) is stored as well as it can be
and flagged with a projection error, which REST and the admin page show; the rest of the tenant
projects as usual. A tenant that fails anyway (its database, its log) is noted in the shared
`TenantFaults` and repaired in the background with backoff, never at the expense of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pycrdt import Map
from pycrdt._pycrdt import Map as RawMap

from server_stub import devices
from server_stub.db.base import Database, Tx, time_param
from server_stub.rooms import RoomManager, RoomUnavailable, TenantFaults
from storage import geometry
from sync.document import Changes, FleetDocument
from sync.mirror import invalid_reason
from sync.room import NEVER_CAUGHT, Room, describe
from sync.schema import COLLECTIONS
from sync.values import ValuePolicyError, check_key, check_record_id, check_value, json_pointer

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

# Projection yields to the event loop (and, on SQLite, releases the one database connection)
# after this much work, so one large tenant never holds up the other tenants' commits.
CHUNK_SECONDS = 0.02
CHUNK_ROWS = 500
READ_SLICE = 128  # records read per document transaction
CATCH_UP_SECONDS = 120.0  # one tenant's start-up catch-up; past it the tenant is retried in the background
REPAIR_POLL_SECONDS = 0.5

# Ids a table's primary key can hold: Postgres refuses NUL in text, and a btree index entry
# must stay under about 2,700 bytes. Others are keyed by a digest and flagged.
MAX_ROW_ID_CHARS = 512
_UNSTORABLE_TEXT = re.compile(r"[\x00\ud800-\udfff]")
# In a record's JSON as yrs writes it: escapes that may hide a NUL, a control character in a
# field name or a lone surrogate. Only records showing one get the full (slower) value check.
_SUSPECT_JSON = re.compile(r"\\u00|\\[bf]|\x7f|\\ud[89a-f]", re.IGNORECASE)


def _coerce(value: Any, kind: str) -> Any:
    """A value the column type accepts; a mistyped field (already flagged invalid) becomes NULL."""
    if value is None:
        return None
    if kind == NUMBER:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == BOOL:
        return value if isinstance(value, bool) else None
    if kind == JSON:
        return orjson.dumps(value).decode()
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def geometry_wkb(collection: str, record: Mapping[str, Any]) -> bytes | None:
    if collection == "geofences":
        return geometry.to_wkb(geometry.geofence_shape(record))
    geom = geometry.from_geojson(record.get("geometry"))
    return geometry.to_wkb(geom) if geom is not None and geom.geom_type == "LineString" else None


def row_id(record_id: str) -> str:
    """The table key of a record: its own id when a table can hold it, else a stable digest."""
    if len(record_id) <= MAX_ROW_ID_CHARS and not _UNSTORABLE_TEXT.search(record_id):
        return record_id
    digest = hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"invalid-id-{digest}"


@dataclass
class Projected:
    """One record as the tables get it: the fields they can store, and why it is flagged."""

    record: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    data: str | None = None  # `record` as JSON text, once encoded


def _problem(exc: ValuePolicyError) -> str:
    return f"{exc.pointer.lstrip('/') or 'record'}: {exc.reason}"


def _kind(value: object) -> str:
    names = {"Text": "a Y.Text", "Doc": "a sub-document", "Array": "a Y.Array", "XmlFragment": "an XML fragment",
             "XmlElement": "an XML element", "XmlText": "a Y.XmlText"}
    name = type(value).__name__
    return names.get(name, f"a {name} value")


def _policed(fields: Mapping[Any, Any], decoded: Mapping[str, Any] | None) -> Projected:
    """Apply the value policy field by field: a field that breaks it is flagged and left out (a
    string is kept with the offending characters replaced, so a name stays readable). Values
    that pass are taken from `decoded` (the JSON reading, numbers as yrs writes them) if given."""
    kept: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in fields.items():
        where = json_pointer(str(name))
        try:
            check_key(name, where)
        except ValuePolicyError as exc:
            problems.append(_problem(exc))
            continue
        try:
            check_value(value, where)
        except ValuePolicyError as exc:
            problems.append(_problem(exc))
            if isinstance(value, str):
                kept[name] = _UNSTORABLE_TEXT.sub("\ufffd", value)
            continue
        kept[name] = decoded[name] if decoded is not None and name in decoded else value
    return Projected(kept, problems)


def _read_carefully(document: FleetDocument, collection: str, record_id: str) -> Projected:
    """The slow reading, for records the fast one cannot vouch for: real values (pycrdt's to_py
    shows NaN where the JSON says null), each checked against the value policy."""
    ymap = document.collection(collection)
    try:
        value = ymap.get(record_id)
        if isinstance(value, Map):
            fields = value.to_py() or {}
            try:
                decoded = orjson.loads(str(value))
            except orjson.JSONDecodeError:  # nested deeper than orjson reads (1,024 levels)
                decoded = None
        elif isinstance(value, dict):  # written as one JSON value instead of a Y.Map: accepted
            fields = value
            try:
                decoded = document.record(collection, record_id)
            except orjson.JSONDecodeError:
                decoded = None
        else:
            return Projected({}, [f"record is {_kind(value)}, not a Y.Map of fields"])
    except BaseException as exc:
        if isinstance(exc, NEVER_CAUGHT):
            raise
        return Projected({}, [f"record cannot be read: {describe(exc)}"])
    return _policed(fields, decoded if isinstance(decoded, dict) else None)


def read_records(document: FleetDocument, collection: str, record_ids: Iterable[str]) -> dict[str, Projected | None]:
    """The records as the tables get them (None for ids the document lacks); never raises on content.

    The fast reading is the one FleetDocument.records() uses: yrs writes each record's JSON.
    NaN and Infinity come out of it as null and a NUL as an escape, so a record whose JSON shows
    either (rare) is read again value by value; so is one orjson cannot read or write back."""
    ymap = document.collection(collection)
    found: dict[str, Projected | None] = {}
    careful: list[str] = []
    texts: dict[str, str] = {}
    with document.doc.transaction() as txn:
        raw, raw_txn = ymap.integrated, txn._txn
        assert raw_txn is not None  # inside the transaction just opened
        for record_id in record_ids:
            try:
                value = raw.get(raw_txn, record_id)
            except ValueError:  # yrs: no such key
                found[record_id] = None
                continue
            if isinstance(value, RawMap):
                text = value.to_json(raw_txn)
                if "null" in text or _SUSPECT_JSON.search(text):
                    careful.append(record_id)
                else:
                    texts[record_id] = text
            elif isinstance(value, dict):
                careful.append(record_id)
            else:
                found[record_id] = Projected({}, [f"record is {_kind(value)}, not a Y.Map of fields"])
    for record_id, text in texts.items():
        try:
            record = orjson.loads(text)
            # The yrs text is the stored JSON as it is, unless it might nest deeper than readers
            # (Python's json stops near 1,000 levels) take: then orjson writes it, up to 254 levels.
            data = text if text.count("[") + text.count("{") < 250 else orjson.dumps(record).decode()
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            careful.append(record_id)
            continue
        found[record_id] = _checked_names(Projected(record, [], data))
    for record_id in careful:
        found[record_id] = _read_carefully(document, collection, record_id)
    return found


# Field names that passed the check: the same few dozen recur in every record.
_GOOD_NAMES: set[str] = set()


def _checked_names(projected: Projected) -> Projected:
    """Field names are checked on every record (values only when the JSON looks suspect)."""
    for name in [name for name in projected.record if name not in _GOOD_NAMES]:
        try:
            check_key(name, json_pointer(name))
        except ValuePolicyError as exc:
            projected.problems.append(_problem(exc))
            del projected.record[name]
            projected.data = None
            continue
        if len(_GOOD_NAMES) < 10_000:
            _GOOD_NAMES.add(name)
    return projected


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection within the block (never across an await: other tasks run then)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Where a vehicle row (Projector._row) holds its device id and its projection error.
_DEVICE_AT = 2 + list(COLUMNS["vehicles"]).index("device_id")
_ERROR_AT = 2 + len(COLUMNS["vehicles"]) + 1


@dataclass
class _Pending:
    touched: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in COLLECTIONS})
    upto: int = 0


class Projector:
    def __init__(self, db: Database, rooms: RoomManager | None = None) -> None:
        self.db = db
        self.rooms = rooms  # loads rooms to repair failed tenants; without it they stay failed
        self.faults: TenantFaults = rooms.faults if rooms is not None else TenantFaults()
        self._pending: dict[str, tuple[Room, _Pending]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._repairer: asyncio.Task[None] | None = None
        self.projected_seq: dict[str, int] = {}
        self._seconds_per_record = dict.fromkeys(COLLECTIONS, 1e-4)  # learnt while projecting
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

    def _row(self, tenant_id: str, collection: str, record_id: str, projected: Projected,
             now: Any = None) -> tuple[Any, ...]:
        record = projected.record
        problems = list(projected.problems)
        try:
            check_record_id(record_id)
        except ValuePolicyError as exc:
            problems.insert(0, _problem(exc))
        values: list[Any] = [tenant_id, row_id(record_id)]
        values.extend(_coerce(record.get(name), kind) for name, kind in COLUMNS[collection].items())
        if collection == "routes" and values[2 + list(COLUMNS["routes"]).index("corridor_m")] is None:
            values[2 + list(COLUMNS["routes"]).index("corridor_m")] = 100.0
        if collection == "geofences" and record.get("active") is None:
            values[2 + list(COLUMNS["geofences"]).index("active")] = True
        values.append(projected.data if projected.data is not None else orjson.dumps(record).decode())
        wkb = None
        if collection in GEOMETRY:
            try:
                wkb = geometry_wkb(collection, record)
            except Exception as exc:  # flagged by validation too; the row is kept without a geometry
                problems.append(f"geometry: cannot be stored: {describe(exc)}")
        if record or not problems:  # a record that could not be read has nothing to validate
            reason = invalid_reason(collection, record)
            if reason:
                problems.append(reason)
        values.append("; ".join(problems) or None)
        values.append(now if now is not None else time_param(self.db, datetime.now(UTC)))
        if collection in GEOMETRY:
            values.append(wkb)
        return tuple(values)

    def _flagged_row(self, tenant_id: str, collection: str, record_id: str, why: str) -> tuple[Any, ...]:
        """A row holding nothing but the record's key and why it could not be projected."""
        return self._row(tenant_id, collection, record_id, Projected({}, [why], "{}"))

    def _safe_row(self, tenant_id: str, collection: str, record_id: str, projected: Projected,
                  now: Any) -> tuple[Any, ...]:
        try:
            return self._row(tenant_id, collection, record_id, projected, now)
        except Exception as exc:
            return self._flagged_row(tenant_id, collection, record_id, f"record cannot be projected: {describe(exc)}")

    # -- writing -------------------------------------------------------------------------------

    async def project(self, tenant_id: str, document: FleetDocument, touched: Mapping[str, Iterable[str]],
                      upto_seq: int | None, stray_rows: Mapping[str, Iterable[str]] | None = None) -> None:
        """Write the touched records as the document has them now, delete the stray rows (table keys
        no record has any more), then advance the watermark.

        The rows go in chunks of about CHUNK_SECONDS of work, each its own transaction, with the
        event loop free in between; the watermark moves only once all of them are in, so a crash
        part-way leaves the tenant to be re-projected after the restart."""
        now = time_param(self.db, datetime.now(UTC))
        for collection in COLLECTIONS:
            ids = list(touched.get(collection, ()))
            deletes = [(tenant_id, stray) for stray in (stray_rows or {}).get(collection, ())]
            done = 0
            while done < len(ids) or deletes:
                upserts, gone, done = self._build_chunk(tenant_id, collection, document, ids, done, now)
                if collection == "vehicles" and upserts:
                    upserts = await self._flag_foreign_devices(tenant_id, upserts)
                await self._write(tenant_id, collection, upserts, deletes + gone)
                deletes = []
        if upto_seq is not None:
            async with self.db.transaction(customer_id=tenant_id) as tx:
                await tx.execute(
                    "INSERT INTO projection_state (customer_id, watermark) VALUES (?, ?) ON CONFLICT (customer_id) "
                    "DO UPDATE SET watermark = CASE WHEN excluded.watermark > projection_state.watermark "
                    "THEN excluded.watermark ELSE projection_state.watermark END",
                    (tenant_id, upto_seq),
                )
            self.projected_seq[tenant_id] = max(upto_seq, self.projected_seq.get(tenant_id, 0))

    async def _flag_foreign_devices(self, tenant_id: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Vehicles whose device id another tenant holds came through the CRDT, so they are kept,
        flagged (devices.CONFLICT_REASON), and their phone's fixes keep going to the holder."""
        foreign = await devices.foreign_devices(self.db, tenant_id, (row[_DEVICE_AT] for row in rows))
        if not foreign:
            return rows
        flagged = []
        for row in rows:
            if row[_DEVICE_AT] in foreign:
                error = "; ".join(filter(None, [row[_ERROR_AT], devices.CONFLICT_REASON]))
                row = (*row[:_ERROR_AT], error, *row[_ERROR_AT + 1:])
            flagged.append(row)
        return flagged

    def _build_chunk(self, tenant_id: str, collection: str, document: FleetDocument, ids: list[str], done: int,
                     now: Any) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]], int]:
        """Rows for ids[done:] until CHUNK_SECONDS of work or CHUNK_ROWS rows; and how far it got.

        Python's cyclic garbage collector is paused meanwhile, as for the mirror's bulk writes:
        decoding geometries makes tens of thousands of lists, and the full collections that
        set off scan the whole heap (20-25 ms each, measured) for cycles JSON never has."""
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[str, str]] = []
        began = time.perf_counter()
        with _cyclic_gc_paused():
            while done < len(ids) and len(upserts) + len(deletes) < CHUNK_ROWS:
                # Slices sized by what a record of this collection took last time (a vehicle
                # some microseconds, a long route a millisecond): a quarter of the budget each.
                size = max(1, min(READ_SLICE, int(CHUNK_SECONDS / 4 / self._seconds_per_record[collection])))
                chunk = ids[done:done + size]
                started = time.perf_counter()
                found = read_records(document, collection, chunk)
                for record_id in chunk:
                    projected = found[record_id]
                    if projected is None:
                        deletes.append((tenant_id, row_id(record_id)))
                    else:
                        upserts.append(self._safe_row(tenant_id, collection, record_id, projected, now))
                done += len(chunk)
                self._seconds_per_record[collection] = max(1e-6, (time.perf_counter() - started) / len(chunk))
                if time.perf_counter() - began >= CHUNK_SECONDS:
                    break
        return upserts, deletes, done

    async def _write(self, tenant_id: str, collection: str, upserts: list[tuple[Any, ...]],
                     deletes: list[tuple[str, str]]) -> None:
        async with self.db.transaction(customer_id=tenant_id) as tx:
            if upserts:
                try:
                    async with tx.savepoint():
                        await tx.executemany(self._upsert_sql[collection], upserts)
                except Exception as exc:
                    log.warning("projection of %s/%s: a row was refused (%s); storing row by row",
                                tenant_id, collection, describe(exc))
                    await self._write_one_by_one(tx, collection, upserts)
            if deletes:
                await tx.executemany(f"DELETE FROM {collection} WHERE customer_id = ? AND id = ?", deletes)

    async def _write_one_by_one(self, tx: Tx, collection: str, upserts: list[tuple[Any, ...]]) -> None:
        """Store each row on its own; one the database refuses is stored flagged, with the refusal
        as its projection error. Should even that fail, the database itself is in trouble: raise."""
        sql = self._upsert_sql[collection]
        for row in upserts:
            try:
                async with tx.savepoint():
                    await tx.execute(sql, row)
            except Exception as exc:
                tenant_id, key = row[0], row[1]
                flagged = self._flagged_row(tenant_id, collection, key,
                                            f"record cannot be stored: {describe(exc)}")
                async with tx.savepoint():
                    await tx.execute(sql, flagged)

    async def reproject(self, tenant_id: str, document: FleetDocument, upto_seq: int | None) -> None:
        """Make the tenant's tables equal the document: every record written, strays deleted."""
        touched: dict[str, set[str]] = {}
        strays: dict[str, set[str]] = {}
        async with self.db.transaction(customer_id=tenant_id) as tx:
            for collection in COLLECTIONS:
                rows = await tx.fetch(f"SELECT id FROM {collection} WHERE customer_id = ?", (tenant_id,))
                touched[collection] = document.ids(collection)
                strays[collection] = {row["id"] for row in rows} - {row_id(rid) for rid in touched[collection]}
        await self.project(tenant_id, document, touched, upto_seq, strays)

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

    async def catch_up_tenant(self, tenant_id: str) -> bool:
        """Start-up: re-project a tenant whose tables lag its log. Never raises for the tenant's own
        trouble: that is noted in `faults` and repaired in the background. True if it re-projected."""
        if self.rooms is None:
            raise RuntimeError("catching up needs the room manager")
        try:
            async with asyncio.timeout(CATCH_UP_SECONDS):
                head = await self.rooms.persistence.head(tenant_id)
                if head is None or await self.watermark(tenant_id) >= head:
                    return False
                return await self.catch_up(await self.rooms.get(tenant_id))
        except RoomUnavailable:
            return False  # the room manager noted why
        except BaseException as exc:
            if isinstance(exc, NEVER_CAUGHT):
                raise
            self.faults.fail(tenant_id, "projection", exc)
            return False

    async def repair(self, tenant_id: str) -> bool:
        """Re-project a failed tenant in full from its (re)loaded room; True once it is healthy."""
        if self.rooms is None:
            return False
        try:
            room = await self.rooms.get(tenant_id)
            await self.reproject(tenant_id, room.document, room.committed_seq)
        except RoomUnavailable:
            return False
        except BaseException as exc:
            if isinstance(exc, NEVER_CAUGHT):
                raise
            self.faults.fail(tenant_id, "projection", exc)
            return False
        self.faults.clear(tenant_id)
        return True

    # -- the background workers ----------------------------------------------------------------

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
        self._worker = asyncio.create_task(self._run(), name="projection")
        self._repairer = asyncio.create_task(self._repair_forever(), name="projection-repair")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                tenant_id = next(iter(self._pending))
                room, pending = self._pending.pop(tenant_id)
                try:
                    await self.project(tenant_id, room.document, pending.touched, pending.upto or None)
                except BaseException as exc:
                    if isinstance(exc, NEVER_CAUGHT):
                        raise
                    # Its changes are not in the tables: a full re-projection, retried with backoff.
                    self.faults.fail(tenant_id, "projection", exc)
            self._idle.set()

    async def _repair_forever(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_POLL_SECONDS)
            for tenant_id in self.faults.due():
                try:
                    await self.repair(tenant_id)
                except Exception:  # repair() notes the tenant's own trouble; this is a bug
                    log.exception("repairing tenant %s failed", tenant_id)

    async def flush(self) -> None:
        """Wait until every change reported so far is in the tables (REST read-your-writes)."""
        await self._idle.wait()

    async def close(self) -> None:
        for task in (self._worker, self._repairer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
