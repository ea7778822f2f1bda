"""Replicas that edit offline and then sync in any order end with the same document and the same
SpatiaLite tables, row by row and geometry by geometry."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import Store
from sync.mirror import Mirror
from sync.schema import COLLECTIONS, FIELDS

ID_POOL: dict[str, list[str]] = {c: [f"{c[:-1]}-{i}" for i in range(3)] for c in COLLECTIONS}

coordinate = st.tuples(
    st.floats(min_value=4.0, max_value=6.0, allow_nan=False).map(lambda x: round(x, 5)),
    st.floats(min_value=51.0, max_value=53.0, allow_nan=False).map(lambda y: round(y, 5)),
)
size = st.floats(min_value=0.0005, max_value=0.05).map(lambda s: round(s, 5))


@st.composite
def rectangle(draw: st.DrawFn) -> list[list[list[float]]]:
    (lon, lat), width, height = draw(coordinate), draw(size), draw(size)
    ring = [[lon, lat], [lon + width, lat], [lon + width, lat + height], [lon, lat + height], [lon, lat]]
    return [ring]


@st.composite
def bowtie(draw: st.DrawFn) -> dict[str, Any]:
    (lon, lat), s = draw(coordinate), draw(size)
    ring = [[lon, lat], [lon + s, lat + s], [lon + s, lat], [lon, lat + s], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


geofence_geometry = st.one_of(
    rectangle().map(lambda rings: {"type": "Polygon", "coordinates": rings}),
    st.lists(rectangle(), min_size=1, max_size=2).map(lambda polys: {"type": "MultiPolygon", "coordinates": polys}),
    coordinate.map(lambda c: {"type": "Point", "coordinates": list(c)}),
    bowtie(),  # self-intersecting: kept and flagged on every replica
)
route_geometry = st.one_of(
    st.lists(coordinate, min_size=2, max_size=5).map(
        lambda cs: {"type": "LineString", "coordinates": [list(c) for c in cs]}),
    rectangle().map(lambda rings: {"type": "Polygon", "coordinates": rings}),  # wrong type for a route
)
stops = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(["A", "B", "Depot"]), "lon": coordinate.map(lambda c: c[0]),
                           "lat": coordinate.map(lambda c: c[1])}),
    max_size=3,
)

BY_KIND: dict[str, st.SearchStrategy[Any]] = {
    "string": st.sampled_from(["Van 1", "Truck", "ß-7", "", "x" * 30]),
    "number": st.one_of(st.sampled_from([1, 50, 90.5, 100, 0, -3, 1e6]), st.just("90")),
    "bool": st.booleans(),
    "email": st.sampled_from(["ada@example.com", "grace@example.org", "not-an-email"]),
    "date": st.sampled_from(["2030-12-31", "2031-01-15", "31/12/2030"]),
    "datetime": st.sampled_from(["2030-01-02T03:04:05Z", "2030-06-01T08:00:00+02:00", "yesterday"]),
    "stops": stops,
}


def field_value(collection: str, name: str) -> st.SearchStrategy[Any]:
    spec = FIELDS[collection][name]
    if spec.kind == "enum":
        return st.sampled_from([*(spec.choices or ()), "bogus"])
    if spec.kind == "ref":
        return st.sampled_from(ID_POOL[spec.references or "vehicles"])
    if spec.kind == "geometry":
        return geofence_geometry if collection == "geofences" else route_geometry
    if name == "radius_m":
        return st.sampled_from([50, 250.5, 1000])
    return BY_KIND[spec.kind]


@st.composite
def new_record(draw: st.DrawFn, collection: str) -> dict[str, Any]:
    specs = FIELDS[collection]
    optional = [n for n, s in specs.items() if not s.required]
    chosen = draw(st.lists(st.sampled_from(optional), max_size=4, unique=True))
    record = {name: draw(field_value(collection, name)) for name in chosen}
    for name, spec in specs.items():
        # Now and then a required field is missing: that record is flagged, not dropped.
        if spec.required and draw(st.integers(0, 9)) > 0:
            record[name] = draw(field_value(collection, name))
    return record


@st.composite
def operation(draw: st.DrawFn) -> tuple[str, str, str, Any]:
    collection = draw(st.sampled_from(COLLECTIONS))
    record_id = draw(st.sampled_from(ID_POOL[collection]))
    kind = draw(st.sampled_from(["create", "create_plain", "update", "update", "update", "delete"]))
    if kind in ("create", "create_plain"):
        return kind, collection, record_id, draw(new_record(collection))
    if kind == "update":
        names = draw(st.lists(st.sampled_from(list(FIELDS[collection])), min_size=1, max_size=3, unique=True))
        return kind, collection, record_id, {n: draw(st.none() | field_value(collection, n)) for n in names}
    return kind, collection, record_id, None


@st.composite
def scenario(draw: st.DrawFn) -> tuple[int, list[tuple[list[tuple[int, Any]], list[tuple[int, int]]]]]:
    replicas = draw(st.integers(min_value=3, max_value=5))
    index = st.integers(min_value=0, max_value=replicas - 1)
    rounds = draw(st.lists(
        st.tuples(
            st.lists(st.tuples(index, operation()), min_size=1, max_size=12),  # offline edits
            st.lists(st.tuples(index, index), max_size=8),  # then a partial sync: (source, destination)
        ),
        min_size=1, max_size=3,
    ))
    return replicas, rounds


def apply_operation(mirror: Mirror, op: tuple[str, str, str, Any]) -> None:
    kind, collection, record_id, payload = op
    with mirror.edit() as document:
        if kind == "create":
            document.put_record(collection, record_id, payload)
        elif kind == "create_plain":
            # What a plain Yjs client may do: the whole record as one JSON value.
            document.collection(collection)[record_id] = payload
        elif kind == "update":
            current = document.collection(collection).get(record_id)
            if current is not None and not isinstance(current, dict):
                document.set_fields(collection, record_id, payload)
        else:
            document.delete_record(collection, record_id)


def sync(source: Mirror, destination: Mirror) -> None:
    destination.apply_remote(source.document.get_update(destination.document.get_state()))


def table_rows(store: Store) -> dict[str, dict[str, tuple[Any, ...]]]:
    return {
        "vehicles": store.vehicles.stored_rows(),
        "drivers": store.drivers.stored_rows(),
        "routes": store.routes.stored_rows(),
        "geofences": store.geofences.stored_rows(),
    }


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A migrated, empty store to copy: creating the SpatiaLite schema is the slow part."""
    path = tmp_path_factory.mktemp("convergence") / "template.sqlite"
    Store(path).close()
    yield path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=scenario())
def test_replicas_converge_on_document_and_tables_whatever_the_sync_order(
    template_db: Path, plan: tuple[int, list[tuple[list[tuple[int, Any]], list[tuple[int, int]]]]]
) -> None:
    count, rounds = plan
    with tempfile.TemporaryDirectory() as folder:
        stores: list[Store] = []
        try:
            mirrors = []
            for i in range(count):
                path = Path(folder) / f"replica-{i}.sqlite"
                shutil.copyfile(template_db, path)
                stores.append(Store(path))
                mirrors.append(Mirror.open(stores[-1]))

            for edits, partial_syncs in rounds:
                for who, op in edits:
                    apply_operation(mirrors[who], op)
                for source, destination in partial_syncs:
                    sync(mirrors[source], mirrors[destination])

            # Full sync: everything into the first replica, then from it to everyone.
            for mirror in mirrors[1:]:
                sync(mirror, mirrors[0])
            for mirror in mirrors[1:]:
                sync(mirrors[0], mirror)

            expected_doc = mirrors[0].document.snapshot()
            expected_rows = table_rows(stores[0])
            for i, mirror in enumerate(mirrors):
                assert mirror.document.snapshot() == expected_doc, f"replica {i} document differs"
                assert table_rows(mirror.store) == expected_rows, f"replica {i} tables differ"
                assert mirror.verify_and_repair().clean, f"replica {i} tables drifted from its document"

            # Every replica's rows are what its document says, and the log rebuilds the same replica.
            mirrors[-1].store.close()
            stores.append(Store(mirrors[-1].store.path))
            reopened = Mirror(stores[-1])
            assert reopened.load().clean
            assert reopened.document.snapshot() == expected_doc
        finally:
            for store in stores:
                store.close()
