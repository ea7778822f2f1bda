"""The initial-sync (bulk) paths give exactly what the record-by-record paths give: validation
verdicts and geometries read in bulk, rows built a column at a time, rows written many per
statement on a worker thread, and the same one transaction for the log and the tables."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import Store
from storage import repository as repository_module
from storage.bulk import statement_queue
from storage.repository import Repository
from sync import document as document_module
from sync.document import FleetDocument
from sync.mirror import Mirror, invalid_reason
from sync.schema import COLLECTIONS
from sync.validation import BULK_GEOMETRY_MIN, checked, checked_many, problems

from .conftest import BOWTIE, LINE, SQUARE
from .test_fast_paths import GEOMETRIES, RING, records

HOLE = [[5.002, 52.002], [5.004, 52.002], [5.004, 52.004], [5.002, 52.002]]


def _wkb(geom: Any) -> bytes | None:
    return None if geom is None else bytes(shapely.to_wkb(geom))


def _same_verdicts(collection: str, batch: list[Any]) -> None:
    bulk = checked_many(collection, batch)
    one_by_one = [checked(collection, record) for record in batch]
    assert [found for found, _ in bulk] == [found for found, _ in one_by_one]
    assert [_wkb(geom) for _, geom in bulk] == [_wkb(geom) for _, geom in one_by_one]
    assert [found for found, _ in bulk] == [problems(collection, record) for record in batch]


@pytest.mark.parametrize("collection", ["routes", "geofences"])
def test_geometries_read_in_bulk_are_those_read_one_by_one(collection: str) -> None:
    # Every geometry of the fast-path tests, in batches big enough for the array functions:
    # alone (so one bad geometry cannot hide behind good ones), and all mixed together.
    for geometry in GEOMETRIES:
        _same_verdicts(collection, [{"name": "G", "geometry": geometry, "radius_m": 50}] * BULK_GEOMETRY_MIN)
    mixed = [{"name": f"G{i}", "geometry": GEOMETRIES[i % len(GEOMETRIES)], "radius_m": 50} for i in range(200)]
    _same_verdicts(collection, mixed)


def test_bulk_polygons_keep_holes_and_reject_only_the_bad_ones() -> None:
    good = {"name": "Holed", "geometry": {"type": "Polygon", "coordinates": [RING, HOLE]}}
    bad = {"name": "Bowtie", "geometry": BOWTIE}
    batch = [good] * 20 + [bad] + [good] * 20
    verdicts = checked_many("geofences", batch)
    assert [bool(found) for found, _ in verdicts] == [False] * 20 + [True] + [False] * 20
    assert verdicts[0][1] is not None and len(verdicts[0][1].interiors) == 1  # type: ignore[attr-defined]
    _same_verdicts("geofences", batch)


@settings(max_examples=60, deadline=None)
@given(st.lists(records(), min_size=BULK_GEOMETRY_MIN, max_size=60))
def test_random_batches_get_the_verdicts_of_one_record_at_a_time(cases: list[tuple[str, dict[Any, Any]]]) -> None:
    for collection in COLLECTIONS:
        batch = [record for name, record in cases if name == collection]
        _same_verdicts(collection, batch * (1 + BULK_GEOMETRY_MIN // max(1, len(batch))))


@pytest.fixture
def store(tmp_path: Any) -> Any:
    with Store(tmp_path / "bulk.sqlite") as opened:
        yield opened


def _repositories(store: Store) -> dict[str, Repository[Any]]:
    return {"vehicles": store.vehicles, "drivers": store.drivers, "routes": store.routes, "geofences": store.geofences}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Store(tmp_path_factory.mktemp("rows") / "scratch.sqlite") as opened:
        yield opened


@settings(max_examples=40, deadline=None)
@given(cases=st.lists(records(), min_size=20, max_size=80))
def test_rows_built_a_column_at_a_time_equal_rows_built_one_by_one(
    scratch: Store, cases: list[tuple[str, dict[Any, Any]]]
) -> None:
    for collection, repository in _repositories(scratch).items():
        batch = [record for name, record in cases if name == collection] * 20
        items = [(f"id{i}", record, f"reason {i}" if i % 3 == 0 else None) for i, record in enumerate(batch)]
        parsed = [geom for _, geom in checked_many(collection, batch)]
        try:
            expected = [repository._row(rid, record, reason, geom)
                        for (rid, record, reason), geom in zip(items, parsed, strict=True)]
        except TypeError:  # an integer beyond 64 bits has no JSON for `data`: both paths refuse it
            with pytest.raises(TypeError):
                repository._rows(items, parsed)
            continue
        assert repository._rows(items, parsed) == expected
        assert repository._rows(items) == [repository._row(rid, record, reason) for rid, record, reason in items]


def _tenant() -> tuple[FleetDocument, dict[str, set[str]]]:
    """A tenant with every kind of record, valid and invalid, more than the bulk thresholds."""
    source = FleetDocument()
    invalid: dict[str, set[str]] = {name: set() for name in COLLECTIONS}
    shapes: list[dict[str, Any]] = [
        SQUARE, {"type": "Polygon", "coordinates": [RING, HOLE]},
        {"type": "MultiPolygon", "coordinates": [[RING], [[[p[0] + 1, p[1]] for p in RING]]]},
        {"type": "Point", "coordinates": [5.0, 52.0]},
        {"type": "Polygon", "coordinates": [[[*p, 7.5] for p in RING]]},
    ]
    with source.transaction():
        for i in range(120):
            fields: dict[str, Any] = {"name": f"Van {i}", "plate": f"B {i}", "speed_limit_kph": 80 + i % 3 * 0.5,
                                      "device_id": f"dev-{i}", "custom": {"a": [i]}}
            if i % 17 == 0:
                fields["speed_limit_kph"] = True  # a boolean where a number belongs
                invalid["vehicles"].add(f"v{i}")
            if i % 23 == 0:
                fields["plate"] = {"not": "text"}
                invalid["vehicles"].add(f"v{i}")
            source.put_record("vehicles", f"v{i}", fields)
        for i in range(40):
            source.put_record("drivers", f"d{i}", {"name": f"Driver {i}", "email": "x@y.org" if i % 5 else "nope"})
            if i % 5 == 0:
                invalid["drivers"].add(f"d{i}")
        for i in range(60):
            geometry = BOWTIE if i % 11 == 0 else shapes[i % len(shapes)]
            source.put_record("geofences", f"g{i}", {"name": f"Fence {i}", "geometry": geometry, "radius_m": 100})
            if i % 11 == 0:
                invalid["geofences"].add(f"g{i}")
        for i in range(30):
            line = LINE if i % 7 else {"type": "LineString", "coordinates": [[5.0, 52.0]]}
            source.put_record("routes", f"r{i}", {"name": f"Route {i}", "geometry": line})
            if i % 7 == 0:
                invalid["routes"].add(f"r{i}")
    source.take_changes()
    return source, invalid


def test_a_bulk_initial_sync_stores_what_the_record_by_record_path_stores(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, invalid = _tenant()
    update = source.get_update()
    with Store(tmp_path / "reference.sqlite") as reference_store:
        reference = Mirror.open(reference_store)
        reference.apply_remote(update)  # small: the ordinary path
        expected = {name: repo.stored_rows() for name, repo in _repositories(reference_store).items()}
    monkeypatch.setattr(document_module, "BULK_UPDATE_BYTES", 1000)
    with Store(tmp_path / "bulk.sqlite") as bulk_store:
        mirror = Mirror.open(bulk_store)
        change = mirror.apply_remote(update)
        assert change is not None and change.touched["vehicles"] == source.ids("vehicles")
        assert {name: repo.stored_rows() for name, repo in _repositories(bulk_store).items()} == expected
        assert mirror.verify_and_repair().clean  # every row as expected_row, one record at a time, says
        for name, repository in _repositories(bulk_store).items():
            flagged = {row.id for row in repository.invalid()}
            assert flagged == invalid[name], name
        assert bulk_store.scalar("SELECT count(*) FROM idx_geofences_geometry") == \
            bulk_store.scalar("SELECT count(*) FROM geofences WHERE geometry IS NOT NULL")
        assert [e.payload for e in bulk_store.sync_log.entries()] == [update]
        # A restart reads the same document back from the log and finds nothing to repair.
    with Store(tmp_path / "bulk.sqlite") as reopened:
        assert Mirror.open(reopened).document.snapshot() == source.snapshot()


def test_a_bulk_sync_replaces_rows_the_document_no_longer_has(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = _tenant()
    with Store(tmp_path / "stale.sqlite") as store:
        store.vehicles.upsert("ghost", {"name": "Not in the document"})
        monkeypatch.setattr(document_module, "BULK_UPDATE_BYTES", 1000)
        mirror = Mirror.open(store)
        mirror.apply_remote(source.get_update())
        assert "ghost" not in store.vehicles.ids()
        assert store.vehicles.ids() == source.ids("vehicles")


def test_a_failed_bulk_write_leaves_neither_log_nor_rows(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = _tenant()
    monkeypatch.setattr(document_module, "BULK_UPDATE_BYTES", 1000)

    class DiskFull(Exception):
        pass

    def failing_job(self: Any, rows: Any, deletes: Any = ()) -> Any:
        def run(conn: Any) -> None:
            raise DiskFull

        return run

    with Store(tmp_path / "fail.sqlite") as store:
        mirror = Mirror.open(store)
        monkeypatch.setattr(type(store.routes), "insert_job", failing_job)
        with pytest.raises(DiskFull):
            mirror.apply_remote(source.get_update())
        assert store.sync_log.size() == 0
        assert all(repository.count() == 0 for repository in _repositories(store).values())
        assert mirror.document.snapshot() == FleetDocument().snapshot()  # rebuilt from the (empty) log
        monkeypatch.undo()
        mirror.apply_remote(source.get_update())  # and the next attempt goes through
        assert store.vehicles.ids() == source.ids("vehicles")


def test_the_statement_queue_runs_jobs_in_order_off_the_calling_thread(store: Store) -> None:
    seen: list[tuple[int, str]] = []
    with store.transaction() as conn, statement_queue(conn) as jobs:
        for i in range(5):
            jobs.submit(lambda c, i=i: seen.append((i, threading.current_thread().name)))
    assert [i for i, _ in seen] == list(range(5))
    assert all(name != threading.current_thread().name for _, name in seen)


def test_the_statement_queue_raises_the_first_failure_and_skips_the_rest(store: Store) -> None:
    ran: list[int] = []

    def fail(conn: Any) -> None:
        raise ValueError("first")

    with pytest.raises(ValueError, match="first"), store.transaction() as conn, statement_queue(conn) as jobs:
        jobs.submit(lambda c: ran.append(1))
        jobs.submit(fail)
        jobs.submit(lambda c: ran.append(3))
    assert ran == [1]
    assert store.vehicles.count() == 0


def test_a_bulk_transaction_leaves_the_checkpoint_to_the_background(store: Store) -> None:
    with store.transaction(bulk=True) as conn:
        store.vehicles.write_rows(conn, [(f"v{i}", {"name": f"Van {i}", "notes": "x" * 500}, None)
                                         for i in range(3000)], ())
    deadline = time.monotonic() + 10
    while True:  # once the background checkpoint is done, SQLite's own checkpoints are back
        with store.transaction() as conn:
            pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        if pages == 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert pages == 1000
    assert store.vehicles.count() == 3000
    store.close()
    assert not any(t.name.startswith("checkpoint ") and t.is_alive() for t in threading.enumerate())


def test_rows_written_many_per_statement_equal_rows_written_one_per_statement(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_module, "MAX_VARIABLES", 100)  # several statements per batch
    source, _ = _tenant()
    with Store(tmp_path / "one.sqlite") as one, Store(tmp_path / "many.sqlite") as many:
        for round_ in range(2):  # the second round updates every row (the upsert's other half)
            for name in COLLECTIONS:
                items = [(rid, {**record, "notes": f"round {round_}"}, invalid_reason(name, record))
                         for rid, record in sorted(source.records(name).items())]
                with one.transaction() as conn:
                    _repositories(one)[name].write_rows(conn, items, ["nobody"])
                repository = _repositories(many)[name]
                with many.transaction() as conn:
                    repository.insert_rows(conn, repository.build_rows(items), ["nobody"])
        for name in COLLECTIONS:
            assert _repositories(many)[name].stored_rows() == _repositories(one)[name].stored_rows()
            assert many.query(f"SELECT fid, id FROM {name} ORDER BY fid") == \
                one.query(f"SELECT fid, id FROM {name} ORDER BY fid")
        for index in ("idx_geofences_geometry", "idx_routes_geometry"):
            rows = f"SELECT pkid, xmin, xmax, ymin, ymax FROM {index} ORDER BY pkid"
            assert [tuple(r) for r in many.query(rows)] == [tuple(r) for r in one.query(rows)]
