"""The mirror: every document change lands in the SpatiaLite tables and the update log together,
the tables can always be rebuilt from the log, and compaction never loses a change."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pycrdt import merge_updates

from storage import Store
from sync import mirror as mirror_module
from sync.document import FleetDocument
from sync.mirror import CompactionNotLossless, Mirror, MirrorChange
from sync.schema import COLLECTIONS
from sync.services import LocalFleet
from sync.validation import ValidationError

from .conftest import BOWTIE, LINE, SQUARE, Replicas


def all_rows(store: Store) -> dict[str, dict[str, tuple[Any, ...]]]:
    repositories = {"vehicles": store.vehicles, "drivers": store.drivers,
                    "routes": store.routes, "geofences": store.geofences}
    return {name: repositories[name].stored_rows() for name in COLLECTIONS}


def log_view(store: Store) -> list[tuple[int, bytes, str, bool]]:
    return [(e.seq, e.payload, e.origin, e.acked) for e in store.sync_log.entries()]


def remote_update(edit: Any) -> bytes:
    """The update another replica (its own client id) produces for one transaction."""
    other = FleetDocument()
    with other.transaction():
        edit(other)
    return other.get_update()


def populate(fleet: LocalFleet) -> dict[str, str]:
    ids = {
        "driver": fleet.create("drivers", {"name": "Ada", "email": "ada@example.com"}),
        "depot": fleet.create("geofences", {"name": "Depot", "geometry": SQUARE, "kind": "depot"}),
        "circle": fleet.create("geofences", {"name": "Circle", "geometry": {"type": "Point",
                                                                          "coordinates": [5.0, 52.0]},
                                             "radius_m": 250}),
    }
    ids["van"] = fleet.create("vehicles", {"name": "Van", "driver_id": ids["driver"], "speed_limit_kph": 90})
    ids["route"] = fleet.create("routes", {"name": "North", "geometry": LINE, "vehicle_id": ids["van"],
                                           "stops": [{"name": "A", "lon": 5.0, "lat": 52.0}]})
    return ids


# -- writing ---------------------------------------------------------------------------------


def test_a_local_edit_lands_in_its_table_and_the_log(mirror: Mirror) -> None:
    fleet = LocalFleet(mirror)
    van = fleet.create("vehicles", {"name": "Van 12", "plate": "AB-123-C", "speed_limit_kph": 90})

    row = mirror.store.vehicles.get(van)
    assert row is not None
    assert (row.name, row.plate, row.speed_limit_kph, row.status, row.invalid_reason) == (
        "Van 12", "AB-123-C", 90.0, "active", None)
    assert row.data == mirror.document.record("vehicles", van)
    entries = mirror.store.sync_log.entries()
    assert [(e.origin, e.acked) for e in entries] == [("local", False)]
    assert mirror.store.sync_log.pending_count() == 1

    fleet.update("vehicles", van, {"plate": "ZZ-999-Z"})
    assert mirror.store.vehicles.get(van).plate == "ZZ-999-Z"  # type: ignore[union-attr]
    assert mirror.store.sync_log.pending_count() == 2

    fleet.delete("vehicles", van)
    assert mirror.store.vehicles.get(van) is None
    assert mirror.store.sync_log.pending_count() == 3


def test_log_rows_and_table_rows_are_never_seen_apart(mirror: Mirror) -> None:
    """A reader on another connection sees every create's log row and table row together or not at all."""
    fleet = LocalFleet(mirror)
    store = mirror.store
    seen: list[tuple[int, int]] = []
    done = threading.Event()
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            while not done.is_set():
                seen.append(tuple(store.query(
                    "SELECT (SELECT count(*) FROM crdt_log), (SELECT count(*) FROM vehicles)")[0]))
        except BaseException as exc:  # surfaced in the test thread below
            failure.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(60):
            fleet.create("vehicles", {"name": f"Van {i}"})
    finally:
        done.set()
        watcher.join()
    assert not failure
    assert seen, "the watcher never read"
    torn = [pair for pair in seen if pair[0] != pair[1]]
    assert torn == []
    assert store.sync_log.size() == store.vehicles.count() == 60


def test_a_failing_table_write_leaves_no_log_row_and_no_change_in_memory(mirror: Mirror) -> None:
    store = mirror.store
    fleet = LocalFleet(mirror)
    fleet.create("vehicles", {"name": "fine"})
    with store.transaction() as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON vehicles WHEN NEW.name = 'boom' "
                     "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    before = log_view(store)

    with pytest.raises(Exception, match="disk says no"):
        fleet.create("vehicles", {"name": "boom"})

    assert log_view(store) == before
    assert [v.name for v in store.vehicles.list()] == ["fine"]
    # The document went back to what the log holds, so the failed edit is not synced later either.
    assert sorted(r["name"] for r in mirror.document.records("vehicles").values()) == ["fine"]
    assert mirror.verify_and_repair().clean


def test_an_invalid_local_edit_changes_nothing(mirror: Mirror) -> None:
    fleet = LocalFleet(mirror)
    with pytest.raises(ValidationError, match="geometry"):
        fleet.create("geofences", {"name": "Bow", "geometry": BOWTIE})
    assert mirror.store.sync_log.size() == 0
    assert mirror.store.geofences.count() == 0
    assert mirror.document.records("geofences") == {}


def test_a_remote_update_is_mirrored_and_logged_as_acked(mirror: Mirror) -> None:
    update = remote_update(lambda d: (d.put_record("drivers", "d1", {"name": "Grace", "phone": "+31 6"}),
                                      d.put_record("routes", "r1", {"name": "South", "geometry": LINE})))
    change = mirror.apply_remote(update)

    assert change is not None
    assert change.origin == "remote" and change.local_updates == []
    assert change.touched["drivers"] == {"d1"} and change.touched["routes"] == {"r1"}
    driver = mirror.store.drivers.get("d1")
    assert driver is not None and (driver.name, driver.phone, driver.invalid_reason) == ("Grace", "+31 6", None)
    route = mirror.store.routes.get("r1")
    assert route is not None and route.corridor_m == 100.0 and route.invalid_reason is None
    assert mirror.store.routes.in_bbox((5.05, 52.0, 5.15, 52.2))[0].id == "r1"
    assert [(e.payload, e.origin, e.acked) for e in mirror.store.sync_log.entries()] == [(update, "remote", True)]
    assert mirror.store.sync_log.pending_count() == 0


def test_invalid_remote_records_are_mirrored_and_flagged_never_dropped(mirror: Mirror) -> None:
    update = remote_update(lambda d: (
        d.put_record("geofences", "bow", {"name": "Bow tie", "geometry": BOWTIE}),
        d.put_record("vehicles", "nameless", {"plate": "NO-NAME"}),
        d.put_record("vehicles", "fine", {"name": "Fine"}),
    ))
    mirror.apply_remote(update)
    store = mirror.store

    bow = store.geofences.get("bow")
    assert bow is not None
    assert bow.invalid_reason is not None and bow.invalid_reason.startswith("geometry: polygon is invalid")
    assert "Self-intersection" in bow.invalid_reason
    assert bow.data == {"name": "Bow tie", "geometry": BOWTIE}
    nameless = store.vehicles.get("nameless")
    assert nameless is not None and nameless.plate == "NO-NAME"
    assert nameless.invalid_reason == "name: is required"
    assert {v.id for v in store.vehicles.invalid()} == {"nameless"}
    assert store.vehicles.get("fine").invalid_reason is None  # type: ignore[union-attr]
    assert mirror.verify_and_repair().clean

    # Fixing the record remotely clears the flag.
    fix = FleetDocument()
    fix.apply_update(mirror.document.get_update())
    with fix.transaction():
        fix.set_fields("vehicles", "nameless", {"name": "Named at last"})
    mirror.apply_remote(fix.get_update(mirror.document.get_state()))
    assert store.vehicles.get("nameless").invalid_reason is None  # type: ignore[union-attr]


def test_values_of_the_wrong_type_are_flagged_and_the_tables_stay_verifiably_in_step(replicas: Replicas) -> None:
    """A number where text belongs (or text where a number belongs) must not be converted by
    SQLite's column affinity: otherwise the row never equals its record and every start repairs it."""
    mirror = replicas.mirror("typed")
    mirror.apply_remote(remote_update(lambda d: (
        d.put_record("vehicles", "odd", {"name": 5, "plate": 12.5, "speed_limit_kph": "90", "notes": True}),
        d.put_record("geofences", "odd", {"name": "G", "geometry": SQUARE, "active": "yes", "speed_limit_kph": "7"}),
        d.put_record("routes", "odd", {"name": "R", "geometry": LINE, "corridor_m": [1, 2]}),
    )))
    for repository in (mirror.store.vehicles, mirror.store.geofences, mirror.store.routes):
        row = repository.get("odd")
        assert row is not None and row.invalid_reason, repository.table
    odd = mirror.store.vehicles.get("odd")
    assert odd is not None and odd.data["speed_limit_kph"] == "90"  # the raw value survives in data
    assert mirror.verify_and_repair().clean

    reopened = Mirror(Store(mirror.store.path))
    replicas.stores.append(reopened.store)
    assert reopened.load().clean


def test_open_rebuilds_the_document_from_the_log_after_reopening(replicas: Replicas) -> None:
    mirror = replicas.mirror("fleet")
    fleet = LocalFleet(mirror)
    ids = populate(fleet)
    fleet.update("vehicles", ids["van"], {"notes": "service due", "speed_limit_kph": None})
    fleet.delete("geofences", ids["circle"])
    mirror.apply_remote(remote_update(lambda d: d.put_record("drivers", "remote", {"name": "Remote"})))
    snapshot, rows = mirror.document.snapshot(), all_rows(mirror.store)

    reopened = replicas.reopen(mirror)

    assert reopened.document.snapshot() == snapshot
    assert all_rows(reopened.store) == rows
    assert reopened.verify_and_repair().clean
    assert reopened.store.sync_log.pending_count() == 7


def test_tampered_tables_are_repaired_from_the_document(replicas: Replicas) -> None:
    mirror = replicas.mirror("fleet")
    ids = populate(LocalFleet(mirror))
    expected = all_rows(mirror.store)
    store = mirror.store
    with store.transaction() as conn:
        conn.execute("DELETE FROM drivers WHERE id = ?", (ids["driver"],))
        conn.execute("UPDATE vehicles SET name = 'tampered', speed_limit_kph = 5 WHERE id = ?", (ids["van"],))
        conn.execute("INSERT INTO vehicles (id, name, data) VALUES ('ghost', 'Ghost', '{}')")
        conn.execute("UPDATE geofences SET geometry = NULL WHERE id = ?", (ids["depot"],))
        conn.execute("UPDATE routes SET invalid_reason = 'made up' WHERE id = ?", (ids["route"],))
    assert all_rows(store) != expected

    report = mirror.verify_and_repair()

    assert (report.rewritten, report.removed) == (4, 1)
    assert all_rows(store) == expected
    assert store.geofences.containing(5.005, 52.005)[0].id == ids["depot"]  # the spatial index is back too
    assert mirror.verify_and_repair().clean


def test_tampering_while_closed_is_repaired_when_the_mirror_opens(replicas: Replicas) -> None:
    mirror = replicas.mirror("fleet")
    ids = populate(LocalFleet(mirror))
    expected = all_rows(mirror.store)
    with mirror.store.transaction() as conn:
        conn.execute("DELETE FROM routes")
        conn.execute("UPDATE geofences SET kind = 'restricted', geometry = NULL WHERE id = ?", (ids["circle"],))
        conn.execute("INSERT INTO drivers (id, name, data) VALUES ('ghost', 'Ghost', '{}')")
    path = mirror.store.path
    mirror.store.close()

    store = Store(path)
    replicas.stores.append(store)
    reopened = Mirror(store)
    report = reopened.load()

    assert (report.rewritten, report.removed) == (2, 1)
    assert all_rows(store) == expected
    assert reopened.verify_and_repair().clean


# -- compaction ------------------------------------------------------------------------------


def build_log_for_compaction(mirror: Mirror) -> tuple[int, int]:
    """Acked remote and local rows, then unacked local rows with a remote row between them.

    Returns (last seq that may be folded, number of rows up to it)."""
    fleet = LocalFleet(mirror)
    store = mirror.store
    for i in range(3):
        mirror.apply_remote(remote_update(lambda d, i=i: d.put_record("drivers", f"r{i}", {"name": f"Remote {i}"})))
    van = fleet.create("vehicles", {"name": "Van"})
    fleet.update("vehicles", van, {"plate": "AB-1"})
    store.sync_log.mark_acked_upto(store.sync_log.max_seq())
    foldable = store.sync_log.max_seq()
    fleet.create("geofences", {"name": "Depot", "geometry": SQUARE})  # unacked from here on
    mirror.apply_remote(remote_update(lambda d: d.put_record("drivers", "late", {"name": "Late"})))
    fleet.update("vehicles", van, {"notes": "unacked"})
    return foldable, len([e for e in store.sync_log.entries() if e.seq <= foldable])


def test_compaction_folds_acked_rows_and_keeps_unacked_and_later_rows(replicas: Replicas) -> None:
    mirror = replicas.mirror("fleet")
    store = mirror.store
    foldable, folded_count = build_log_for_compaction(mirror)
    before = log_view(store)
    kept = [entry for entry in before if entry[0] > foldable]
    snapshot, rows, pending = mirror.document.snapshot(), all_rows(store), store.sync_log.pending_count()

    result = mirror.compact()

    assert result.folded_rows == folded_count == 5
    after = log_view(store)
    assert after[0][0] == foldable and after[0][2] == "snapshot" and after[0][3] is True
    assert result.snapshot_bytes == len(after[0][1])
    assert after[1:] == kept
    assert store.sync_log.pending_count() == pending == 2

    reopened = replicas.reopen(mirror)
    assert reopened.document.snapshot() == snapshot
    assert all_rows(reopened.store) == rows
    assert reopened.verify_and_repair().clean

    # Acks keep working on the kept rows' sequence numbers, and a later compaction folds again.
    reopened.store.sync_log.mark_acked_upto(reopened.store.sync_log.max_seq())
    assert reopened.store.sync_log.pending_count() == 0
    assert reopened.compact().folded_rows == 4
    assert [e.origin for e in reopened.store.sync_log.entries()] == ["snapshot"]
    assert replicas.reopen(reopened).document.snapshot() == snapshot


def test_compaction_of_updates_from_many_writers_is_not_refused(mirror: Mirror) -> None:
    """State vectors list clients in hash order; equal documents must not look different."""
    for i in range(12):
        mirror.apply_remote(remote_update(lambda d, i=i: d.put_record("vehicles", f"v{i}", {"name": f"Van {i}"})))
    snapshot = mirror.document.snapshot()

    result = mirror.compact()

    assert result.folded_rows == 12
    assert mirror.store.sync_log.size() == 1
    rebuilt = FleetDocument()
    rebuilt.apply_update(mirror.store.sync_log.entries()[0].payload)
    assert rebuilt.snapshot() == snapshot


def test_compaction_that_would_lose_data_raises_and_deletes_nothing(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = replicas.mirror("fleet")
    build_log_for_compaction(mirror)
    before = log_view(mirror.store)
    snapshot = mirror.document.snapshot()
    monkeypatch.setattr(mirror_module, "merge_updates", lambda *updates: merge_updates(updates[0]))

    with pytest.raises(CompactionNotLossless, match="left untouched"):
        mirror.compact()

    assert log_view(mirror.store) == before
    monkeypatch.undo()
    assert replicas.reopen(mirror).document.snapshot() == snapshot


def test_compaction_with_nothing_to_fold_does_nothing(mirror: Mirror) -> None:
    fleet = LocalFleet(mirror)
    fleet.create("vehicles", {"name": "Unacked"})
    fleet.create("vehicles", {"name": "Also unacked"})
    before = log_view(mirror.store)
    result = mirror.compact()
    assert (result.folded_rows, result.snapshot_bytes) == (0, 0)
    assert log_view(mirror.store) == before


# -- listeners -------------------------------------------------------------------------------


def test_listeners_hear_each_change_after_it_is_committed(mirror: Mirror) -> None:
    store = mirror.store
    heard: list[tuple[MirrorChange, bool, int]] = []

    def listener(change: MirrorChange) -> None:
        # Read on another thread's connection: it only sees committed rows.
        found: list[tuple[bool, int]] = []
        ids = change.touched["vehicles"]

        def look() -> None:
            found.append((all(store.vehicles.get(i) is not None for i in ids), store.sync_log.size()))

        reader = threading.Thread(target=look)
        reader.start()
        reader.join()
        heard.append((change, *found[0]))

    def broken(change: MirrorChange) -> None:
        raise RuntimeError("a broken listener")

    mirror.subscribe(broken)
    unsubscribe = mirror.subscribe(listener)
    van = LocalFleet(mirror).create("vehicles", {"name": "Van"})
    mirror.apply_remote(remote_update(lambda d: d.put_record("vehicles", "remote", {"name": "Remote"})))

    assert [(c.origin, c.touched["vehicles"], visible, size) for c, visible, size in heard] == [
        ("local", {van}, True, 1),
        ("remote", {"remote"}, True, 2),
    ]
    local = heard[0][0]
    assert [seq for seq, _ in local.local_updates] == [store.sync_log.entries()[0].seq]
    assert [update for _, update in local.local_updates] == [store.sync_log.entries()[0].payload]
    assert all(not ids for name, ids in local.touched.items() if name != "vehicles")

    unsubscribe()
    LocalFleet(mirror).create("vehicles", {"name": "Unheard"})
    assert len(heard) == 2


def test_a_remote_update_that_changes_nothing_notifies_nobody(mirror: Mirror) -> None:
    heard: list[MirrorChange] = []
    update = remote_update(lambda d: d.put_record("drivers", "d1", {"name": "Ada"}))
    mirror.apply_remote(update)
    mirror.subscribe(heard.append)
    assert mirror.apply_remote(update) is None
    assert heard == []


def test_updates_that_arrive_together_are_mirrored_in_one_change(mirror: Mirror) -> None:
    writer = FleetDocument()
    updates = []
    for i in range(4):
        before = writer.get_state()
        with writer.transaction():
            writer.put_record("vehicles", f"v{i}", {"name": f"Van {i}"})
        updates.append(writer.get_update(before))
    heard: list[MirrorChange] = []
    mirror.subscribe(heard.append)

    change = mirror.apply_remote_many(updates)

    assert change is not None and heard == [change]
    assert change.touched["vehicles"] == {"v0", "v1", "v2", "v3"}
    assert mirror.store.vehicles.ids() == {"v0", "v1", "v2", "v3"}
    assert [(e.payload, e.origin, e.acked) for e in mirror.store.sync_log.entries()] == [
        (u, "remote", True) for u in updates]
    assert mirror.apply_remote_many([]) is None


def test_an_update_waiting_for_its_dependencies_survives_a_restart(replicas: Replicas) -> None:
    writer = FleetDocument()
    with writer.transaction():
        writer.put_record("vehicles", "v1", {"name": "Van"})
    first = writer.get_update()
    with writer.transaction():
        writer.set_fields("vehicles", "v1", {"plate": "AB-1"})
    mirror = replicas.mirror("fleet")
    probe = FleetDocument()
    probe.apply_update(first)
    second = writer.get_update(probe.get_state())  # only the field edit: it depends on `first`

    mirror.apply_remote(second)
    assert mirror.document.records("vehicles") == {}
    assert mirror.store.vehicles.count() == 0

    reopened = replicas.reopen(mirror)
    assert reopened.store.vehicles.count() == 0
    reopened.apply_remote(first)
    assert reopened.document.record("vehicles", "v1") == {"name": "Van", "plate": "AB-1"}
    row = reopened.store.vehicles.get("v1")
    assert row is not None and row.plate == "AB-1"
