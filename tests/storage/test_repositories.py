"""Vehicles, drivers, routes and geofences mirrored from the document into typed, indexed rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import storage
from storage.drivers import Driver
from storage.geofences import Geofence
from storage.repository import BadBBox, Repository
from storage.routes import Route
from storage.vehicles import LatestFix, Vehicle

METRES_PER_DEGREE_LAT = 111_320


def _square(lon: float, lat: float, size: float) -> list[list[list[float]]]:
    return [[[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]]


def _vehicle(name: str) -> dict[str, Any]:
    return {"name": name, "plate": f"P-{name}", "device_id": f"dev-{name}"}


def _driver(name: str) -> dict[str, Any]:
    return {"name": name, "email": f"{name}@example.com"}


def _route(name: str) -> dict[str, Any]:
    return {"name": name, "geometry": {"type": "LineString", "coordinates": [[13.0, 52.0], [13.1, 52.1]]}}


def _geofence(name: str) -> dict[str, Any]:
    return {"name": name, "geometry": {"type": "Polygon", "coordinates": _square(13.0, 52.0, 0.01)}}


@dataclass(frozen=True)
class Case:
    repo: str
    record_type: type[Any]
    minimal: Callable[[str], dict[str, Any]]
    full: dict[str, Any]
    columns: dict[str, Any]  # expected typed column values for `full`


CASES = [
    Case(
        "vehicles", Vehicle, _vehicle,
        full={
            "name": "Truck 7", "plate": "B-TK 7", "vin": "WDB123", "device_id": "imei-7", "driver_id": "d-1",
            "status": "active", "speed_limit_kph": 80.0, "notes": "reefer", "created_at": "2024-05-01T08:00:00Z",
            "updated_at": "2024-05-02T08:00:00Z", "colour": "red", "axles": {"front": 1, "rear": 2},
        },
        columns={
            "name": "Truck 7", "plate": "B-TK 7", "vin": "WDB123", "device_id": "imei-7", "driver_id": "d-1",
            "status": "active", "speed_limit_kph": 80.0, "notes": "reefer",
            "created_at": "2024-05-01T08:00:00Z", "updated_at": "2024-05-02T08:00:00Z", "invalid_reason": None,
        },
    ),
    Case(
        "drivers", Driver, _driver,
        full={
            "name": "Ana Lima", "phone": "+49 30 1234", "email": "ana@example.com", "license_number": "L-99",
            "license_expiry": "2030-01-01", "status": "on_duty", "notes": "night shifts",
            "created_at": "2024-05-01T08:00:00Z", "updated_at": "2024-05-02T08:00:00Z", "languages": ["pt", "de"],
        },
        columns={
            "name": "Ana Lima", "phone": "+49 30 1234", "email": "ana@example.com", "license_number": "L-99",
            "license_expiry": "2030-01-01", "status": "on_duty", "notes": "night shifts", "invalid_reason": None,
        },
    ),
    Case(
        "routes", Route, _route,
        full={
            "name": "Morning loop", "vehicle_id": "v-1", "stops": ["depot", "market"], "corridor_m": 250.0,
            "planned_start": "07:30", "notes": "avoid bridge", "created_at": "2024-05-01T08:00:00Z",
            "updated_at": "2024-05-02T08:00:00Z", "priority": 3,
            "geometry": {"type": "LineString", "coordinates": [[13.0, 52.0], [13.1, 52.1]]},
        },
        columns={
            "name": "Morning loop", "vehicle_id": "v-1", "stops": '["depot","market"]', "corridor_m": 250.0,
            "planned_start": "07:30", "notes": "avoid bridge", "invalid_reason": None,
        },
    ),
    Case(
        "geofences", Geofence, _geofence,
        full={
            "name": "Depot", "kind": "depot", "speed_limit_kph": 20.0, "active": True, "notes": "gate 2",
            "created_at": "2024-05-01T08:00:00Z", "updated_at": "2024-05-02T08:00:00Z", "owner": "ops",
            "geometry": {"type": "Polygon", "coordinates": _square(13.0, 52.0, 0.01)},
        },
        columns={
            "name": "Depot", "kind": "depot", "speed_limit_kph": 20.0, "active": 1, "notes": "gate 2",
            "center_lon": None, "center_lat": None, "radius_m": None, "invalid_reason": None,
        },
    ),
]


@pytest.fixture(params=CASES, ids=[c.repo for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def _repo(store: storage.Store, case: Case) -> Repository[Any]:
    return getattr(store, case.repo)  # type: ignore[no-any-return]


def _fid(store: storage.Store, table: str, record_id: str) -> int:
    return int(store.scalar(f"SELECT fid FROM {table} WHERE id = ?", (record_id,)))


# -- every repository ---------------------------------------------------------------------------


def test_upsert_then_get_returns_typed_record_with_columns_and_all_fields(
    store: storage.Store, case: Case
) -> None:
    repo = _repo(store, case)
    repo.upsert("r1", case.full)
    record = repo.get("r1")
    assert isinstance(record, case.record_type)
    assert record.id == "r1"
    assert {name: getattr(record, name) for name in case.columns} == case.columns
    # `data` is the whole record, including fields this version has no column for.
    assert record.data == case.full


def test_get_of_unknown_id_returns_none(store: storage.Store, case: Case) -> None:
    assert _repo(store, case).get("missing") is None


def test_update_keeps_fid_and_replaces_values(store: storage.Store, case: Case) -> None:
    repo = _repo(store, case)
    repo.upsert("r1", case.minimal("first"))
    repo.upsert("r2", case.minimal("other"))
    fid = _fid(store, case.repo, "r1")
    repo.upsert("r1", {**case.minimal("renamed"), "extra": 1})
    assert _fid(store, case.repo, "r1") == fid
    record = repo.get("r1")
    assert record is not None
    assert record.name == "renamed"
    assert record.data["extra"] == 1
    assert repo.count() == 2


def test_list_orders_case_insensitively_by_name_with_limit_and_offset(store: storage.Store, case: Case) -> None:
    repo = _repo(store, case)
    for record_id, name in [("c", "charlie"), ("a", "Alpha"), ("d", "Delta"), ("b", "bravo")]:
        repo.upsert(record_id, case.minimal(name))
    assert [r.name for r in repo.list()] == ["Alpha", "bravo", "charlie", "Delta"]
    assert [r.name for r in repo.list(limit=2, offset=1)] == ["bravo", "charlie"]
    assert [r.id for r in repo.list(order_by="id")] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="cannot order"):
        repo.list(order_by="name; DROP TABLE vehicles")


def test_count_and_ids_follow_upserts_and_deletes(store: storage.Store, case: Case) -> None:
    repo = _repo(store, case)
    assert repo.count() == 0
    repo.upsert_many([("r1", case.minimal("one"), None), ("r2", case.minimal("two"), None)])
    repo.upsert("r1", case.minimal("one again"))
    assert repo.count() == 2
    assert repo.ids() == {"r1", "r2"}


def test_search_is_case_insensitive_substring(store: storage.Store, case: Case) -> None:
    repo = _repo(store, case)
    repo.upsert("r1", case.minimal("North Depot"))
    repo.upsert("r2", case.minimal("south yard"))
    assert [r.id for r in repo.search("DEPOT")] == ["r1"]
    assert [r.id for r in repo.search("th ya")] == ["r2"]


def test_search_treats_percent_and_underscore_literally(store: storage.Store, case: Case) -> None:
    repo = _repo(store, case)
    repo.upsert("pct", case.minimal("50% off"))
    repo.upsert("digits", case.minimal("500 crates"))
    repo.upsert("under", case.minimal("zone_a"))
    repo.upsert("letter", case.minimal("zoneXa"))
    assert [r.id for r in repo.search("50%")] == ["pct"]
    assert [r.id for r in repo.search("ZONE_A")] == ["under"]
    assert repo.search("%") == [repo.get("pct")]


def test_delete_returns_true_once_then_false(store: storage.Store, case: Case) -> None:
    repo = _repo(store, case)
    repo.upsert("r1", case.minimal("one"))
    assert repo.delete("r1") is True
    assert repo.get("r1") is None
    assert repo.delete("r1") is False


def test_invalid_record_is_kept_with_reason_and_listed(store: storage.Store, case: Case) -> None:
    repo = _repo(store, case)
    repo.upsert("good", case.minimal("good"))
    repo.upsert("bad", case.minimal("bad"), "schema: name too long")
    record = repo.get("bad")
    assert record is not None
    assert record.invalid_reason == "schema: name too long"
    assert [r.id for r in repo.invalid()] == ["bad"]


# -- routes -------------------------------------------------------------------------------------


def test_route_without_corridor_gets_default_width(store: storage.Store) -> None:
    store.routes.upsert("r1", _route("plain"))
    route = store.routes.get("r1")
    assert route is not None
    assert route.corridor_m == 100.0
    assert "corridor_m" not in route.data


def test_route_in_bbox_finds_line_crossing_box_without_vertex_inside(store: storage.Store) -> None:
    store.routes.upsert("east", {"name": "east", "geometry": {"type": "LineString",
                                                              "coordinates": [[0.0, 0.0], [2.0, 0.0]]}})
    store.routes.upsert("far", {"name": "far", "geometry": {"type": "LineString",
                                                            "coordinates": [[50.0, 50.0], [51.0, 51.0]]}})
    assert [r.id for r in store.routes.in_bbox((0.9, -0.1, 1.1, 0.1))] == ["east"]


def test_route_in_bbox_ignores_box_inside_line_extent_but_off_the_line(store: storage.Store) -> None:
    store.routes.upsert("diag", {"name": "diag", "geometry": {"type": "LineString",
                                                              "coordinates": [[0.0, 0.0], [2.0, 2.0]]}})
    # The box lies inside the line's bounding rectangle, below the diagonal: index hit, no intersection.
    assert store.routes.in_bbox((1.5, 0.2, 1.9, 0.6)) == []
    assert [r.id for r in store.routes.in_bbox((0.9, 0.9, 1.1, 1.1))] == ["diag"]


def test_route_that_is_not_a_linestring_is_flagged_invalid(store: storage.Store) -> None:
    store.routes.upsert("pt", {"name": "pt", "geometry": {"type": "Point", "coordinates": [1.0, 1.0]}})
    route = store.routes.get("pt")
    assert route is not None
    assert route.invalid_reason is not None
    assert route.invalid_reason.startswith("geometry:")
    assert store.scalar("SELECT geometry IS NULL FROM routes WHERE id = 'pt'") == 1


def test_routes_for_vehicle(store: storage.Store) -> None:
    store.routes.upsert("r1", {**_route("b"), "vehicle_id": "v1"})
    store.routes.upsert("r2", {**_route("a"), "vehicle_id": "v1"})
    store.routes.upsert("r3", {**_route("c"), "vehicle_id": "v2"})
    assert [r.id for r in store.routes.for_vehicle("v1")] == ["r2", "r1"]


# -- geofences ----------------------------------------------------------------------------------

CENTRE = (13.4, 52.5)


def _north_of_centre(metres: float) -> tuple[float, float]:
    return CENTRE[0], CENTRE[1] + metres / METRES_PER_DEGREE_LAT


def _circle(radius_m: float, **extra: Any) -> dict[str, Any]:
    return {"name": "circle", "geometry": {"type": "Point", "coordinates": list(CENTRE)}, "radius_m": radius_m,
            **extra}


def test_geofence_containing_finds_polygon_holding_point(store: storage.Store) -> None:
    store.geofences.upsert("sq", _geofence("square"))
    store.geofences.upsert("elsewhere", {"name": "elsewhere",
                                         "geometry": {"type": "Polygon", "coordinates": _square(0.0, 0.0, 1.0)}})
    assert [g.id for g in store.geofences.containing(13.005, 52.005)] == ["sq"]
    assert store.geofences.containing(13.02, 52.005) == []
    assert store.geofences.containing_ids(13.005, 52.005) == ["sq"]


def test_geofence_circle_contains_point_inside_radius_only(store: storage.Store) -> None:
    store.geofences.upsert("c", _circle(200))
    assert [g.id for g in store.geofences.containing(*_north_of_centre(150))] == ["c"]
    assert store.geofences.containing(*_north_of_centre(250)) == []
    assert [g.id for g in store.geofences.containing(*CENTRE)] == ["c"]


def test_geofence_circle_row_keeps_centre_and_radius(store: storage.Store) -> None:
    store.geofences.upsert("c", _circle(200))
    fence = store.geofences.get("c")
    assert fence is not None
    assert (fence.center_lon, fence.center_lat, fence.radius_m) == (CENTRE[0], CENTRE[1], 200)
    assert fence.invalid_reason is None
    assert store.scalar("SELECT GeometryType(geometry) FROM geofences WHERE id = 'c'") == "MULTIPOLYGON"


def test_polygon_geofence_drops_stray_radius(store: storage.Store) -> None:
    store.geofences.upsert("sq", {**_geofence("square"), "radius_m": 500})
    fence = store.geofences.get("sq")
    assert fence is not None
    assert fence.radius_m is None
    assert fence.data["radius_m"] == 500


def test_inactive_geofence_found_only_when_not_active_only(store: storage.Store) -> None:
    store.geofences.upsert("off", {**_geofence("off"), "active": False})
    assert store.geofences.containing(13.005, 52.005) == []
    assert store.geofences.containing_ids(13.005, 52.005) == []
    assert [g.id for g in store.geofences.containing(13.005, 52.005, active_only=False)] == ["off"]
    fence = store.geofences.get("off")
    assert fence is not None
    assert fence.active == 0


def test_multipolygon_geofence_contains_points_in_each_part(store: storage.Store) -> None:
    store.geofences.upsert("multi", {"name": "two yards", "geometry": {
        "type": "MultiPolygon", "coordinates": [_square(10.0, 50.0, 0.01), _square(11.0, 51.0, 0.01)],
    }})
    assert [g.id for g in store.geofences.containing(10.005, 50.005)] == ["multi"]
    assert [g.id for g in store.geofences.containing(11.005, 51.005)] == ["multi"]
    assert store.geofences.containing(10.5, 50.5) == []


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Polygon", "coordinates": "not coordinates"},
        {"type": "Hexagon", "coordinates": []},
        {"type": "Polygon", "coordinates": []},
        {"type": "LineString", "coordinates": [[0.0, 0.0], [1.0, 1.0]]},
        {"type": "Point", "coordinates": [13.4, 52.5]},  # a circle without radius_m
        "POLYGON((0 0, 1 0, 1 1, 0 0))",
    ],
    ids=["bad-coordinates", "unknown-type", "empty", "line", "point-without-radius", "wkt-string"],
)
def test_geofence_with_malformed_geometry_is_kept_without_geometry(store: storage.Store, geometry: Any) -> None:
    store.geofences.upsert("bad", {"name": "bad", "geometry": geometry})
    fence = store.geofences.get("bad")
    assert fence is not None
    assert fence.invalid_reason is not None
    assert fence.invalid_reason.startswith("geometry:")
    assert fence.data["geometry"] == geometry
    assert store.scalar("SELECT geometry IS NULL FROM geofences WHERE id = 'bad'") == 1
    assert [g.id for g in store.geofences.invalid()] == ["bad"]


def test_geofence_without_geometry_is_not_invalid(store: storage.Store) -> None:
    store.geofences.upsert("draft", {"name": "draft"})
    fence = store.geofences.get("draft")
    assert fence is not None
    assert fence.invalid_reason is None


def test_geofence_in_bbox_uses_polygon_geometry(store: storage.Store) -> None:
    store.geofences.upsert("sq", _geofence("square"))
    assert [g.id for g in store.geofences.in_bbox((12.9, 51.9, 13.005, 52.005))] == ["sq"]
    assert store.geofences.in_bbox((13.02, 52.02, 13.03, 52.03)) == []


@pytest.mark.parametrize(
    "bbox",
    [(1.0, 2.0, 3.0), (1.0, 2.0, 3.0, 4.0, 5.0), (5.0, 0.0, 1.0, 1.0), (0.0, 5.0, 1.0, 1.0),
     (-181.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 91.0), (0.0, 0.0, float("nan"), 1.0)],
    ids=["three-numbers", "five-numbers", "lon-reversed", "lat-reversed", "lon-range", "lat-range", "nan"],
)
@pytest.mark.parametrize("repo", ["routes", "geofences", "vehicles"])
def test_bad_bbox_raises(store: storage.Store, repo: str, bbox: tuple[float, ...]) -> None:
    with pytest.raises(BadBBox):
        getattr(store, repo).in_bbox(bbox)


def test_repository_without_geometry_refuses_bbox_query(store: storage.Store) -> None:
    with pytest.raises(TypeError, match="no geometry"):
        store.drivers.in_bbox((0.0, 0.0, 1.0, 1.0))


# -- vehicles -----------------------------------------------------------------------------------


def test_record_fix_keeps_only_the_newest_fix(store: storage.Store) -> None:
    store.vehicles.record_fix(LatestFix("v1", 200.0, 13.4, 52.5, 40.0, 90.0))
    store.vehicles.record_fix(LatestFix("v1", 100.0, 0.0, 0.0, 10.0, 0.0))  # late, older: ignored
    assert store.vehicles.latest_fix("v1") == LatestFix("v1", 200.0, 13.4, 52.5, 40.0, 90.0)
    store.vehicles.record_fix(LatestFix("v1", 300.0, 13.5, 52.6, None, None))
    assert store.vehicles.latest_fix("v1") == LatestFix("v1", 300.0, 13.5, 52.6, None, None)
    assert store.vehicles.latest_fixes() == [LatestFix("v1", 300.0, 13.5, 52.6, None, None)]
    assert store.vehicles.latest_fix("v2") is None


def test_vehicle_in_bbox_follows_latest_fix(store: storage.Store) -> None:
    store.vehicles.upsert("v1", _vehicle("one"))
    store.vehicles.upsert("v2", _vehicle("two"))
    store.vehicles.upsert("v3", _vehicle("three"))  # no fix yet: never on the map
    store.vehicles.record_fix(LatestFix("v1", 100.0, 13.40, 52.50, None, None))
    store.vehicles.record_fix(LatestFix("v2", 100.0, 2.35, 48.85, None, None))
    berlin = (13.0, 52.0, 14.0, 53.0)
    assert [v.id for v in store.vehicles.in_bbox(berlin)] == ["v1"]
    # v1 drives to Paris: the newer fix moves it out of the Berlin box and into the Paris one.
    store.vehicles.record_fix(LatestFix("v1", 200.0, 2.30, 48.80, None, None))
    assert store.vehicles.in_bbox(berlin) == []
    assert [v.id for v in store.vehicles.in_bbox((2.0, 48.0, 3.0, 49.0))] == ["v1", "v2"]


def test_vehicle_by_device(store: storage.Store) -> None:
    store.vehicles.upsert("v1", _vehicle("one"))
    store.vehicles.upsert("v2", {"name": "two", "device_id": "imei-2"})
    vehicle = store.vehicles.by_device("imei-2")
    assert vehicle is not None
    assert vehicle.id == "v2"
    assert store.vehicles.by_device("unknown") is None


def test_record_data_is_stored_as_json(store: storage.Store) -> None:
    store.vehicles.upsert("v1", {"name": "one", "tags": ["a", "b"]})
    raw = store.scalar("SELECT data FROM vehicles WHERE id = 'v1'")
    assert json.loads(raw) == {"name": "one", "tags": ["a", "b"]}


def test_vehicle_in_bbox_is_exact_at_the_edges(store: storage.Store) -> None:
    store.vehicles.upsert("on-edge", _vehicle("on edge"))
    store.vehicles.upsert("just-out", _vehicle("just out"))
    store.vehicles.record_fix(LatestFix("on-edge", 1.0, 13.4, 53.0, None, None))
    # 1e-7 degrees is below the R*Tree's 32-bit resolution here: only the exact test excludes it.
    store.vehicles.record_fix(LatestFix("just-out", 1.0, 13.4000001, 52.5, None, None))
    assert [v.id for v in store.vehicles.in_bbox((13.0, 52.0, 13.4, 53.0))] == ["on-edge"]
