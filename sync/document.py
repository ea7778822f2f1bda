"""The tenant document: one pycrdt Doc with a nested map per record, and the changes it has seen.

pycrdt forbids reading the document inside an observer callback, so observers only queue
what changed; whoever drove the transaction calls `take_changes()` afterwards and reads then.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from pycrdt import Doc, Map, TransactionEvent
from pycrdt._pycrdt import Map as RawMap
from pycrdt._pycrdt import MapEvent as RawMapEvent

from sync.schema import COLLECTIONS, META, SCHEMA_VERSION

EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE_VECTOR = b"\x00"  # what a client with no data sends in sync step 1
BULK_UPDATE_BYTES = 1_000_000

Record = dict[str, Any]

_RAW_MAP = {RawMap}


class UnknownCollection(KeyError):
    """A collection name outside vehicles, drivers, routes and geofences."""


@dataclass
class Changes:
    """What one or more transactions changed: their updates, and the record ids they touched."""

    updates: list[bytes] = field(default_factory=list)
    # Collections where every record counts as touched, and rows the document lacks must go too.
    everything: set[str] = field(default_factory=set)
    touched: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in COLLECTIONS})

    def __bool__(self) -> bool:
        return bool(self.updates) or any(self.touched.values())

    def record_count(self) -> int:
        return sum(len(ids) for ids in self.touched.values())


def _record_from_value(value: Any) -> Record | None:
    if isinstance(value, Map):
        # yrs serialises the whole nested map to JSON natively: ~4x faster than Map.to_py().
        decoded = orjson.loads(str(value))
        return decoded if isinstance(decoded, dict) else None
    if isinstance(value, dict):
        # A client wrote the record as one JSON value instead of a Y.Map. pycrdt hands numbers
        # back as floats (90.0) where the yrs JSON that records() reads says 90, so go through
        # the same JSON: one record must read the same whichever way it is read.
        scratch: Doc[Any] = Doc()
        holder = scratch.get("record", type=Map)
        holder["value"] = value
        decoded = orjson.loads(str(holder)).get("value")
        return decoded if isinstance(decoded, dict) else None
    return None


class FleetDocument:
    """A tenant's fleet document, in the shape ARCHITECTURE.md fixes."""

    def __init__(self, doc: Doc[Any] | None = None) -> None:
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.maps: dict[str, Map[Any]] = {name: self.doc.get(name, type=Map) for name in COLLECTIONS}
        self.meta: Map[Any] = self.doc.get(META, type=Map)
        self._changes = Changes()
        # Bumped by every transaction that changed something (a delete too, which leaves the
        # state vector as it was): what a cache of encoded state is keyed on.
        self.revision = 0
        self._full_update: tuple[int, bytes] | None = None
        self._device_owners: dict[str, str] | None = None  # device_id -> vehicle id, built lazily
        self._device_of: dict[str, str] = {}  # vehicle id -> device_id, the same index reversed
        self._subscriptions = [self.doc.observe(self._on_transaction)]
        self._deep: dict[str, Any] = {}
        self._observe_records()

    def _observe_records(self) -> None:
        # Subscribed on the underlying yrs map: pycrdt's observe_deep wraps every event (target,
        # keys with old and new values, path) in Python objects first, which cost more than
        # applying a small update; the observers here read only the path, and keys when needed.
        for name, ymap in self.maps.items():
            self._deep[name] = ymap.integrated.observe_deep(self._observer_for(name))

    def _unobserve_records(self) -> None:
        for name in self.maps:
            self._deep.pop(name).drop()

    # -- observers: queue only, never read the document here -----------------------------------

    def _on_transaction(self, event: TransactionEvent) -> None:
        update = event.update
        if update != EMPTY_UPDATE:
            self.revision += 1
            self._changes.updates.append(update)

    def _observer_for(self, collection: str) -> Any:
        vehicles = collection == "vehicles"

        def on_change(events: list[Any]) -> None:
            # Raw yrs events (see _observe_records), valid only during this call.
            touched = self._changes.touched[collection]  # looked up each time: take_changes swaps it
            for event in events:
                path = event.path
                if path:
                    touched.add(str(path[0]))  # a field inside a record changed
                    if vehicles and isinstance(event, RawMapEvent) and "device_id" in event.keys:  # type: ignore[attr-defined]
                        self._device_owners = None  # rebuilt on next use: no reads in here
                elif isinstance(event, RawMapEvent):  # records added or removed
                    touched.update(str(key) for key in event.keys)  # type: ignore[attr-defined]
                    if vehicles:
                        self._device_owners = None

        return on_change

    def take_changes(self) -> Changes:
        """Hand over everything observed since the last call, and start afresh."""
        changes, self._changes = self._changes, Changes()
        return changes

    # -- reads ---------------------------------------------------------------------------------

    def collection(self, name: str) -> Map[Any]:
        try:
            return self.maps[name]
        except KeyError:
            raise UnknownCollection(f"{name!r} is not one of {', '.join(COLLECTIONS)}") from None

    def record(self, collection: str, record_id: str) -> Record | None:
        ymap = self.collection(collection)
        return _record_from_value(ymap.get(record_id)) if record_id in ymap else None

    def records_for(self, collection: str, record_ids: Iterable[str]) -> dict[str, Record | None]:
        """The given records (None for ids the document lacks), read in one document transaction."""
        ymap = self.collection(collection)
        with self.doc.transaction():
            return {rid: _record_from_value(ymap.get(rid)) for rid in record_ids}

    def records(self, collection: str) -> dict[str, Record]:
        """Every record of a collection, decoded in one pass."""
        ymap = self.collection(collection)
        with self.doc.transaction() as txn:
            # When every record is a nested map (always, unless a client wrote one as a plain
            # JSON value), yrs serialises each one and orjson reads them all in one go: a fifth
            # faster than yrs serialising the whole collection, which first builds one tree of
            # every record. The JSON of each record is the same either way.
            raw, raw_txn = ymap.integrated, txn._txn
            keys = raw.keys(raw_txn)
            values = [raw.get(raw_txn, key) for key in keys]
            if set(map(type, values)) <= _RAW_MAP:
                decoded = orjson.loads("[" + ",".join([value.to_json(raw_txn) for value in values]) + "]")
                return dict(zip(keys, decoded, strict=True))
        whole = orjson.loads(str(ymap))
        return {rid: value for rid, value in whole.items() if isinstance(value, dict)}

    def size(self, collection: str) -> int:
        """How many records a collection holds; yrs counts them one by one, so not for hot paths."""
        return len(self.collection(collection))

    def ids(self, collection: str) -> set[str]:
        return set(self.collection(collection).keys())

    def device_owner(self, device_id: str) -> str | None:
        """Which vehicle uses a tracker id, from an index kept across calls (device ids are unique
        per tenant, and checking that by scanning every vehicle would make bulk creates quadratic)."""
        if self._device_owners is None:
            owners: dict[str, str] = {}
            self._device_of = {}
            for record_id, record in self.records("vehicles").items():
                device = record.get("device_id")
                if isinstance(device, str) and device:
                    owners.setdefault(device, record_id)
                    self._device_of[record_id] = device
            self._device_owners = owners
        return self._device_owners.get(device_id)

    def _note_device(self, collection: str, record_id: str, fields: Mapping[str, Any]) -> None:
        if collection == "vehicles" and self._device_owners is not None:
            previous = self._device_of.pop(record_id, None)
            if previous is not None and self._device_owners.get(previous) == record_id:
                del self._device_owners[previous]
            new_device = fields.get("device_id")
            if isinstance(new_device, str) and new_device:
                self._device_owners.setdefault(new_device, record_id)
                self._device_of[record_id] = new_device

    def schema_version(self) -> int | None:
        value = self.meta.get("schema_version")
        return int(value) if isinstance(value, (int, float)) else None

    def snapshot(self) -> dict[str, dict[str, Record]]:
        return {name: self.records(name) for name in COLLECTIONS}

    # -- writes --------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, origin: str = "local") -> Iterator[None]:
        with self.doc.transaction(origin=origin):
            yield

    def ensure_meta(self) -> None:
        if self.meta.get("schema_version") is None:
            self.meta["schema_version"] = SCHEMA_VERSION

    def put_record(self, collection: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Create a record as a nested map, so later edits of different fields merge."""
        self.collection(collection)[record_id] = Map({k: v for k, v in fields.items() if v is not None})
        self._note_device(collection, record_id, fields)

    def set_fields(self, collection: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Change fields one by one; None removes a field."""
        value = self.collection(collection)[record_id]
        if not isinstance(value, Map):
            raise TypeError(f"{collection}/{record_id} is not a nested map and cannot be edited field by field")
        for key, new in fields.items():
            if new is None:
                if key in value:
                    del value[key]
            else:
                value[key] = new
        if "device_id" in fields:
            self._device_owners = None
    def delete_record(self, collection: str, record_id: str) -> bool:
        ymap = self.collection(collection)
        if record_id not in ymap:
            return False
        del ymap[record_id]
        if collection == "vehicles":
            self._device_owners = None
        return True

    def apply_update(self, update: bytes) -> None:
        if len(update) < BULK_UPDATE_BYTES:
            self.doc.apply_update(update)
            return
        # pycrdt builds a Python event per nested change; for a bulk update (an initial sync)
        # that costs more than applying it, so mark every record touched instead. The
        # transaction observer goes too: its event re-encodes everything the update added
        # (a third of the cost of applying it), so the raw update stands in for that delta.
        self._unobserve_records()
        self.doc.unobserve(self._subscriptions.pop())
        try:
            self.doc.apply_update(update)
        finally:
            self._subscriptions.append(self.doc.observe(self._on_transaction))
            self._observe_records()
        self.revision += 1
        self._changes.updates.append(update)
        for name in self.maps:
            self._changes.touched[name].update(self.ids(name))
            self._changes.everything.add(name)

    def get_update(self, state: bytes | None = None) -> bytes:
        return self.doc.get_update(state)

    def full_update(self) -> bytes:
        """The whole document as one update, what a new empty client asks for; encoded once per
        revision (about 20 ms for a 7.7 MB tenant), not once per client of a reconnect storm."""
        if self._full_update is None or self._full_update[0] != self.revision:
            self._full_update = (self.revision, self.doc.get_update())
        return self._full_update[1]

    def get_state(self) -> bytes:
        return self.doc.get_state()
