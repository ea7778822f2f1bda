"""The tenant document: what take_changes() reports, and that every way of reading a record agrees."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pycrdt import Map

from sync.document import EMPTY_UPDATE, FleetDocument, UnknownCollection
from sync.schema import COLLECTIONS, SCHEMA_VERSION

from .conftest import LINE, SQUARE


def canonical(value: Any) -> str:
    """Exact JSON text: 90 and 90.0 compare equal in Python but are different `data` columns."""
    return json.dumps(value, sort_keys=True)


def touched_only(document: FleetDocument, collection: str, ids: set[str]) -> None:
    changes = document.take_changes()
    expected = {c: (ids if c == collection else set()) for c in COLLECTIONS}
    assert changes.touched == expected


def test_creating_a_record_reports_its_id_and_an_update() -> None:
    document = FleetDocument()
    with document.transaction():
        document.put_record("vehicles", "v1", {"name": "Van 1", "plate": "AB-1"})
    changes = document.take_changes()
    assert changes.touched["vehicles"] == {"v1"}
    assert changes.record_count() == 1
    assert changes.updates and all(u != EMPTY_UPDATE for u in changes.updates)

    replica = FleetDocument()
    for update in changes.updates:
        replica.apply_update(update)
    assert replica.record("vehicles", "v1") == {"name": "Van 1", "plate": "AB-1"}


def test_updating_one_field_reports_only_that_record() -> None:
    document = FleetDocument()
    with document.transaction():
        document.put_record("vehicles", "v1", {"name": "Van 1"})
        document.put_record("vehicles", "v2", {"name": "Van 2"})
        document.put_record("drivers", "d1", {"name": "Ada"})
    document.take_changes()

    with document.transaction():
        document.set_fields("vehicles", "v2", {"plate": "XY-9"})
    touched_only(document, "vehicles", {"v2"})
    assert document.record("vehicles", "v2") == {"name": "Van 2", "plate": "XY-9"}


def test_deleting_a_record_reports_its_id() -> None:
    document = FleetDocument()
    with document.transaction():
        document.put_record("geofences", "g1", {"name": "Depot", "geometry": SQUARE})
        document.put_record("geofences", "g2", {"name": "Yard", "geometry": SQUARE})
    document.take_changes()

    with document.transaction():
        assert document.delete_record("geofences", "g1") is True
    touched_only(document, "geofences", {"g1"})
    assert document.record("geofences", "g1") is None
    assert document.ids("geofences") == {"g2"}
    assert document.delete_record("geofences", "g1") is False


def test_a_remote_update_reports_the_records_it_touched() -> None:
    writer, reader = FleetDocument(), FleetDocument()
    with writer.transaction():
        writer.put_record("routes", "r1", {"name": "North", "geometry": LINE})
    reader.apply_update(writer.get_update(reader.get_state()))
    reader.take_changes()

    with writer.transaction():
        writer.set_fields("routes", "r1", {"corridor_m": 250})
        writer.put_record("routes", "r2", {"name": "South", "geometry": LINE})
    reader.apply_update(writer.get_update(reader.get_state()))
    touched_only(reader, "routes", {"r1", "r2"})
    assert reader.record("routes", "r1") == {"name": "North", "geometry": LINE, "corridor_m": 250}


def test_take_changes_hands_over_once_and_starts_afresh() -> None:
    document = FleetDocument()
    with document.transaction():
        document.put_record("drivers", "d1", {"name": "Ada"})
    assert document.take_changes()
    empty = document.take_changes()
    assert not empty
    assert empty.updates == [] and empty.record_count() == 0


def test_records_equals_record_for_every_id_including_plain_json_records() -> None:
    document = FleetDocument()
    with document.transaction():
        document.put_record("vehicles", "nested", {"name": "Van", "speed_limit_kph": 90.0, "notes": "n"})
        document.put_record("geofences", "square", {"name": "Depot", "geometry": SQUARE, "active": False})
        document.put_record("routes", "line", {"name": "North", "geometry": LINE,
                                               "stops": [{"name": "A", "lon": 5, "lat": 52}]})
        # A plain Yjs client may write a whole record as one JSON value; pycrdt returns its
        # numbers as floats (90.0), where the yrs JSON records() reads says 90.
        document.collection("vehicles")["plain"] = {"name": "Plain", "speed_limit_kph": 90.0,
                                                    "geometry": {"c": [5.0, 52.5]}}
        document.collection("geofences")["plain"] = {"name": "Plain", "geometry": SQUARE}

    for collection in COLLECTIONS:
        every = document.records(collection)
        assert set(every) == document.ids(collection)
        for record_id, record in every.items():
            assert canonical(document.record(collection, record_id)) == canonical(record), (collection, record_id)


def test_a_record_written_as_a_plain_json_value_is_readable() -> None:
    writer, reader = FleetDocument(), FleetDocument()
    with writer.transaction():
        writer.collection("drivers")["d1"] = {"name": "Grace", "email": "grace@example.com"}
    reader.apply_update(writer.get_update())
    changes = reader.take_changes()

    assert changes.touched["drivers"] == {"d1"}
    assert not isinstance(reader.collection("drivers")["d1"], Map)
    assert reader.record("drivers", "d1") == {"name": "Grace", "email": "grace@example.com"}
    assert reader.records("drivers") == {"d1": {"name": "Grace", "email": "grace@example.com"}}
    assert reader.snapshot()["drivers"] == {"d1": {"name": "Grace", "email": "grace@example.com"}}


def test_a_value_that_is_not_an_object_is_not_a_record() -> None:
    document = FleetDocument()
    with document.transaction():
        document.collection("vehicles")["junk"] = "not a record"
    assert document.record("vehicles", "junk") is None
    assert document.records("vehicles") == {}
    assert document.record("vehicles", "missing") is None


def test_set_fields_with_none_removes_the_field() -> None:
    document = FleetDocument()
    with document.transaction():
        document.put_record("vehicles", "v1", {"name": "Van", "plate": "AB-1", "notes": "brakes"})
    document.take_changes()

    with document.transaction():
        document.set_fields("vehicles", "v1", {"notes": None, "plate": "CD-2", "vin": None})
    assert document.record("vehicles", "v1") == {"name": "Van", "plate": "CD-2"}
    touched_only(document, "vehicles", {"v1"})


def test_put_record_leaves_out_none_fields() -> None:
    document = FleetDocument()
    with document.transaction():
        document.put_record("vehicles", "v1", {"name": "Van", "plate": None})
    assert document.record("vehicles", "v1") == {"name": "Van"}


def test_a_plain_json_record_cannot_be_edited_field_by_field() -> None:
    document = FleetDocument()
    with document.transaction():
        document.collection("vehicles")["v1"] = {"name": "Van"}
    with pytest.raises(TypeError, match="not a nested map"), document.transaction():
        document.set_fields("vehicles", "v1", {"plate": "AB-1"})
    assert document.record("vehicles", "v1") == {"name": "Van"}


def test_edits_of_different_fields_on_two_replicas_both_survive() -> None:
    a, b = FleetDocument(), FleetDocument()
    with a.transaction():
        a.put_record("vehicles", "v1", {"name": "Van"})
    b.apply_update(a.get_update())
    with a.transaction():
        a.set_fields("vehicles", "v1", {"plate": "AB-1"})
    with b.transaction():
        b.set_fields("vehicles", "v1", {"notes": "new tyres"})
    a.apply_update(b.get_update(a.get_state()))
    b.apply_update(a.get_update(b.get_state()))
    expected = {"name": "Van", "plate": "AB-1", "notes": "new tyres"}
    assert a.record("vehicles", "v1") == b.record("vehicles", "v1") == expected


def test_an_unknown_collection_is_refused() -> None:
    document = FleetDocument()
    with pytest.raises(UnknownCollection, match="positions"):
        document.record("positions", "x")


def test_ensure_meta_sets_the_schema_version_once() -> None:
    document = FleetDocument()
    assert document.schema_version() is None
    with document.transaction():
        document.ensure_meta()
    assert document.schema_version() == SCHEMA_VERSION
    document.take_changes()
    with document.transaction():
        document.ensure_meta()
    assert not document.take_changes().updates
