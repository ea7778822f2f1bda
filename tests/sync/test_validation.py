"""Behaviour of the shared record validation: what every replica accepts, flags, and why."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Point, Polygon

from sync.schema import COLLECTIONS, DEFAULTS, FIELDS, META, SCHEMA_VERSION, new_record_id
from sync.validation import (
    MAX_VERTICES,
    GeometryError,
    Problem,
    UnknownCollection,
    ValidationError,
    circle_polygon,
    geometry_from_geojson,
    problems,
    validate_record,
)

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[5.0, 52.0], [5.01, 52.0], [5.01, 52.01], [5.0, 52.01], [5.0, 52.0]]],
}
BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
LINE = {"type": "LineString", "coordinates": [[5.0, 52.0], [5.1, 52.1], [5.2, 52.1]]}

VALID: dict[str, dict[str, Any]] = {
    "vehicles": {
        "name": "Van 12",
        "plate": "AB-123-C",
        "vin": "WVWZZZ1JZXW000001",
        "device_id": "imei:356938035643809",
        "driver_id": "5b0f3c1e-4a7e-4b8e-9b1a-2f3c4d5e6f70",
        "status": "maintenance",
        "speed_limit_kph": 90,
        "notes": "brakes due",
        "created_at": "2030-01-02T03:04:05Z",
        "updated_at": "2030-01-02T03:04:05.123+01:00",
    },
    "drivers": {
        "name": "Ada Lovelace",
        "phone": "+31 20 123 4567",
        "email": "ada@example.com",
        "license_number": "NL-1234567",
        "license_expiry": "2031-06-30",
        "status": "inactive",
        "notes": "",
        "created_at": "2030-01-02T03:04:05",
        "updated_at": "2030-01-02 03:04:05+00:00",
    },
    "routes": {
        "name": "Morning loop",
        "geometry": LINE,
        "vehicle_id": "3f2b8a9c-0d1e-4f5a-8b6c-7d8e9f0a1b2c",
        "stops": [{"name": "Depot", "lon": 5.0, "lat": 52.0}, {"name": "Shop", "lon": 5.2, "lat": 52.1}],
        "corridor_m": 250.5,
        "planned_start": "2030-03-01T07:30:00Z",
        "notes": "avoid the ring road",
        "created_at": "2030-01-02T03:04:05Z",
        "updated_at": "2030-01-02T03:04:05Z",
    },
    "geofences": {
        "name": "Main depot",
        "geometry": SQUARE,
        "kind": "depot",
        "speed_limit_kph": 15.5,
        "active": False,
        "notes": "gate on the north side",
        "created_at": "2030-01-02T03:04:05Z",
        "updated_at": "2030-01-02T03:04:05Z",
    },
}


def with_fields(collection: str, **changes: Any) -> dict[str, Any]:
    return {**VALID[collection], **changes}


def only_problem(collection: str, record: dict[str, Any]) -> Problem:
    found = problems(collection, record)
    assert len(found) == 1, found
    return found[0]


# --- valid records ---------------------------------------------------------------------------------


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_fully_populated_record_of_each_collection_is_valid(collection: str) -> None:
    assert problems(collection, VALID[collection]) == []
    validate_record(collection, VALID[collection])


@pytest.mark.parametrize(
    ("collection", "record"),
    [
        ("vehicles", {"name": "V"}),
        ("drivers", {"name": "D"}),
        ("routes", {"name": "R", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}),
        ("geofences", {"name": "G", "geometry": SQUARE}),
    ],
)
def test_record_with_only_required_fields_is_valid(collection: str, record: dict[str, Any]) -> None:
    assert problems(collection, record) == []


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_null_optional_fields_count_as_absent(collection: str) -> None:
    record = {name: None for name, spec in FIELDS[collection].items() if not spec.required}
    record.update(
        {name: VALID[collection][name] for name, spec in FIELDS[collection].items() if spec.required}
    )
    assert problems(collection, record) == []


def test_unknown_json_fields_are_kept_for_forward_compatibility() -> None:
    record = with_fields("vehicles", colour="red", fuel={"kind": "diesel", "tanks": [60, 40.5, None, True]})
    assert problems("vehicles", record) == []


def test_numbers_written_as_floats_by_a_javascript_client_are_valid() -> None:
    assert problems("routes", with_fields("routes", corridor_m=100.0)) == []
    assert problems("vehicles", with_fields("vehicles", speed_limit_kph=80.0)) == []


def test_multipolygon_geofence_is_valid() -> None:
    far_square = [[[6.0, 52.0], [6.01, 52.0], [6.01, 52.01], [6.0, 52.0]]]
    geometry = {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"], far_square]}
    assert problems("geofences", with_fields("geofences", geometry=geometry)) == []


def test_polygon_with_a_hole_is_valid() -> None:
    outer = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    hole = [[2, 2], [2, 4], [4, 4], [4, 2], [2, 2]]
    geometry = {"type": "Polygon", "coordinates": [outer, hole]}
    assert problems("geofences", with_fields("geofences", geometry=geometry)) == []


def test_circle_geofence_is_a_point_with_radius() -> None:
    record = with_fields("geofences", geometry={"type": "Point", "coordinates": [5.0, 52.0]}, radius_m=300)
    assert problems("geofences", record) == []


def test_positions_with_altitude_are_accepted() -> None:
    geometry = {"type": "LineString", "coordinates": [[5.0, 52.0, 3.5], [5.1, 52.1, 4]]}
    assert problems("routes", with_fields("routes", geometry=geometry)) == []


def test_datetimes_with_z_offset_or_naive_are_accepted() -> None:
    for text in (
        "2030-01-02T03:04:05Z",
        "2030-01-02T03:04:05+02:00",
        "2030-01-02T03:04",
        "2030-01-02T03:04:05.5",
    ):
        assert problems("routes", with_fields("routes", planned_start=text)) == [], text


# --- the error type ----------------------------------------------------------------------------------


def test_validation_error_message_names_collection_field_and_offending_value() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_record("vehicles", with_fields("vehicles", status="parked"))
    error = caught.value
    assert str(error) == "vehicles.status: must be one of active, maintenance, retired (got 'parked')"
    assert error.collection == "vehicles"
    assert error.field == "status"
    assert error.reason == "must be one of active, maintenance, retired (got 'parked')"
    assert isinstance(error, ValueError)


def test_validation_error_lists_every_problem() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_record("drivers", {"name": "", "email": "nobody", "status": "gone"})
    error = caught.value
    assert [p.field for p in error.problems] == ["name", "email", "status"]
    assert str(error).count("; ") == 2
    assert str(error).startswith("drivers.name: is required; drivers.email: must be an email address")


def test_validation_error_survives_pickling() -> None:
    error = ValidationError("vehicles", [Problem("status", "bad")])
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert copy.problems == error.problems


@pytest.mark.parametrize("name", ["trucks", META, ""])
def test_unknown_collection_is_refused(name: str) -> None:
    with pytest.raises(UnknownCollection):
        problems(name, {"name": "x"})


# --- one rule at a time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collection", "field", "value", "reason"),
    [
        ("vehicles", "name", "   ", "is required"),
        ("vehicles", "name", "x" * 201, "must be at most 200 characters (got 201)"),
        ("vehicles", "name", 12, "must be a string (got number)"),
        ("vehicles", "notes", "x" * 10_001, "must be at most 10000 characters (got 10001)"),
        ("vehicles", "plate", ["AB"], "must be a string (got list)"),
        ("vehicles", "status", "parked", "must be one of active, maintenance, retired (got 'parked')"),
        ("vehicles", "status", 1, "must be one of active, maintenance, retired (got 1)"),
        ("vehicles", "speed_limit_kph", 0, "must be greater than 0 and at most 400 (got 0)"),
        ("vehicles", "speed_limit_kph", 400.5, "must be greater than 0 and at most 400 (got 400.5)"),
        ("vehicles", "speed_limit_kph", True, "must be a number (got boolean)"),
        ("vehicles", "speed_limit_kph", "80", "must be a number (got string)"),
        ("vehicles", "speed_limit_kph", math.inf, "must be a finite number (got inf)"),
        ("vehicles", "driver_id", "", "must be a drivers id or null (got '')"),
        ("vehicles", "driver_id", 7, "must be a drivers id or null (got 7)"),
        ("vehicles", "created_at", "yesterday", "must be an ISO 8601 datetime"),
        ("vehicles", "updated_at", "2030-01-02", "must be an ISO 8601 datetime"),
        ("vehicles", "updated_at", 1_700_000_000, "must be an ISO 8601 datetime"),
        ("drivers", "email", "ada.example.com", "must be an email address"),
        ("drivers", "email", "ada@localhost", "must be an email address"),
        ("drivers", "license_expiry", "30/06/2031", "must be an ISO date like 2030-12-31 (got '30/06/2031')"),
        ("drivers", "license_expiry", "2031-02-30", "must be an ISO date"),
        ("drivers", "status", "active ", "must be one of active, inactive"),
        ("routes", "vehicle_id", {"id": "x"}, "must be a vehicles id or null"),
        ("routes", "corridor_m", 10_000.01, "must be greater than 0 and at most 10000 (got 10000.01)"),
        ("routes", "corridor_m", -5, "must be greater than 0 and at most 10000 (got -5)"),
        ("routes", "planned_start", "2030-13-01T00:00:00Z", "must be an ISO 8601 datetime"),
        ("geofences", "kind", "warehouse", "must be one of depot, customer, restricted, other"),
        ("geofences", "active", "yes", "must be true or false (got 'yes')"),
        ("geofences", "active", 1, "must be true or false (got 1)"),
        ("geofences", "radius_m", 100_001, "must be greater than 0 and at most 100000 (got 100001)"),
        ("geofences", "speed_limit_kph", -1, "must be greater than 0 and at most 400 (got -1)"),
    ],
)
def test_each_rule_names_the_field_and_explains_why(
    collection: str, field: str, value: Any, reason: str
) -> None:
    problem = only_problem(collection, with_fields(collection, **{field: value}))
    assert problem.field == field
    assert problem.reason.startswith(reason), problem.reason


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_missing_name_is_required(collection: str) -> None:
    record = with_fields(collection)
    del record["name"]
    assert only_problem(collection, record) == Problem("name", "is required")


@pytest.mark.parametrize("collection", ["routes", "geofences"])
def test_missing_geometry_is_required(collection: str) -> None:
    assert only_problem(collection, with_fields(collection, geometry=None)) == Problem(
        "geometry", "is required"
    )


def test_bounds_are_inclusive_at_the_top() -> None:
    assert problems("vehicles", with_fields("vehicles", speed_limit_kph=400)) == []
    assert problems("routes", with_fields("routes", corridor_m=10_000)) == []
    assert problems("geofences", with_fields("geofences", radius_m=100_000)) == []


def test_unknown_field_that_is_not_json_is_flagged() -> None:
    problem = only_problem("vehicles", with_fields("vehicles", extra={"a": [1, math.nan]}))
    assert problem.field == "extra"
    assert "must be a JSON value" in problem.reason
    problem = only_problem("vehicles", with_fields("vehicles", extra={1, 2}))
    assert problem == Problem("extra", "must be a JSON value (got set)")


def test_record_that_is_not_an_object_is_a_problem_not_a_crash() -> None:
    found = problems("vehicles", ["name", "Van"])  # type: ignore[arg-type]
    assert found == [Problem("(record)", "must be an object (got list)")]


# --- geometry ------------------------------------------------------------------------------------------


def test_self_intersecting_bowtie_polygon_is_refused_with_shapely_reason() -> None:
    problem = only_problem("geofences", with_fields("geofences", geometry=BOWTIE))
    assert problem.field == "geometry"
    assert problem.reason == "polygon is invalid: Self-intersection[0.5 0.5]"
    with pytest.raises(ValidationError, match=r"geofences\.geometry: polygon is invalid: Self-intersection"):
        validate_record("geofences", with_fields("geofences", geometry=BOWTIE))


def test_overlapping_multipolygon_parts_are_refused() -> None:
    a = [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]
    b = [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]
    problem = only_problem(
        "geofences", with_fields("geofences", geometry={"type": "MultiPolygon", "coordinates": [a, b]})
    )
    assert problem.field == "geometry"
    assert problem.reason.startswith("multipolygon is invalid: Self-intersection")


def test_vertex_cap_allows_the_limit_and_refuses_one_more() -> None:
    at_cap = circle_polygon(5.0, 52.0, 1_000, segments=MAX_VERTICES - 1)
    ring = [list(xy) for xy in at_cap.exterior.coords]
    assert len(ring) == MAX_VERTICES
    geometry = {"type": "Polygon", "coordinates": [ring]}
    assert problems("geofences", with_fields("geofences", geometry=geometry)) == []

    over = circle_polygon(5.0, 52.0, 1_000, segments=MAX_VERTICES)
    geometry = {"type": "Polygon", "coordinates": [[list(xy) for xy in over.exterior.coords]]}
    problem = only_problem("geofences", with_fields("geofences", geometry=geometry))
    assert problem == Problem("geometry", f"has more than {MAX_VERTICES} vertices")


def test_vertex_cap_counts_all_parts_of_a_multipolygon() -> None:
    part = circle_polygon(5.0, 52.0, 1_000, segments=MAX_VERTICES // 2)
    far = circle_polygon(6.0, 52.0, 1_000, segments=MAX_VERTICES // 2)
    coordinates = [[[list(xy) for xy in p.exterior.coords]] for p in (part, far)]
    problem = only_problem(
        "geofences", with_fields("geofences", geometry={"type": "MultiPolygon", "coordinates": coordinates})
    )
    assert problem.reason == f"has more than {MAX_VERTICES} vertices"


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        ([180.5, 52.0], "lon must be between -180 and 180 (got 180.5)"),
        ([-181, 52.0], "lon must be between -180 and 180 (got -181)"),
        ([5.0, 90.01], "lat must be between -90 and 90 (got 90.01)"),
        ([5.0, -91], "lat must be between -90 and 90 (got -91)"),
        ([math.nan, 52.0], "lon must be a finite number (got nan)"),
        ([5.0, math.inf], "lat must be a finite number (got inf)"),
    ],
)
def test_positions_out_of_range_are_refused(position: list[float], reason: str) -> None:
    geometry = {"type": "LineString", "coordinates": [[5.0, 52.0], position]}
    problem = only_problem("routes", with_fields("routes", geometry=geometry))
    assert problem == Problem("geometry", f"coordinates position 1 {reason}")


def test_positions_at_the_edges_of_the_world_are_valid() -> None:
    geometry = {"type": "LineString", "coordinates": [[-180, -90], [180, 90]]}
    assert problems("routes", with_fields("routes", geometry=geometry)) == []


def test_point_geofence_without_radius_is_flagged_on_radius() -> None:
    record = with_fields("geofences", geometry={"type": "Point", "coordinates": [5.0, 52.0]})
    problem = only_problem("geofences", record)
    assert problem.field == "radius_m"
    assert "required when geometry is a Point" in problem.reason


def test_geometry_type_must_suit_the_collection() -> None:
    problem = only_problem("routes", with_fields("routes", geometry=SQUARE))
    assert problem == Problem("geometry", "must be a GeoJSON LineString (got type 'Polygon')")
    problem = only_problem("geofences", with_fields("geofences", geometry=LINE))
    assert problem == Problem(
        "geometry", "must be a GeoJSON Polygon or MultiPolygon or Point (got type 'LineString')"
    )


@pytest.mark.parametrize(
    ("collection", "geometry", "reason"),
    [
        ("geofences", {"type": "Polygon"}, "Polygon has no coordinates"),
        (
            "geofences",
            "POLYGON((0 0, 1 0, 1 1, 0 0))",
            "must be a GeoJSON Polygon or MultiPolygon or Point object",
        ),
        ("geofences", {"coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, "must be a GeoJSON Polygon"),
        (
            "geofences",
            {"type": "Polygon", "coordinates": [[0, 0], [1, 0], [1, 1], [0, 0]]},
            "coordinates ring 0",
        ),
        (
            "geofences",
            {"type": "Polygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]]]},
            "coordinates ring 0",
        ),
        (
            "geofences",
            {"type": "Polygon", "coordinates": []},
            "coordinates must be a non-empty list of linear rings",
        ),
        (
            "geofences",
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]},
            "must have at least 4 positions",
        ),
        (
            "geofences",
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
            "must be closed",
        ),
        (
            "geofences",
            {"type": "Polygon", "coordinates": [[["0", "0"], [1, 0], [1, 1], [0, 0]]]},
            "must contain numbers",
        ),
        (
            "geofences",
            {"type": "Polygon", "coordinates": [[[0], [1, 0], [1, 1], [0]]]},
            "[lon, lat] position",
        ),
        (
            "geofences",
            {"type": "MultiPolygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
            "polygon 0 ring 0",
        ),
        ("geofences", {"type": "MultiPolygon", "coordinates": None}, "non-empty list of polygons"),
        ("geofences", {"type": "Point", "coordinates": [5.0, 52.0, 1, 2]}, "[lon, lat] position"),
        ("geofences", {"type": "GeometryCollection", "geometries": []}, "must be a GeoJSON Polygon"),
        (
            "routes",
            {"type": "LineString", "coordinates": [[5.0, 52.0]]},
            "must have at least 2 positions (got 1)",
        ),
        (
            "routes",
            {"type": "LineString", "coordinates": "5 52, 6 53"},
            "must be a list of positions (got string)",
        ),
        ("routes", {"type": "LineString", "coordinates": [[True, 52.0], [5, 52]]}, "must contain numbers"),
        (
            "routes",
            {"type": "LineString", "coordinates": {"0": [5, 52]}},
            "must be a list of positions (got object)",
        ),
    ],
)
def test_malformed_geojson_is_a_problem_not_an_exception(collection: str, geometry: Any, reason: str) -> None:
    problem = only_problem(collection, with_fields(collection, geometry=geometry, radius_m=50))
    assert problem.field == "geometry"
    assert reason in problem.reason, problem.reason


def test_geometry_from_geojson_returns_shapely_geometry() -> None:
    polygon = geometry_from_geojson(SQUARE, ("Polygon", "MultiPolygon"))
    assert isinstance(polygon, Polygon)
    assert polygon.bounds == pytest.approx((5.0, 52.0, 5.01, 52.01))
    point = geometry_from_geojson({"type": "Point", "coordinates": [5, 52]}, ("Point",))
    assert isinstance(point, Point)
    assert (point.x, point.y) == (5.0, 52.0)
    multi = geometry_from_geojson(
        {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"]]}, ("MultiPolygon",)
    )
    assert isinstance(multi, MultiPolygon)


def test_geometry_from_geojson_raises_with_problem_compatible_field_and_reason() -> None:
    with pytest.raises(GeometryError) as caught:
        geometry_from_geojson(BOWTIE, ("Polygon",))
    assert caught.value.field == "geometry"
    assert caught.value.reason == "polygon is invalid: Self-intersection[0.5 0.5]"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(GeometryError, match="must be a GeoJSON Point"):
        geometry_from_geojson(SQUARE, ("Point",))


# --- stops ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stops", "reason"),
    [
        ("Depot", "must be a list of {name, lon, lat} objects (got string)"),
        ([["Depot", 5, 52]], "stop 0 must be an object with name, lon and lat (got list)"),
        ([{"lon": 5, "lat": 52}], "stop 0 name must be a non-empty string (got None)"),
        (
            [{"name": "A", "lon": 5, "lat": 52}, {"name": "B", "lon": 5}],
            "stop 1 lat must be a number (got None)",
        ),
        ([{"name": "A", "lon": 200, "lat": 52}], "stop 0 lon must be between -180 and 180 (got 200)"),
        ([{"name": "A", "lon": 5, "lat": "52"}], "stop 0 lat must be a number (got '52')"),
    ],
)
def test_bad_stops_are_flagged_with_the_stop_index(stops: Any, reason: str) -> None:
    assert only_problem("routes", with_fields("routes", stops=stops)) == Problem("stops", reason)


def test_stops_may_carry_extra_json_fields_and_be_empty() -> None:
    assert problems("routes", with_fields("routes", stops=[])) == []
    stops = [{"name": "A", "lon": 5, "lat": 52, "eta": "08:00", "window": [5, 10]}]
    assert problems("routes", with_fields("routes", stops=stops)) == []


# --- circles -------------------------------------------------------------------------------------------

EARTH_RADIUS_M = 6_371_008.8


def equal_area_metres(polygon: Polygon, lon0: float, lat0: float) -> Polygon:
    """The polygon in spherical Lambert azimuthal equal-area metres centred on (lon0, lat0).

    Deliberately a different projection from the one circle_polygon builds with, so the check is not circular.
    """
    phi0, lam0 = math.radians(lat0), math.radians(lon0)

    def project(lon: float, lat: float) -> tuple[float, float]:
        phi, dlam = math.radians(lat), math.radians(lon) - lam0
        k = math.sqrt(
            2 / (1 + math.sin(phi0) * math.sin(phi) + math.cos(phi0) * math.cos(phi) * math.cos(dlam))
        )
        x = EARTH_RADIUS_M * k * math.cos(phi) * math.sin(dlam)
        y = (
            EARTH_RADIUS_M
            * k
            * (math.cos(phi0) * math.sin(phi) - math.sin(phi0) * math.cos(phi) * math.cos(dlam))
        )
        return x, y

    return Polygon([project(lon, lat) for lon, lat in polygon.exterior.coords])


@pytest.mark.parametrize(
    ("lon", "lat", "radius_m"),
    [
        (0.0, 0.0, 500.0),
        (5.0, 52.0, 50.0),
        (5.0, 52.0, 5_000.0),
        (-70.6, -33.4, 30_000.0),
        (25.0, 65.0, 10_000.0),
    ],
)
def test_circle_polygon_has_the_area_of_the_circle_and_contains_its_centre(
    lon: float, lat: float, radius_m: float
) -> None:
    circle = circle_polygon(lon, lat, radius_m)
    assert circle.is_valid
    assert circle.contains(Point(lon, lat))
    area = equal_area_metres(circle, lon, lat).area
    assert area == pytest.approx(math.pi * radius_m**2, rel=0.01)


def test_circle_polygon_refuses_nonsense_radius() -> None:
    with pytest.raises(ValueError, match="radius_m"):
        circle_polygon(5.0, 52.0, 0)
    with pytest.raises(ValueError, match="radius_m"):
        circle_polygon(5.0, 52.0, math.nan)


# --- schema --------------------------------------------------------------------------------------------


def test_schema_defaults_and_ids() -> None:
    assert SCHEMA_VERSION == 1
    assert set(FIELDS) == set(COLLECTIONS)
    assert DEFAULTS["routes"]["corridor_m"] == 100
    assert DEFAULTS["geofences"] == {"kind": "other", "active": True}
    assert DEFAULTS["vehicles"]["status"] == "active"
    assert DEFAULTS["drivers"]["status"] == "active"
    first, second = new_record_id(), new_record_id()
    assert first != second and len(first) == 36


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_defaults_make_a_valid_record(collection: str) -> None:
    record = {**VALID[collection], **DEFAULTS[collection]}
    assert problems(collection, record) == []


# --- robustness ----------------------------------------------------------------------------------------

ALL_FIELD_NAMES = sorted({name for fields in FIELDS.values() for name in fields} | {"lon", "lat", "type"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)
coordinates_like = st.recursive(
    st.floats(min_value=-200, max_value=200)
    | st.integers(-200, 200)
    | st.booleans()
    | st.none()
    | st.text(max_size=3),
    lambda children: st.lists(children, max_size=6),
    max_leaves=24,
)
positions = st.lists(st.floats(min_value=-1, max_value=1) | st.integers(-1, 1), min_size=2, max_size=2)
# Closed rings of a few nearby points: mostly degenerate or self-intersecting, which is what reaches GEOS.
closed_rings = st.lists(positions, min_size=3, max_size=6).map(lambda ring: [*ring, ring[0]])
geometry_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Point", "LineString", "Polygon", "MultiPolygon", "GeometryCollection", ""]),
        "coordinates": coordinates_like
        | positions
        | st.lists(closed_rings, min_size=1, max_size=2)
        | st.lists(st.lists(closed_rings, min_size=1, max_size=2), min_size=1, max_size=2),
    }
)
stops_like = st.lists(
    st.dictionaries(st.sampled_from(["name", "lon", "lat", "eta"]), json_values, max_size=4), max_size=4
)
records_like = st.dictionaries(
    st.sampled_from(ALL_FIELD_NAMES) | st.text(max_size=8),
    json_values | geometry_like | stops_like,
    max_size=12,
)


@pytest.mark.parametrize("collection", COLLECTIONS)
@settings(max_examples=200, deadline=None)
@given(record=records_like | json_values)
def test_problems_never_raises_on_arbitrary_json(collection: str, record: Any) -> None:
    found = problems(collection, record)
    # A field may legitimately be named "" in JSON, so only the reason must be non-empty.
    assert all(isinstance(p, Problem) and isinstance(p.field, str) and p.reason for p in found)
    if found:
        with pytest.raises(ValidationError):
            validate_record(collection, record)
    else:
        validate_record(collection, record)
