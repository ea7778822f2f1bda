"""Keeps the SpatiaLite tables equal to the tenant document, with the CRDT update log written in
the same SQLite transaction as the tables, so a crash can never leave the two apart."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pycrdt import Decoder, Doc, merge_updates
from shapely.geometry.base import BaseGeometry

from storage import Store
from storage.bulk import StatementQueue, statement_queue
from storage.repository import Repository
from sync.document import Changes, FleetDocument, Record
from sync.schema import COLLECTIONS
from sync.validation import Problem, checked_many, problems

log = logging.getLogger(__name__)

# When at least this share of a collection was touched, decode the whole collection in one pass
# instead of record by record: per record, the one pass is only ~20% cheaper (measured with
# 10k vehicles), so decoding everything to read a tenth of it would cost 8x more.
BULK_DECODE_SHARE = 0.75
BULK_DECODE_MIN = 100
# Records per slice handed to the bulk writer's worker (about one SQLite statement each).
BULK_WRITE_SLICE = 2_000
BULK_ORDER = ("vehicles", "geofences", "routes", "drivers")


# A write touching at least this many records runs with the cyclic garbage collector paused.
# Decoding, validating and writing them allocates hundreds of thousands of lists and dicts that
# stay alive until the commit, and the collections those allocations set off walk all of them
# again and again (a third of the decode time of an initial sync), to find no cycles: the
# records are freed by reference counting once the write is done.
GC_PAUSE_RECORDS = 1_000


@contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Pause automatic garbage collection for the block, unless it is already off: the desktop
    app switches it off for good and collects on the UI thread (app/collector.py), and this
    must never switch it back on there."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass(frozen=True)
class MirrorChange:
    """One committed change to the store: what the UI refreshes and the sync client sends."""

    origin: str  # "local" or "remote"
    touched: dict[str, set[str]]
    local_updates: list[tuple[int, bytes]] = field(default_factory=list)  # (log seq, update)


@dataclass(frozen=True)
class RepairReport:
    rewritten: int
    removed: int

    @property
    def clean(self) -> bool:
        return not (self.rewritten or self.removed)


@dataclass(frozen=True)
class CompactionResult:
    folded_rows: int
    snapshot_bytes: int


class CompactionNotLossless(RuntimeError):
    """The merged snapshot did not reproduce the document; nothing was deleted."""


def invalid_reason(collection: str, record: Mapping[str, Any]) -> str | None:
    return _reason(problems(collection, record))


def _reason(found: list[Problem]) -> str | None:
    return "; ".join(f"{p.field}: {p.reason}" for p in found) if found else None


def state_vector(document: FleetDocument) -> dict[int, int]:
    """The document's state vector as {client id: clock}. Its encoded bytes list the clients in
    hash-map order, which differs between two documents holding exactly the same updates."""
    decoder = Decoder(document.get_state())
    entries = decoder.read_var_uint()
    return dict((decoder.read_var_uint(), decoder.read_var_uint()) for _ in range(entries))


def doc_from_updates(updates: list[bytes]) -> FleetDocument:
    document = FleetDocument(Doc())
    for update in updates:
        document.apply_update(update)
    document.take_changes()
    return document


def _checked_upserts(collection: str, present: list[tuple[str, Record]],
                     ) -> tuple[list[tuple[str, Record, str | None]], list[BaseGeometry | None]]:
    """The upserts for the records (id, record, invalid reason) and each one's geometry as
    validation read it, which the rows reuse instead of reading the GeoJSON again."""
    verdicts = checked_many(collection, [record for _, record in present])
    upserts = [(rid, record, _reason(found_problems) if found_problems else None)
               for (rid, record), (found_problems, _) in zip(present, verdicts, strict=True)]
    return upserts, [geom for _, geom in verdicts]


class Mirror:
    """The client's replica: a FleetDocument whose every change lands in the Store atomically."""

    def __init__(self, store: Store, document: FleetDocument | None = None) -> None:
        self.store = store
        self.document = document if document is not None else FleetDocument()
        self.lock = threading.RLock()
        self._listeners: list[Callable[[MirrorChange], None]] = []
        self._repositories: dict[str, Repository[Any]] = {
            "vehicles": store.vehicles, "drivers": store.drivers,
            "routes": store.routes, "geofences": store.geofences,
        }

    @classmethod
    def open(cls, store: Store) -> Mirror:
        """Rebuild the document from the log, then check the tables against it and repair them."""
        mirror = cls(store)
        mirror.load()
        return mirror

    def load(self) -> RepairReport:
        with self.lock:
            for entry in self.store.sync_log.entries():
                self.document.apply_update(entry.payload)
            self.document.take_changes()
            report = self.verify_and_repair()
        if not report.clean:
            log.warning("local store repaired from the update log: %s rewritten, %s removed",
                        report.rewritten, report.removed)
        return report

    def subscribe(self, listener: Callable[[MirrorChange], None]) -> Callable[[], None]:
        """Call listener after every committed change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def edit(self) -> Iterator[FleetDocument]:
        """A local transaction on the document; its update and the tables commit together after it."""
        with self.lock:
            with self.document.transaction(origin="local"):
                yield self.document
            change = self._commit(self.document.take_changes(), "local", raw_updates=None)
        self._notify(change)

    def apply_remote(self, update: bytes) -> MirrorChange | None:
        """Merge an update from the network and mirror what it changed."""
        return self.apply_remote_many([update])

    def apply_remote_many(self, updates: list[bytes]) -> MirrorChange | None:
        """Merge updates that arrived together, and mirror them in one SQLite transaction."""
        if not updates:
            return None
        with self.lock:
            for update in updates:
                self.document.apply_update(update)
            # The raw bytes go to the log, not the observed delta: an update whose dependencies
            # have not arrived yet is held pending by the Doc and must survive a restart too.
            change = self._commit(self.document.take_changes(), "remote", raw_updates=updates)
        self._notify(change)
        return change

    def _commit(self, changes: Changes, origin: str, raw_updates: list[bytes] | None) -> MirrorChange | None:
        if not changes and not raw_updates:
            return None
        local_updates: list[tuple[int, bytes]] = []
        try:
            with _collector_paused(bool(changes.everything) or changes.record_count() >= GC_PAUSE_RECORDS):
                self._write_log_and_tables(changes, origin, raw_updates, local_updates)
        except BaseException:
            # The document already holds the change but the log does not: go back to what the
            # log says, so memory never runs ahead of disk (a remote change is simply re-sent
            # by the server at the next handshake; a local edit fails as a whole).
            self._rebuild_from_log()
            raise
        if not changes.record_count() and not local_updates:
            return None
        return MirrorChange(origin, changes.touched, local_updates)

    def _rebuild_from_log(self) -> None:
        self.document = FleetDocument()
        for entry in self.store.sync_log.entries():
            self.document.apply_update(entry.payload)
        self.document.take_changes()

    def _write_log_and_tables(self, changes: Changes, origin: str, raw_updates: list[bytes] | None,
                              local_updates: list[tuple[int, bytes]]) -> None:
        bulk = bool(changes.everything) and raw_updates is not None
        # A bulk update (an initial sync) leaves copying its ~20 MB of WAL into the database to
        # the store's background checkpoint; log and tables still commit in this one transaction.
        with self.store.transaction(bulk=bulk) as conn:
            if bulk:
                assert raw_updates is not None
                # Its statements run on a worker thread, a few thousand rows each (SQLite works
                # without the GIL meanwhile), while this thread decodes and validates the next
                # collection. The worker owns the connection until the queue is done: what this
                # thread needs from the tables is read first.
                stored = {name: self._repositories[name].ids() for name in changes.everything}
                with statement_queue(conn) as jobs:
                    jobs.submit(partial(self.store.sync_log.write_many, payloads=raw_updates, origin=origin))
                    self._write_records(conn, changes.touched, changes.everything, jobs, stored)
                return
            if raw_updates is not None:
                self.store.sync_log.write_many(conn, raw_updates, origin)
            else:
                for update in changes.updates:
                    local_updates.append((self.store.sync_log.write(conn, update, origin), update))
            self._write_records(conn, changes.touched, changes.everything)

    def _write_records(self, conn: Any, touched: dict[str, set[str]], everything: set[str],
                       jobs: StatementQueue | None = None, stored: dict[str, set[str]] | None = None) -> None:
        # In bulk, the collection written last leaves the worker a tail with nothing to overlap
        # it: the one with the least SQLite work goes last.
        order = BULK_ORDER if jobs is not None else COLLECTIONS
        for collection in sorted(touched, key=lambda name: order.index(name) if name in order else len(order)):
            ids = touched[collection]
            if not ids:
                continue
            repository = self._repositories[collection]
            if collection in everything:
                # rows the document no longer has are deleted below
                ids = ids | (stored[collection] if stored is not None else repository.ids())
            # (size() walks the whole map, so it is asked only when a bulk decode could pay off.)
            if collection in everything or (
                len(ids) > BULK_DECODE_MIN and len(ids) >= BULK_DECODE_SHARE * self.document.size(collection)
            ):
                decoded = self.document.records(collection)
                present = [(rid, record) for rid, record in decoded.items() if rid in ids]
                deletes = [rid for rid in ids if rid not in decoded]
            else:
                found = self.document.records_for(collection, ids)
                present = [(rid, record) for rid, record in found.items() if record is not None]
                deletes = [rid for rid, record in found.items() if record is None]
            if jobs is None:
                upserts, geoms = _checked_upserts(collection, present)
                repository.write_rows(conn, upserts, deletes, geoms)
                continue
            # In slices, so that the worker starts writing the first while this thread validates
            # the next (the first collection would otherwise leave it idle for its whole length).
            for start in range(0, len(present), BULK_WRITE_SLICE):
                upserts, geoms = _checked_upserts(collection, present[start:start + BULK_WRITE_SLICE])
                jobs.submit(repository.insert_job(repository.build_rows(upserts, geoms)))
            jobs.submit(repository.insert_job((), deletes))

    def _notify(self, change: MirrorChange | None) -> None:
        if change is None:
            return
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # one broken listener must not stop the others or the sync
                log.exception("mirror listener failed")

    # -- checking ------------------------------------------------------------------------------

    def verify_and_repair(self) -> RepairReport:
        """Make every table row equal the document (data and validity), and drop rows it lacks."""
        rewritten = removed = 0
        with self.lock:
            for collection in COLLECTIONS:
                repository = self._repositories[collection]
                records = self.document.records(collection)
                rows = repository.stored_rows()
                stale = []
                for rid, record in records.items():
                    reason = invalid_reason(collection, record)
                    if rows.get(rid) != repository.expected_row(rid, record, reason):
                        stale.append((rid, record, reason))
                extra = [rid for rid in rows if rid not in records]
                if stale or extra:
                    with self.store.transaction():
                        repository.upsert_many(stale)
                        repository.delete_many(extra)
                rewritten += len(stale)
                removed += len(extra)
        return RepairReport(rewritten, removed)

    # -- compaction ----------------------------------------------------------------------------

    def compact(self) -> CompactionResult:
        """Fold old log rows into one snapshot, after proving the snapshot loses nothing.

        Unacknowledged local rows and everything after them stay as they are, so the pending
        count and the acks keep working on their sequence numbers.
        """
        with self.lock:
            entries = self.store.sync_log.entries()
            unacked = [e.seq for e in entries if e.origin == "local" and not e.acked]
            limit = (min(unacked) - 1) if unacked else (entries[-1].seq if entries else 0)
            folded = [e for e in entries if e.seq <= limit]
            if len(folded) < 2:
                return CompactionResult(0, 0)
            kept = [e.payload for e in entries if e.seq > limit]
            snapshot = merge_updates(*[e.payload for e in folded])
            original = doc_from_updates([e.payload for e in entries])
            candidate = doc_from_updates([snapshot, *kept])
            if (
                candidate.snapshot() != original.snapshot()
                or state_vector(candidate) != state_vector(original)
                or candidate.snapshot() != self.document.snapshot()
            ):
                raise CompactionNotLossless(
                    f"merging log rows 1..{limit} changed the document; the log was left untouched"
                )
            self.store.sync_log.replace_with_snapshot(limit, snapshot)
            return CompactionResult(len(folded), len(snapshot))
