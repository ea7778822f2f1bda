"""The shortcuts taken for speed give exactly the answers of the slow paths they skip."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import Store
from sync.document import FleetDocument
from sync.mirror import Mirror
from sync.schema import COLLECTIONS, FIELDS
from sync.services import create_record, update_record
from sync.validation import ValidationError, _detailed_problems, checked, problems

from .conftest import BOWTIE, LINE, SQUARE

RING = [[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.01], [5.0, 52.0]]
HOLE = [[5.002, 52.002], [5.004, 52.002], [5.004, 52.004], [5.002, 52.002]]
GEOMETRIES: list[Any] = [
    SQUARE, BOWTIE, LINE,
    {"type": "Polygon", "coordinates": [RING, HOLE]},
    {"type": "Polygon", "coordinates": [[[5, 52], [6, 52], [6, 53], [5, 53], [5, 52]]]},  # ints
    {"type": "Polygon", "coordinates": [[[*p, 7.5] for p in RING]]},  # with heights
    {"type": "Polygon", "coordinates": [[[5.0, 52.0, 1.0], *RING[1:]]]},  # mixed dimensions
    {"type": "Polygon", "coordinates": [RING[:-1]]},  # not closed
    {"type": "Polygon", "coordinates": [[[5.0, 52.0], [True, 52.0], *RING[2:]]]},
    {"type": "Polygon", "coordinates": [[[5.0, 52.0], ["5.01", 52.0], *RING[2:]]]},
    {"type": "Polygon", "coordinates": [[[5.0, 52.0], [float("nan"), 52.0], *RING[2:]]]},
    {"type": "Polygon", "coordinates": [[[5.0, 52.0], [181.0, 52.0], *RING[2:]]]},
    {"type": "Polygon", "coordinates": [[[5.0, 52.0], [10**400, 52.0], *RING[2:]]]},
    {"type": "MultiPolygon", "coordinates": [[RING], [[[p[0] + 1, p[1]] for p in RING]]]},
    {"type": "Point", "coordinates": [5.0, 52.0]},
    {"type": "Point", "coordinates": [5, 52, 3]},
    {"type": "Point", "coordinates": [5.0, 95.0]},
    {"type": "Point", "coordinates": [False, 52.0]},
    {"type": "LineString", "coordinates": [[5.0, 52.0]]},
    {"type": "LineString", "coordinates": [[5.0, 52.0, 1.0], [5.1, 52.1, 2.0]]},
    {"type": "Polygon"},
    {"type": "Circle", "coordinates": [5.0, 52.0]},
    "POLYGON((5 52, 6 52, 6 53, 5 52))",
]

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.sampled_from([0, 0.5, 90, 400, 401, 1e9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.sampled_from(["", "  ", "x" * 201, "active", "depot", "a@b.co", "nope@",
                                          "2030-12-31", "2030-12-31T08:00:00Z", "2030-13-01T00:00:00Z"]),
    st.lists(st.integers(), max_size=2), st.sampled_from(GEOMETRIES),
    st.just([{"name": "Depot", "lon": 5.0, "lat": 52.0}]), st.just([{"name": "", "lon": 5.0, "lat": 99}]),
)


@st.composite
def records(draw: st.DrawFn) -> tuple[str, dict[Any, Any]]:
    collection = draw(st.sampled_from(COLLECTIONS))
    names = [*FIELDS[collection], "extra", "custom_list"]
    record = draw(st.dictionaries(st.sampled_from(names), VALUES, max_size=len(names)))
    if draw(st.booleans()):
        record.setdefault("name", "Named")
    return collection, record


@settings(max_examples=600, deadline=None)
@given(records())
def test_the_quick_check_agrees_with_the_detailed_checks(case: tuple[str, dict[Any, Any]]) -> None:
    collection, record = case
    assert problems(collection, record) == _detailed_problems(collection, record)


def test_records_that_are_not_plain_dicts_still_get_the_detailed_checks() -> None:
    assert problems("vehicles", {1: "x", "name": "Van"}) == _detailed_problems("vehicles", {1: "x", "name": "Van"})
    assert problems("vehicles", ["name"]) == _detailed_problems("vehicles", ["name"])  # type: ignore[arg-type]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=range(len(GEOMETRIES)))
@pytest.mark.parametrize("collection", ["routes", "geofences"])
def test_the_geometry_validation_read_is_stored_exactly_as_a_fresh_read(
    store: Store, collection: str, geometry: Any
) -> None:
    record = {"name": "G", "geometry": geometry, "radius_m": 50}
    found, parsed = checked(collection, record)
    assert found == problems(collection, record)
    if found:
        assert parsed is None
        return
    repository = store.routes if collection == "routes" else store.geofences
    assert repository.geometry_wkb(record, parsed) == repository.geometry_wkb(record)
    # (A valid record read by the detailed checks comes back without its geometry: parsed None.)
    assert parsed is None or repository.geometry_wkb(record, parsed) is not None


@pytest.fixture
def store(tmp_path: Any) -> Any:
    with Store(tmp_path / "fast.sqlite") as opened:
        yield opened


def churn(count: int) -> tuple[FleetDocument, bytes, list[str], list[bytes]]:
    source = FleetDocument()
    with source.transaction():
        ids = [create_record(source, "vehicles", {"name": f"Van {i}", "device_id": f"dev-{i}"})
               for i in range(count)]
        for i in range(3):
            create_record(source, "geofences", {"name": f"Fence {i}", "geometry": SQUARE})
    source.take_changes()
    initial = source.get_update()
    updates = []
    for i, record_id in enumerate(ids):
        with source.transaction():
            update_record(source, "vehicles", record_id, {"notes": f"change {i}"})
        updates.append(source.take_changes().updates[0])
    return source, initial, ids, updates


@pytest.mark.parametrize("burst", [1, 7, 40])
def test_bursts_of_remote_updates_leave_the_tables_equal_to_the_document(store: Store, burst: int) -> None:
    source, initial, ids, updates = churn(40)
    mirror = Mirror.open(store)
    mirror.apply_remote(initial)
    for start in range(0, len(updates), burst):
        change = mirror.apply_remote_many(updates[start:start + burst])
        assert change is not None and change.touched["vehicles"] == set(ids[start:start + burst])
    assert {v.id: v.notes for v in store.vehicles.list()} == {rid: f"change {i}" for i, rid in enumerate(ids)}
    assert mirror.document.snapshot() == source.snapshot()
    assert mirror.verify_and_repair().clean


def test_a_remote_device_change_frees_the_old_device_id_for_local_use(store: Store) -> None:
    source, initial, ids, _ = churn(3)
    mirror = Mirror.open(store)
    mirror.apply_remote(initial)
    with pytest.raises(ValidationError), mirror.edit() as document:
        create_record(document, "vehicles", {"name": "New", "device_id": "dev-1"})
    with source.transaction():
        update_record(source, "vehicles", ids[1], {"device_id": "dev-moved"})
    mirror.apply_remote(source.take_changes().updates[0])
    with mirror.edit() as document:
        create_record(document, "vehicles", {"name": "New", "device_id": "dev-1"})
    with pytest.raises(ValidationError), mirror.edit() as document:
        create_record(document, "vehicles", {"name": "Newer", "device_id": "dev-moved"})
