"""Position ingest and reads: wire-format validation, idempotent storage, and events computed on ingest.

One batch is one transaction: the fixes, the geofence/overspeed events they cause and each
vehicle's state (newest fix, detector state) commit together. Concurrent batches for the same
vehicle serialise on its `vehicle_state` row, so the detector always sees a vehicle's fixes in
one order, whichever server instance receives them. Live messages go out after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import psycopg

from server_stub import partitions
from server_stub.db.base import (
    Database,
    DatabaseError,
    Dialect,
    IntegrityError,
    Queries,
    Tx,
    UniqueViolation,
    parse_json,
    parse_time,
    time_param,
)
from server_stub.partitions import PartitionKeeper, positions_relation
from sync.geofencing import EventDetector, GeofenceEvent, GeofenceIndex
from sync.values import ValuePolicyError, check_string, check_value

if TYPE_CHECKING:
    from server_stub.db.postgres import PostgresTx

log = logging.getLogger(__name__)

MAX_FUTURE_SECONDS = 300.0
# A numeric fix_time at or above this is milliseconds: 1e11 seconds is the year 5138.
MILLISECONDS_FROM = 1e11
MAX_BATCH_FIXES = 20_000
MAX_ID_LENGTH = 200
MAX_ATTRIBUTES_BYTES = 4096
MAX_SPEED_KPH = 2000.0
DEFAULT_QUERY_LIMIT = 10_000
MAX_QUERY_LIMIT = 100_000

Publisher = Callable[[str, dict[str, Any]], Awaitable[None]]


class BatchTooLarge(ValueError):
    """More fixes in one request than MAX_BATCH_FIXES."""


class FixRejected(ValueError):
    """One fix breaks a rule; the message is the reason the client sees."""


@dataclass(frozen=True, slots=True)
class VehicleInfo:
    id: str
    device_id: str | None
    speed_limit_kph: float | None
    name: str | None


@dataclass(slots=True)
class Fix:
    """A validated fix; `t` is Unix seconds (UTC)."""

    vehicle_id: str
    device_id: str | None
    t: float
    lat: float
    lon: float
    speed_kph: float | None = None
    course: float | None = None
    altitude: float | None = None
    accuracy: float | None = None
    attributes: dict[str, Any] | None = None


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    events: list[GeofenceEvent] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


@dataclass
class _Detection:
    """What the detector made of a batch, ready to write: events, state rows, live messages."""

    new_vehicles: list[str]
    events: list[GeofenceEvent] = field(default_factory=list)
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    detector_only: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Tenant:
    """What ingest needs about a tenant, cached and rebuilt when the projection changes it."""

    plan: str = "hobby"
    disabled: bool = False
    vehicles_key: tuple[Any, ...] | None = None
    vehicles: dict[str, VehicleInfo] = field(default_factory=dict)
    devices: dict[str, list[str]] = field(default_factory=dict)
    fences_key: tuple[Any, ...] | None = None
    detector: EventDetector = field(default_factory=EventDetector)


# -- wire format -----------------------------------------------------------------------------------


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC with a Z (microseconds kept when there are any)."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: Any, name: str = "fix_time") -> float:
    """ISO 8601 (no zone means UTC) or Unix seconds/milliseconds, as Unix seconds."""
    kind = type(value)
    if kind is int or kind is float:
        number = float(value)
    elif kind is str:
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise FixRejected(f"{name} {value!r} is neither ISO 8601 nor Unix seconds or milliseconds") from None
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    elif value is None:
        raise FixRejected(f"{name} is required")
    else:
        raise FixRejected(f"{name} must be an ISO 8601 string or a number of Unix seconds or milliseconds")
    if not math.isfinite(number):
        raise FixRejected(f"{name} must be a finite number")
    return number / 1000.0 if abs(number) >= MILLISECONDS_FROM else number


def _number(value: Any, name: str) -> float | None:
    kind = type(value)
    if kind is float or kind is int:  # `type` rather than isinstance: True is not a speed
        number = float(value)
        if math.isfinite(number):
            return number
        raise FixRejected(f"{name} must be a finite number")
    if value is None:
        return None
    raise FixRejected(f"{name} must be a number, got {value!r}"[:200])


def _coordinate(value: Any, name: str, limit: float) -> float:
    if value is None:
        raise FixRejected(f"{name} is required")
    number = _number(value, name)
    assert number is not None
    if not -limit <= number <= limit:
        raise FixRejected(f"{name} {number} is out of range (-{limit:g}..{limit:g})")
    return number


def _identifier(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise FixRejected(f"{name} must be a string")
    if len(value) > MAX_ID_LENGTH:
        raise FixRejected(f"{name} is longer than {MAX_ID_LENGTH} characters")
    try:  # an unregistered device id beside a known vehicle is stored as sent
        check_string(value, f"/{name}")
    except ValuePolicyError as exc:
        raise FixRejected(f"{name}: {exc.reason}") from None
    return value


def _vehicle(tenant: _Tenant, vehicle_id: str | None, device_id: str | None) -> str:
    if vehicle_id is not None:
        if vehicle_id not in tenant.vehicles:
            raise FixRejected(f"unknown vehicle_id {vehicle_id!r}")
        if device_id is not None:
            owners = tenant.devices.get(device_id)
            if owners and vehicle_id not in owners:
                raise FixRejected(f"device_id {device_id!r} is registered on vehicle {owners[0]!r}, not {vehicle_id!r}")
        return vehicle_id
    if device_id is None:
        raise FixRejected("vehicle_id or device_id is required")
    owners = tenant.devices.get(device_id)
    if not owners:
        raise FixRejected(f"unknown device_id {device_id!r}: register it on a vehicle first")
    if len(owners) > 1:
        raise FixRejected(f"device_id {device_id!r} is registered on several vehicles: {', '.join(sorted(owners))}")
    return owners[0]


def _bounded(value: Any, name: str, low: float, high: float) -> float | None:
    """An optional number within [low, high]; the slow path behind parse_fix's inline checks."""
    number = _number(value, name)
    if number is not None and not low <= number <= high:
        high_text = "" if high == math.inf else f"{high:g}"
        raise FixRejected(f"{name} {number} is out of range ({low:g}..{high_text})")
    return number


def parse_fix(raw: Any, tenant: _Tenant, now: float, oldest: float, retention: int) -> Fix:
    """One wire-format fix as a Fix, or FixRejected with the reason.

    The inline `type(x) is float and low <= x <= high` tests take well-formed fixes through
    without a call per field (NaN and infinities fail them and meet the full checks)."""
    if type(raw) is not dict:
        raise FixRejected("each position must be a JSON object")
    get = raw.get
    vehicle_id = get("vehicle_id")
    device_id = get("device_id")
    if device_id is not None or type(vehicle_id) is not str or vehicle_id not in tenant.vehicles:
        device_id = _identifier(device_id, "device_id")
        vehicle_id = _vehicle(tenant, _identifier(vehicle_id, "vehicle_id"), device_id)
    lat = get("lat")
    if not (type(lat) is float and -90.0 <= lat <= 90.0):
        lat = _coordinate(lat, "lat", 90.0)
    lon = get("lon")
    if not (type(lon) is float and -180.0 <= lon <= 180.0):
        lon = _coordinate(lon, "lon", 180.0)
    if lat == 0.0 and lon == 0.0:
        raise FixRejected("lat/lon 0,0 is not a real position (a receiver without a fix reports it)")
    t = parse_timestamp(get("fix_time"))
    if t > now + MAX_FUTURE_SECONDS:
        raise FixRejected(f"fix_time {iso(t)} is more than {MAX_FUTURE_SECONDS / 60:g} minutes in the future")
    if t < oldest:
        raise FixRejected(f"fix_time {iso(t)} is older than the plan's {retention}-day retention")
    speed = get("speed_kph")
    if speed is not None and not (type(speed) is float and 0.0 <= speed <= MAX_SPEED_KPH):
        speed = _bounded(speed, "speed_kph", 0.0, MAX_SPEED_KPH)
    course = get("course")
    if course is not None and not (type(course) is float and 0.0 <= course <= 360.0):
        course = _bounded(course, "course", 0.0, 360.0)
    altitude = get("altitude")
    if altitude is not None and not (type(altitude) is float and -1e5 <= altitude <= 1e6):
        altitude = _bounded(altitude, "altitude", -1e5, 1e6)
    accuracy = get("accuracy")
    if accuracy is not None and not (type(accuracy) is float and 0.0 <= accuracy <= 1e7):
        accuracy = _bounded(accuracy, "accuracy", 0.0, 1e7)
    attributes = get("attributes")
    if attributes is not None:
        if type(attributes) is not dict:
            raise FixRejected("attributes must be a JSON object")
        if not attributes:
            attributes = None
        else:
            try:  # jsonb refuses NUL, orjson a 65-bit integer; nothing downstream should meet NaN
                check_value(attributes, "/attributes")
            except ValuePolicyError as exc:
                raise FixRejected(f"attributes: {exc}") from None
            if len(orjson.dumps(attributes)) > MAX_ATTRIBUTES_BYTES:
                raise FixRejected(f"attributes are larger than {MAX_ATTRIBUTES_BYTES} bytes")
    if device_id is None:
        device_id = tenant.vehicles[vehicle_id].device_id
    return Fix(vehicle_id, device_id, t, lat, lon, speed, course, altitude, accuracy, attributes)


def validate(positions: Sequence[Any], tenant: _Tenant, now: float) -> tuple[list[Fix], list[dict[str, Any]]]:
    """The good fixes of a batch and a reason for each bad one (good ones are kept either way)."""
    retention = partitions.retention_days(tenant.plan)
    oldest = now - retention * 86400.0
    fixes: list[Fix] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(positions):
        try:
            fixes.append(parse_fix(raw, tenant, now, oldest, retention))
        except FixRejected as exc:
            rejected.append({"index": index, "reason": str(exc)})
    return fixes, rejected


# -- messages --------------------------------------------------------------------------------------


def position_message(fix: Fix) -> dict[str, Any]:
    return {"type": "position", "vehicle_id": fix.vehicle_id, "device_id": fix.device_id, "fix_time": iso(fix.t),
            "lat": fix.lat, "lon": fix.lon, "speed_kph": fix.speed_kph, "course": fix.course,
            "altitude": fix.altitude, "accuracy": fix.accuracy, "attributes": fix.attributes or {}}


def event_attributes(event: GeofenceEvent) -> dict[str, Any]:
    return {} if event.limit_kph is None else {"limit_kph": event.limit_kph}


def event_message(event: GeofenceEvent) -> dict[str, Any]:
    return {"type": "event", "vehicle_id": event.vehicle_id, "kind": event.kind, "event_time": iso(event.event_time),
            "geofence_id": event.geofence_id, "lon": event.lon, "lat": event.lat, "speed_kph": event.speed_kph,
            "attributes": event_attributes(event)}


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def row_to_fix(row: Mapping[str, Any]) -> Fix:
    t = _epoch(row["fix_time"])
    assert t is not None
    attributes = parse_json(row["attributes"]) if row.get("attributes") is not None else None
    return Fix(row["vehicle_id"], row["device_id"], t, float(row["lat"]), float(row["lon"]),
               _float(row["speed_kph"]), _float(row["course"]), _float(row["altitude"]), _float(row["accuracy"]),
               attributes or None)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def row_to_event(row: Mapping[str, Any]) -> dict[str, Any]:
    event_time = _epoch(row["event_time"])
    assert event_time is not None
    return {"id": int(row["id"]), "vehicle_id": row["vehicle_id"], "kind": row["kind"],
            "event_time": iso(event_time), "geofence_id": row["geofence_id"], "lon": _float(row["lon"]),
            "lat": _float(row["lat"]), "speed_kph": _float(row["speed_kph"]),
            "attributes": parse_json(row["attributes"]) if row["attributes"] is not None else {}}


def _text_field(value: str | None) -> bytes:
    if value is None:
        return _COPY_NULL
    encoded = value.encode()
    return _COPY_LENGTH.pack(len(encoded)) + encoded


def _float4_field(value: float | None) -> bytes:
    return _COPY_NULL if value is None else _COPY_FLOAT4.pack(4, value)


def _binary_row(tenant: bytes, f: Fix) -> bytes:
    """One fix as a binary COPY row (the general path: attributes, or a one-off shape)."""
    if f.attributes is None:
        attributes = _COPY_NULL
    else:
        encoded = b"\x01" + orjson.dumps(f.attributes)  # jsonb's binary form: a version byte, then JSON
        attributes = _COPY_LENGTH.pack(len(encoded)) + encoded
    return b"".join((
        _COPY_FIELDS, tenant, _text_field(f.vehicle_id), _text_field(f.device_id),
        _COPY_POSITION.pack(8, round((f.t - _PG_EPOCH) * 1_000_000), 8, f.lat, 8, f.lon),
        _float4_field(f.speed_kph), _float4_field(f.course), _float4_field(f.altitude), _float4_field(f.accuracy),
        attributes, _COPY_GEOM_LENGTH, _COPY_GEOM.pack(1, _EWKB_POINT_SRID, 4326, f.lon, f.lat),
    ))


_OPTIONAL = ("speed_kph", "course", "altitude", "accuracy")


def _binary_rows(tenant: bytes, fixes: list[Fix]) -> bytes:
    """Rows that share a vehicle, a device and which optional numbers are present, written at
    once with numpy: every such row has the same layout, so a structured array of big-endian
    fields (and the little-endian EWKB inside) is the COPY data itself."""
    first = fixes[0]
    present = [name for name in _OPTIONAL if getattr(first, name) is not None]
    fields: list[tuple[str, Any]] = [("head", f"S{2 + len(tenant)}")]
    fields.append(("ids", f"S{len(_text_field(first.vehicle_id)) + len(_text_field(first.device_id))}"))
    fields += [("t_len", ">i4"), ("t", ">i8"), ("lat_len", ">i4"), ("lat", ">f8"), ("lon_len", ">i4"), ("lon", ">f8")]
    for name in _OPTIONAL:
        fields += [(f"{name}_len", ">i4")] + ([(name, ">f4")] if name in present else [])
    fields += [("attributes", ">i4"), ("geom_len", ">i4"), ("order", "u1"), ("kind", "<u4"), ("srid", "<u4"),
               ("x", "<f8"), ("y", "<f8")]
    rows = np.zeros(len(fixes), dtype=np.dtype(fields))
    rows["head"] = _COPY_FIELDS + tenant
    rows["ids"] = _text_field(first.vehicle_id) + _text_field(first.device_id)
    times = np.fromiter((f.t for f in fixes), np.float64, len(fixes))
    rows["t_len"], rows["t"] = 8, np.round((times - _PG_EPOCH) * 1_000_000).astype(np.int64)
    rows["lat_len"], rows["lon_len"] = 8, 8
    rows["lat"] = np.fromiter((f.lat for f in fixes), np.float64, len(fixes))
    rows["lon"] = np.fromiter((f.lon for f in fixes), np.float64, len(fixes))
    for name in _OPTIONAL:
        if name in present:
            rows[f"{name}_len"] = 4
            rows[name] = np.fromiter((getattr(f, name) for f in fixes), np.float32, len(fixes))
        else:
            rows[f"{name}_len"] = -1
    rows["attributes"] = -1
    rows["geom_len"], rows["order"], rows["kind"], rows["srid"] = 25, 1, _EWKB_POINT_SRID, 4326
    rows["x"], rows["y"] = rows["lon"], rows["lat"]
    return rows.tobytes()


def _binary_copy(tenant_id: str, fixes: list[Fix]) -> bytes:
    """The fixes as one binary COPY stream for _HYPERTABLE_COPY's columns."""
    tenant = _text_field(tenant_id)
    alike: dict[tuple[Any, ...], list[Fix]] = {}
    parts = [_COPY_SIGNATURE]
    for f in fixes:
        if f.attributes is not None:
            parts.append(_binary_row(tenant, f))
        else:
            key = (f.vehicle_id, f.device_id, f.speed_kph is None, f.course is None, f.altitude is None,
                   f.accuracy is None)
            alike.setdefault(key, []).append(f)
    for group in alike.values():
        parts.append(_binary_rows(tenant, group) if len(group) > 8 else b"".join(
            _binary_row(tenant, f) for f in group))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


# -- the service -----------------------------------------------------------------------------------

_STAGE_COPY = ("COPY gps_stage (vehicle_id, device_id, fix_time, lat, lon, speed_kph, course, altitude, accuracy, "
               "attributes) FROM STDIN (FORMAT BINARY)")
_STAGE_TYPES = ["text", "text", "float8", "float8", "float8", "float4", "float4", "float4", "float4", "jsonb"]
_HYPERTABLE_COPY = ("COPY gps_positions (customer_id, vehicle_id, device_id, fix_time, lat, lon, speed_kph, course, "
                    "altitude, accuracy, attributes, geom) FROM STDIN (FORMAT BINARY)")
# PostgreSQL's binary COPY format, written here in one pass (psycopg's per-row dumping and an
# await per row cost more than the database's own work): a signature, per row a field count
# and length-prefixed big-endian fields (-1 for NULL), a trailer.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_COPY_NULL = b"\xff\xff\xff\xff"
_COPY_FIELDS = struct.pack(">h", 12)
_COPY_LENGTH = struct.Struct(">i")
_COPY_FLOAT4 = struct.Struct(">if")
_COPY_POSITION = struct.Struct(">iqidid")  # fix_time (µs since 2000), lat, lon
# geom as EWKB (what PostGIS's binary input reads): a little-endian Point with SRID 4326, behind
# the big-endian length every field has.
_COPY_GEOM_LENGTH = struct.pack(">i", 25)
_COPY_GEOM = struct.Struct("<BIIdd")
_EWKB_POINT_SRID = 0x20000001
_PG_EPOCH = 946_684_800  # 2000-01-01 in Unix seconds, where timestamptz counts from
_CONTEXT_SQL = """
    SELECT (SELECT plan FROM customers WHERE id = ?) AS plan,
           (SELECT disabled FROM customers WHERE id = ?) AS disabled,
           (SELECT count(*) FROM vehicles WHERE customer_id = ?) AS vehicles_n,
           (SELECT max(projected_at) FROM vehicles WHERE customer_id = ?) AS vehicles_at,
           (SELECT count(*) FROM geofences WHERE customer_id = ?) AS fences_n,
           (SELECT max(projected_at) FROM geofences WHERE customer_id = ?) AS fences_at
"""


class PositionService:
    """Ingest, queries and per-tenant caches; one per app (`app.state.positions`)."""

    def __init__(self, db: Database, keeper: PartitionKeeper | None = None, publish: Publisher | None = None) -> None:
        self.db = db
        self.keeper = keeper or PartitionKeeper(db)
        self.publish = publish
        self.table = "gps_positions"
        self._tenants: dict[str, _Tenant] = {}

    async def start(self) -> None:
        await self.keeper.start()
        self.table = positions_relation(self.keeper.mode)

    async def close(self) -> None:
        await self.keeper.close()

    # -- tenant context --------------------------------------------------------------------------

    async def tenant(self, q: Queries, tenant_id: str) -> _Tenant:
        """The tenant's plan, vehicles and geofence detector, reloaded only when the projection changed."""
        row = await q.fetchone(_CONTEXT_SQL, (tenant_id,) * 6)
        assert row is not None
        cached = self._tenants.get(tenant_id) or _Tenant()
        cached.plan = row["plan"] or "hobby"
        cached.disabled = bool(row["disabled"])
        vehicles_key = (row["vehicles_n"], row["vehicles_at"])
        if cached.vehicles_key != vehicles_key:
            vehicles: dict[str, VehicleInfo] = {}
            devices: dict[str, list[str]] = {}
            for v in await q.fetch(
                "SELECT id, device_id, speed_limit_kph, name FROM vehicles WHERE customer_id = ?", (tenant_id,)
            ):
                vehicles[v["id"]] = VehicleInfo(v["id"], v["device_id"], _float(v["speed_limit_kph"]), v["name"])
                if v["device_id"]:
                    devices.setdefault(v["device_id"], []).append(v["id"])
            cached.vehicles, cached.devices, cached.vehicles_key = vehicles, devices, vehicles_key
        fences_key = (row["fences_n"], row["fences_at"])
        if cached.fences_key != fences_key:
            rows = await q.fetch("SELECT id, data FROM geofences WHERE customer_id = ?", (tenant_id,))
            index = GeofenceIndex.from_records({r["id"]: parse_json(r["data"]) for r in rows})
            cached.detector, cached.fences_key = EventDetector(index), fences_key
        self._tenants[tenant_id] = cached
        return cached

    # -- ingest ------------------------------------------------------------------------------------

    async def ingest(self, tenant_id: str, positions: Sequence[Any], *, now: float | None = None) -> IngestResult:
        """Store a batch: good fixes kept, bad ones listed with reasons, re-sent ones counted as duplicates."""
        if len(positions) > MAX_BATCH_FIXES:
            raise BatchTooLarge(f"at most {MAX_BATCH_FIXES} positions per request, got {len(positions)}")
        try:
            return await self._ingest(tenant_id, positions, now)
        except UniqueViolation:
            # A writer that bypassed the vehicle lock stored one of these fixes meanwhile: redo the
            # batch with INSERT … ON CONFLICT DO NOTHING, which needs no lock to stay idempotent.
            return await self._ingest(tenant_id, positions, now, on_conflict=True)
        except IntegrityError as exc:
            if "no partition" not in str(exc):
                raise
            # Another instance dropped or has not yet created a day we believed in: refresh and retry once.
            await self.keeper.refresh()
            return await self._ingest(tenant_id, positions, now)

    async def _ingest(self, tenant_id: str, positions: Sequence[Any], now: float | None, *,
                      on_conflict: bool = False) -> IngestResult:
        result = IngestResult()
        published: list[dict[str, Any]] = []
        async with self.db.transaction(customer_id=tenant_id) as tx:
            tenant = await self.tenant(tx, tenant_id)
            fixes, result.rejected = validate(positions, tenant, time.time() if now is None else now)
            if not fixes:
                return result
            await self.keeper.ensure_days({datetime.fromtimestamp(f.t, UTC).date() for f in fixes})
            states = await self._lock_states(tx, tenant_id, sorted({f.vehicle_id for f in fixes}))
            detection: list[_Detection] = []

            def detect() -> None:
                detection.append(self._detect(tx.dialect, tenant_id, tenant, fixes, states))

            result.accepted = await self._store(tx, tenant_id, fixes, on_conflict, detect)
            result.duplicates = len(fixes) - result.accepted
            await self._save(tx, tenant_id, detection[0])
            result.events = detection[0].events
            published = detection[0].messages
        if self.publish is not None:
            for message in published:
                try:
                    await self.publish(tenant_id, message)
                except Exception:  # live push is best effort; the fixes are stored
                    log.exception("live publish for %s failed", tenant_id)
        return result

    async def _lock_states(self, tx: Tx, tenant_id: str, vehicle_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each vehicle's state row, created if missing and (Postgres) locked for this transaction."""
        states: dict[str, dict[str, Any]] = {}
        for start in range(0, len(vehicle_ids), 400):
            chunk = vehicle_ids[start:start + 400]
            if tx.dialect == "postgres":
                # Upsert-as-lock, in sorted order: batches sharing a vehicle serialise without deadlocks.
                values = ", ".join("(?, ?)" for _ in chunk)
                rows = await tx.fetch(
                    f"INSERT INTO vehicle_state (customer_id, vehicle_id) VALUES {values} "
                    "ON CONFLICT (customer_id, vehicle_id) DO UPDATE SET vehicle_id = excluded.vehicle_id "
                    "RETURNING vehicle_id, fix_time, detector",
                    [p for vid in chunk for p in (tenant_id, vid)],
                )
            else:  # one writer at a time: the transaction is the lock
                marks = ", ".join("?" for _ in chunk)
                rows = await tx.fetch(
                    f"SELECT vehicle_id, fix_time, detector FROM vehicle_state "
                    f"WHERE customer_id = ? AND vehicle_id IN ({marks})", (tenant_id, *chunk),
                )
            for row in rows:
                states[row["vehicle_id"]] = {"fix_time": _epoch(row["fix_time"]), "exists": True,
                                             "detector": parse_json(row["detector"]) if row["detector"] else None}
        return states

    async def _store(self, tx: Tx, tenant_id: str, fixes: list[Fix], on_conflict: bool,
                     meanwhile: Callable[[], None]) -> int:
        """Insert the fixes, skipping ones already stored; how many were new. `meanwhile` (the
        detector) runs while Postgres executes the INSERT, so the two overlap on two cores."""
        if tx.dialect == "postgres":
            return await self._store_pg(tx, tenant_id, fixes, on_conflict, meanwhile)
        meanwhile()
        before = await tx.fetchval("SELECT total_changes()")
        received = time.time()
        await tx.executemany(
            "INSERT INTO gps_positions (customer_id, vehicle_id, device_id, fix_time, received_at, lat, lon, "
            "speed_kph, course, altitude, accuracy, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(tenant_id, f.vehicle_id, f.device_id, f.t, received, f.lat, f.lon, f.speed_kph, f.course, f.altitude,
              f.accuracy, orjson.dumps(f.attributes).decode() if f.attributes else None) for f in fixes],
        )
        return int(await tx.fetchval("SELECT total_changes()")) - int(before)

    async def _new_fixes(self, tx: Tx, tenant_id: str, fixes: list[Fix]) -> list[Fix]:
        """The fixes not stored yet (and each only once). Callers hold the vehicles' state locks, so
        nobody else ingests for these vehicles until the transaction ends."""
        spans: dict[str, list[float]] = {}
        unique: dict[tuple[str, int], Fix] = {}
        for fix in fixes:
            unique.setdefault((fix.vehicle_id, round(fix.t * 1e6)), fix)
            span = spans.get(fix.vehicle_id)
            if span is None:
                spans[fix.vehicle_id] = [fix.t, fix.t]
            elif fix.t < span[0]:
                span[0] = fix.t
            elif fix.t > span[1]:
                span[1] = fix.t
        # One index range scan per vehicle over the batch's time span: cheap for new data, and
        # far cheaper than ON CONFLICT's speculative insertion for every row.
        ids = list(spans)
        if self.keeper.mode == "timescale":
            # On a hypertable the join above defeats chunk exclusion (its bounds come from the
            # unnest, not parameters), so every chunk's index is probed; bound values per vehicle
            # let TimescaleDB skip all but the chunks of the span.
            rows = []
            for vehicle_id in ids:
                lo, hi = spans[vehicle_id]
                rows += await tx.fetch(
                    "SELECT vehicle_id, (extract(epoch FROM fix_time) * 1000000)::int8 AS us "
                    f"FROM {self.table} WHERE customer_id = ? AND vehicle_id = ? "
                    "AND fix_time BETWEEN ? AND ?",
                    (tenant_id, vehicle_id, datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)),
                )
            for row in rows:
                unique.pop((row["vehicle_id"], int(row["us"])), None)
            return list(unique.values())
        rows = await tx.fetch(
            "SELECT s.vehicle_id, (extract(epoch FROM p.fix_time) * 1000000)::int8 AS us "
            "FROM unnest(CAST(? AS text[]), CAST(? AS float8[]), CAST(? AS float8[])) AS s(vehicle_id, lo, hi) "
            f"JOIN {self.table} p ON p.customer_id = ? AND p.vehicle_id = s.vehicle_id "
            "AND p.fix_time BETWEEN to_timestamp(s.lo) AND to_timestamp(s.hi)",
            (ids, [spans[v][0] for v in ids], [spans[v][1] for v in ids], tenant_id),
        )
        for row in rows:
            unique.pop((row["vehicle_id"], int(row["us"])), None)
        return list(unique.values())

    async def _store_pg(self, tx: Tx, tenant_id: str, fixes: list[Fix], on_conflict: bool,
                        meanwhile: Callable[[], None]) -> int:
        from server_stub.db.postgres import PostgresTx

        assert isinstance(tx, PostgresTx)
        if not on_conflict:
            fixes = await self._new_fixes(tx, tenant_id, fixes)
            if not fixes:
                meanwhile()
                return 0
            if self.keeper.mode == "timescale":
                return await self._copy_into_hypertable(tx, tenant_id, fixes, meanwhile)
        # COPY cannot write into a table under row-level security: stage in a temp table (one per
        # pooled connection, emptied at commit), then INSERT … SELECT under the tenant's policies.
        await tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS gps_stage (vehicle_id text, device_id text, fix_time float8, lat float8, "
            "lon float8, speed_kph float4, course float4, altitude float4, accuracy float4, attributes jsonb) "
            "ON COMMIT DELETE ROWS"
        )
        try:
            async with tx.conn.cursor() as cursor, cursor.copy(_STAGE_COPY) as copy:
                copy.set_types(_STAGE_TYPES)
                for f in fixes:
                    await copy.write_row((f.vehicle_id, f.device_id, f.t, f.lat, f.lon, f.speed_kph, f.course,
                                          f.altitude, f.accuracy, f.attributes))
        except psycopg.Error as exc:
            raise DatabaseError(f"could not stage positions: {exc}") from exc
        insert = asyncio.ensure_future(tx.execute(
            f"INSERT INTO {self.table} (customer_id, vehicle_id, device_id, fix_time, lat, lon, speed_kph, course, "
            "altitude, accuracy, attributes, geom) "
            "SELECT ?, vehicle_id, device_id, to_timestamp(fix_time), lat, lon, speed_kph, course, altitude, "
            "accuracy, attributes, ST_SetSRID(ST_MakePoint(lon, lat), 4326) FROM gps_stage"
            + (" ON CONFLICT DO NOTHING" if on_conflict else ""),
            (tenant_id,),
        ))
        await asyncio.sleep(0)  # let the statement go out before the CPU-bound detector takes the loop
        try:
            meanwhile()
        except BaseException:
            with contextlib.suppress(Exception):
                await insert
            raise
        return await insert

    async def _copy_into_hypertable(self, tx: PostgresTx, tenant_id: str, fixes: list[Fix],
                                    meanwhile: Callable[[], None]) -> int:
        """One binary COPY straight into the hypertable (migration 7 lets the app role insert,
        a CHECK keeps every row to the transaction's tenant). The fixes are new (checked under the
        vehicles' locks), so no ON CONFLICT is needed; a racing writer still meets the unique key
        and ingest() redoes the batch through the staging path."""
        data = _binary_copy(tenant_id, fixes)
        try:
            async with tx.conn.cursor() as cursor:
                async with cursor.copy(_HYPERTABLE_COPY) as copy:
                    await copy.write(data)
                    # The rows are on their way: the detector's CPU overlaps the server's work.
                    meanwhile()
                return cursor.rowcount
        except psycopg.errors.UniqueViolation as exc:
            raise UniqueViolation(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"could not store positions: {exc}") from exc

    def _detect(self, dialect: Dialect, tenant_id: str, tenant: _Tenant, fixes: list[Fix],
                states: dict[str, dict[str, Any]]) -> _Detection:
        """Run the detector over each vehicle's fixes in time order (pure CPU, no database)."""
        by_vehicle: dict[str, list[Fix]] = {}
        for fix in fixes:
            by_vehicle.setdefault(fix.vehicle_id, []).append(fix)
        detector = tenant.detector
        found = _Detection(new_vehicles=[vid for vid in by_vehicle if vid not in states])
        stamp = time_param(dialect, datetime.now(UTC))
        for vehicle_id, vehicle_fixes in by_vehicle.items():
            state = states.get(vehicle_id, {})
            vehicle_fixes.sort(key=lambda f: f.t)
            limit = tenant.vehicles[vehicle_id].speed_limit_kph
            detector.restore(vehicle_id, state.get("detector"))
            # No fences and no limit: nothing can happen, only the newest fix matters to the state.
            relevant = vehicle_fixes if limit is not None or len(detector.index) else vehicle_fixes[-1:]
            for fix in relevant:
                # The detector ignores fixes not newer than the last it saw (late or re-sent ones), so a
                # fix is never judged twice: the state it advances commits with the fix itself.
                found.events.extend(detector.process(vehicle_id, fix.t, fix.lon, fix.lat, fix.speed_kph, limit))
            detector_state = detector.state(vehicle_id)
            detector.forget(vehicle_id)
            encoded = orjson.dumps(detector_state).decode() if detector_state is not None else None
            newest = vehicle_fixes[-1]
            previous = state.get("fix_time")
            if previous is None or newest.t > previous:
                found.updates.append((
                    newest.device_id, time_param(dialect, datetime.fromtimestamp(newest.t, UTC)), stamp, newest.lat,
                    newest.lon, newest.speed_kph, newest.course, newest.altitude, newest.accuracy,
                    orjson.dumps(newest.attributes).decode() if newest.attributes else None, encoded, stamp,
                    tenant_id, vehicle_id,
                ))
                found.messages.append(position_message(newest))
            else:
                found.detector_only.append((encoded, stamp, tenant_id, vehicle_id))
        found.event_rows = [
            (tenant_id, e.vehicle_id, e.kind, time_param(dialect, datetime.fromtimestamp(e.event_time, UTC)),
             e.geofence_id, e.lon, e.lat, e.speed_kph, orjson.dumps(event_attributes(e)).decode(), stamp)
            for e in found.events
        ]
        found.messages.extend(event_message(e) for e in found.events)
        return found

    async def _save(self, tx: Tx, tenant_id: str, found: _Detection) -> None:
        """Write the vehicles' new state and the events into the batch's transaction."""
        jsonb = "CAST(? AS jsonb)" if tx.dialect == "postgres" else "?"
        if tx.dialect == "sqlite" and found.new_vehicles:
            # No upsert-as-lock on SQLite: make sure each vehicle has a row to update.
            await tx.executemany(
                "INSERT INTO vehicle_state (customer_id, vehicle_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(tenant_id, vid) for vid in found.new_vehicles],
            )
        if found.updates:
            await tx.executemany(
                "UPDATE vehicle_state SET device_id = ?, fix_time = ?, received_at = ?, lat = ?, lon = ?, "
                f"speed_kph = ?, course = ?, altitude = ?, accuracy = ?, attributes = {jsonb}, detector = {jsonb}, "
                "updated_at = ? WHERE customer_id = ? AND vehicle_id = ?",
                found.updates,
            )
        if found.detector_only:
            await tx.executemany(
                f"UPDATE vehicle_state SET detector = {jsonb}, updated_at = ? WHERE customer_id = ? AND vehicle_id = ?",
                found.detector_only,
            )
        if found.event_rows:
            await tx.executemany(
                "INSERT INTO geofence_events (customer_id, vehicle_id, kind, event_time, geofence_id, lon, lat, "
                f"speed_kph, attributes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, {jsonb}, ?) "
                "ON CONFLICT DO NOTHING",
                found.event_rows,
            )

    # -- reads -------------------------------------------------------------------------------------

    async def plan_cutoff(self, q: Queries, tenant_id: str) -> float:
        plan = await q.fetchval("SELECT plan FROM customers WHERE id = ?", (tenant_id,))
        return partitions.retention_cutoff(plan).timestamp()

    async def vehicle(self, tenant_id: str, vehicle_id: str) -> dict[str, Any] | None:
        async with self.db.transaction(customer_id=tenant_id) as tx:
            return await tx.fetchone(
                "SELECT id, name, device_id, speed_limit_kph FROM vehicles WHERE customer_id = ? AND id = ?",
                (tenant_id, vehicle_id),
            )

    async def fixes(self, tenant_id: str, vehicle_id: str | None, start: float, end: float,
                    limit: int = DEFAULT_QUERY_LIMIT) -> list[Fix]:
        """Fixes in [start, end) in time order, never older than the tenant's plan retention."""
        async with self.db.transaction(customer_id=tenant_id) as tx:
            start = max(start, await self.plan_cutoff(tx, tenant_id))
            where = "customer_id = ? AND fix_time >= ? AND fix_time < ?"
            params: list[Any] = [tenant_id, _ts(tx, start), _ts(tx, end)]
            if vehicle_id is not None:
                where += " AND vehicle_id = ?"
                params.append(vehicle_id)
            rows = await tx.fetch(
                "SELECT vehicle_id, device_id, fix_time, lat, lon, speed_kph, course, altitude, accuracy, attributes "
                f"FROM {self.table} WHERE {where} ORDER BY fix_time, vehicle_id LIMIT ?", (*params, limit),
            )
        return [row_to_fix(row) for row in rows]

    async def events(self, tenant_id: str, vehicle_id: str | None, start: float, end: float, kind: str | None,
                     limit: int = DEFAULT_QUERY_LIMIT) -> list[dict[str, Any]]:
        async with self.db.transaction(customer_id=tenant_id) as tx:
            start = max(start, await self.plan_cutoff(tx, tenant_id))
            where = "customer_id = ? AND event_time >= ? AND event_time < ?"
            params: list[Any] = [tenant_id, _ts(tx, start), _ts(tx, end)]
            if vehicle_id is not None:
                where += " AND vehicle_id = ?"
                params.append(vehicle_id)
            if kind is not None:
                where += " AND kind = ?"
                params.append(kind)
            rows = await tx.fetch(
                "SELECT id, vehicle_id, kind, event_time, geofence_id, lon, lat, speed_kph, attributes "
                f"FROM geofence_events WHERE {where} ORDER BY event_time, id LIMIT ?", (*params, limit),
            )
        return [row_to_event(row) for row in rows]

    async def latest_fixes(self, tenant_id: str) -> list[Fix]:
        """Each vehicle's newest fix by fix time (vehicle_state: a late upload never replaces it)."""
        async with self.db.transaction(customer_id=tenant_id) as tx:
            rows = await tx.fetch(
                "SELECT vehicle_id, device_id, fix_time, lat, lon, speed_kph, course, altitude, accuracy, attributes "
                "FROM vehicle_state WHERE customer_id = ? AND fix_time IS NOT NULL ORDER BY vehicle_id", (tenant_id,),
            )
        return [row_to_fix(row) for row in rows]

    async def latest(self, tenant_id: str) -> list[dict[str, Any]]:
        """Each vehicle's newest fix as a live message, for a map that has just opened."""
        return [position_message(fix) for fix in await self.latest_fixes(tenant_id)]

    async def device_owners(self, device_id: str) -> list[tuple[str, str]]:
        """(tenant, vehicle) pairs a device id is registered on, across every tenant."""
        async with self.db.transaction() as tx:
            if tx.dialect == "postgres":
                # Outside a tenant only a lookup naming the device id sees its vehicle (policy device_lookup).
                await tx.execute("SELECT set_config('app.device_lookup', ?, true)", (device_id,))
            rows = await tx.fetch(
                "SELECT customer_id, id FROM vehicles WHERE device_id = ? ORDER BY customer_id, id", (device_id,)
            )
        return [(row["customer_id"], row["id"]) for row in rows]


def _ts(q: Queries, t: float) -> Any:
    return time_param(q.dialect, datetime.fromtimestamp(t, UTC))


__all__ = [
    "MAX_BATCH_FIXES",
    "BatchTooLarge",
    "Fix",
    "FixRejected",
    "IngestResult",
    "PositionService",
    "iso",
    "parse_time",
    "parse_timestamp",
]
