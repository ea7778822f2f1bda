"""GeofenceIndex lookups against brute-force shapely, and EventDetector's enter/exit/overspeed rules."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import shapely
from shapely.geometry import Point

import sync.geofencing as geofencing
from storage.events import EVENT_KINDS
from storage.geometry import geofence_shape
from sync.geofencing import (
    GEOFENCE_ENTER,
    GEOFENCE_EXIT,
    OVERSPEED,
    EventDetector,
    GeofenceEvent,
    GeofenceIndex,
)


def square(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


RECORDS: dict[str, dict[str, Any]] = {
    "depot": {"name": "Depot", "geometry": square(5.0, 52.0, 5.01, 52.01), "speed_limit_kph": 20},
    "yard": {"name": "Yard", "geometry": square(5.02, 52.0, 5.03, 52.01)},
    "circle": {"name": "Customer", "geometry": {"type": "Point", "coordinates": [5.05, 52.005]}, "radius_m": 200},
    "multi": {"name": "Two lots", "geometry": {"type": "MultiPolygon", "coordinates": [
        square(6.0, 52.0, 6.01, 52.01)["coordinates"], square(6.02, 52.0, 6.03, 52.01)["coordinates"]]}},
    "off": {"name": "Closed", "geometry": square(5.0, 52.0, 5.1, 52.1), "active": False},
    "no_geometry": {"name": "Broken", "geometry": {"type": "Polygon"}},
    "line": {"name": "Not an area", "geometry": {"type": "LineString", "coordinates": [[5.0, 52.0], [5.1, 52.1]]}},
    "circle_without_radius": {"name": "Dot", "geometry": {"type": "Point", "coordinates": [5.0, 52.0]}},
}


@pytest.fixture
def index() -> GeofenceIndex:
    return GeofenceIndex.from_records(RECORDS)


def test_event_kinds_are_the_stored_ones() -> None:
    assert {GEOFENCE_ENTER, GEOFENCE_EXIT, OVERSPEED} <= set(EVENT_KINDS)


def test_from_records_keeps_active_readable_fences(index: GeofenceIndex) -> None:
    assert index.ids == {"depot", "yard", "circle", "multi"}
    assert len(index) == 4 and "depot" in index and "off" not in index
    assert index.skipped == {"off": "inactive", "no_geometry": "unreadable geometry",
                             "line": "unreadable geometry", "circle_without_radius": "unreadable geometry"}
    assert index.speed_limit("depot") == 20.0
    assert index.speed_limit("yard") is None
    assert index.speed_limit("unknown") is None


def test_containing(index: GeofenceIndex) -> None:
    assert index.containing(5.005, 52.005) == {"depot"}
    assert index.containing(5.05, 52.005) == {"circle"}  # the circle's centre
    assert index.containing(5.05, 52.005 + 150 / 111_195) == {"circle"}  # 150 m north: inside 200 m
    assert index.containing(5.05, 52.005 + 250 / 111_195) == frozenset()
    assert index.containing(6.025, 52.005) == {"multi"}
    assert index.containing(6.015, 52.005) == frozenset()  # between the two lots
    assert index.containing(5.01, 52.005) == {"depot"}  # on the boundary counts as inside
    assert index.containing(4.0, 50.0) == frozenset()
    assert index.containing(math.nan, 52.0) == frozenset()


def test_active_true_and_missing_are_indexed_and_bool_limits_ignored() -> None:
    index = GeofenceIndex.from_records({
        "a": {"geometry": square(0, 0, 1, 1), "active": True, "speed_limit_kph": True},
        "b": {"geometry": square(0, 0, 1, 1), "speed_limit_kph": -5},
        "c": {"geometry": square(0, 0, 1, 1), "active": 0},
    })
    assert index.ids == {"a", "b"}
    assert index.speed_limit("a") is None and index.speed_limit("b") is None


def test_self_intersecting_fence_is_repaired_not_dropped() -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[5.0, 52.0], [5.1, 52.1], [5.1, 52.0], [5.0, 52.1], [5.0, 52.0]]]}
    index = GeofenceIndex.from_records({"bowtie": {"name": "x", "geometry": bowtie}})
    assert index.ids == {"bowtie"}
    assert index.containing(5.01, 52.05) == {"bowtie"}  # in the left triangle
    assert index.containing(5.05, 52.09) == frozenset()  # above the crossing point, outside both


def test_empty_index() -> None:
    index = GeofenceIndex.empty()
    assert len(index) == 0
    assert index.containing(5.0, 52.0) == frozenset()
    assert index.crossed(5.0, 52.0, 6.0, 53.0) == frozenset()
    assert EventDetector(index).process("v", 1.0, 5.0, 52.0, 50.0) == []


def _random_records(rng: random.Random, n: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(n):
        lon, lat = rng.uniform(4.9, 5.3), rng.uniform(51.9, 52.2)
        radius = rng.uniform(0.001, 0.03)
        ring = [[lon + radius * rng.uniform(0.6, 1.0) * math.cos(2 * math.pi * k / 20),
                 lat + radius * rng.uniform(0.6, 1.0) * math.sin(2 * math.pi * k / 20)] for k in range(20)]
        ring.append(ring[0])
        out[f"g{i}"] = {"name": str(i), "geometry": {"type": "Polygon", "coordinates": [ring]}}
    return out


@pytest.mark.parametrize("cell_deg", [0.001, 0.01, 0.5])
def test_containing_agrees_with_brute_force(cell_deg: float) -> None:
    rng = random.Random(11)
    records = _random_records(rng, 400)
    index = GeofenceIndex.from_records(records, cell_deg=cell_deg)
    ids = list(records)
    shapes = [geofence_shape(records[gid]) for gid in ids]
    # Random points plus points exactly on cell edges, where rounding could drop a candidate.
    points = [(rng.uniform(4.9, 5.3), rng.uniform(51.9, 52.2)) for _ in range(1500)]
    points += [(round(rng.uniform(4.9, 5.3) / cell_deg) * cell_deg, rng.uniform(51.9, 52.2)) for _ in range(300)]
    for lon, lat in points:
        inside = shapely.intersects_xy(shapes, lon, lat)
        expected = {gid for gid, hit in zip(ids, inside, strict=True) if hit}
        assert index.containing(lon, lat) == expected, (lon, lat)


def test_cell_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geofencing, "_MAX_CACHED_CELLS", 8)
    rng = random.Random(2)
    records = _random_records(rng, 50)
    index = GeofenceIndex.from_records(records, cell_deg=0.001)
    shapes = {gid: geofence_shape(r) for gid, r in records.items()}
    for _ in range(300):
        lon, lat = rng.uniform(4.9, 5.3), rng.uniform(51.9, 52.2)
        expected = {gid for gid, s in shapes.items() if s is not None and s.intersects(Point(lon, lat))}
        assert index.containing(lon, lat) == expected
        assert len(index._cells) <= 8


def test_crossed(index: GeofenceIndex) -> None:
    # West to east along lat 52.005: through depot, yard and circle.
    assert index.crossed(4.99, 52.005, 5.06, 52.005) == {"depot", "yard", "circle"}
    # Starting inside the depot: its boundary is crossed on the way out.
    assert index.crossed(5.005, 52.005, 5.025, 52.005) == {"depot", "yard"}
    # Staying inside the depot crosses no boundary.
    assert index.crossed(5.002, 52.005, 5.008, 52.005) == frozenset()
    # Passing between fences.
    assert index.crossed(5.015, 51.9, 5.015, 52.1) == frozenset()
    assert index.crossed(5.0, 52.0, 5.0, 52.0) == frozenset()


def test_crossed_agrees_with_brute_force() -> None:
    rng = random.Random(5)
    records = _random_records(rng, 300)
    index = GeofenceIndex.from_records(records)
    shapes = {gid: geofence_shape(r) for gid, r in records.items()}
    for _ in range(300):
        lon1, lat1 = rng.uniform(4.9, 5.3), rng.uniform(51.9, 52.2)
        lon2, lat2 = lon1 + rng.uniform(-0.05, 0.05), lat1 + rng.uniform(-0.05, 0.05)
        line = shapely.LineString([(lon1, lat1), (lon2, lat2)])
        expected = {gid for gid, s in shapes.items() if s is not None and s.boundary.intersects(line)}
        assert index.crossed(lon1, lat1, lon2, lat2) == expected


# -- EventDetector ------------------------------------------------------------------------------

def kinds(events: list[GeofenceEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.geofence_id) for e in events]


def test_enter_and_exit_by_set_difference(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    assert detector.process("v1", 100.0, 4.999, 52.005, 10.0) == []
    entered = detector.process("v1", 101.0, 5.001, 52.005, 10.0)
    assert entered == [GeofenceEvent("v1", GEOFENCE_ENTER, 101.0, "depot", 5.001, 52.005, 10.0)]
    assert detector.process("v1", 102.0, 5.005, 52.005, 10.0) == []
    exited = detector.process("v1", 103.0, 5.011, 52.005, 10.0)
    assert exited == [GeofenceEvent("v1", GEOFENCE_EXIT, 103.0, "depot", 5.011, 52.005, 10.0)]


def test_fence_crossed_between_sparse_fixes_gets_interpolated_enter_and_exit(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    detector.process("v1", 0.0, 5.015, 52.005, 60.0)  # between depot and yard
    events = detector.process("v1", 100.0, 5.035, 52.005, 60.0)  # jumped over the yard (5.02..5.03)
    assert kinds(events) == [(GEOFENCE_ENTER, "yard"), (GEOFENCE_EXIT, "yard")]
    enter, leave = events
    assert enter.event_time == pytest.approx(25.0) and enter.lon == pytest.approx(5.02)
    assert leave.event_time == pytest.approx(75.0) and leave.lon == pytest.approx(5.03)
    assert enter.lat == pytest.approx(52.005) and leave.lat == pytest.approx(52.005)


def test_events_between_and_at_fixes_are_in_time_order(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    detector.process("v1", 0.0, 5.005, 52.005)  # starts inside the depot
    events = detector.process("v1", 110.0, 5.06, 52.005)  # to beyond the circle
    assert kinds(events) == [(GEOFENCE_ENTER, "yard"), (GEOFENCE_EXIT, "yard"), (GEOFENCE_ENTER, "circle"),
                             (GEOFENCE_EXIT, "circle"), (GEOFENCE_EXIT, "depot")]
    times = [e.event_time for e in events]
    assert times == sorted(times) and times[-1] == 110.0
    assert all(0.0 < t < 110.0 for t in times[:-1])


def test_first_fix_inside_enters_unless_disabled(index: GeofenceIndex) -> None:
    assert kinds(EventDetector(index).process("v", 1.0, 5.005, 52.005)) == [(GEOFENCE_ENTER, "depot")]
    assert EventDetector(index, enter_on_first_fix=False).process("v", 1.0, 5.005, 52.005) == []


def test_out_of_order_and_repeated_fixes_are_ignored(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    detector.process("v", 10.0, 4.99, 52.005)
    assert detector.process("v", 5.0, 5.005, 52.005) == []  # older than the last fix
    assert detector.process("v", 10.0, 5.005, 52.005) == []  # same time
    assert detector.state("v") == {"fix_time": 10.0, "lon": 4.99, "lat": 52.005, "inside": [], "overspeed": False}
    assert kinds(detector.process("v", 11.0, 5.005, 52.005)) == [(GEOFENCE_ENTER, "depot")]


def test_vehicles_are_independent(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    detector.process("a", 1.0, 5.005, 52.005)
    detector.process("b", 1.0, 4.99, 52.005)
    assert kinds(detector.process("b", 2.0, 5.005, 52.005)) == [(GEOFENCE_ENTER, "depot")]
    assert detector.process("a", 2.0, 5.006, 52.005) == []
    assert sorted(detector.vehicles()) == ["a", "b"]


def test_overspeed_with_hysteresis_against_the_vehicle_limit(index: GeofenceIndex) -> None:
    detector = EventDetector(index, overspeed_hysteresis_kph=5.0)
    speeds = [80, 95, 100, 88, 96, 84, 91, 70]
    emitted = []
    for t, speed in enumerate(speeds):
        for e in detector.process("v", float(t), 4.0 + t * 0.001, 50.0, float(speed), vehicle_speed_limit=90):
            emitted.append((e.event_time, e.speed_kph, e.limit_kph, e.geofence_id))
    # Over at 95; 88 is not 5 under the limit, so 96 is the same episode; 84 re-arms; 91 fires again.
    assert emitted == [(1.0, 95.0, 90.0, None), (6.0, 91.0, 90.0, None)]


def test_overspeed_against_the_fence_limit(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    assert kinds(detector.process("v", 0.0, 4.99, 52.005, 40.0, vehicle_speed_limit=50)) == []
    events = detector.process("v", 1.0, 5.001, 52.005, 40.0, vehicle_speed_limit=50)  # depot: 20 km/h
    assert kinds(events) == [(GEOFENCE_ENTER, "depot"), (OVERSPEED, "depot")]
    assert events[1].limit_kph == 20.0 and events[1].speed_kph == 40.0
    assert detector.process("v", 2.0, 5.002, 52.005, 25.0, vehicle_speed_limit=50) == []
    assert detector.process("v", 3.0, 5.003, 52.005, 10.0, vehicle_speed_limit=50) == []  # back under
    assert kinds(detector.process("v", 4.0, 5.004, 52.005, 30.0)) == [(OVERSPEED, "depot")]
    assert detector.process("v", 5.0, 5.005, 52.005, None) == []  # no speed: state unchanged


def test_no_limit_means_no_overspeed(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    assert detector.process("v", 1.0, 4.0, 50.0, 250.0) == []


def test_state_round_trip_continues_where_it_left_off(index: GeofenceIndex) -> None:
    first = EventDetector(index)
    first.process("v", 1.0, 5.005, 52.005, 30.0)  # enters the depot, overspeed
    saved = first.state("v")
    assert saved == {"fix_time": 1.0, "lon": 5.005, "lat": 52.005, "inside": ["depot"], "overspeed": True}
    second = EventDetector(index)
    second.restore("v", saved)
    assert second.process("v", 2.0, 5.006, 52.005, 30.0) == []  # no second enter, no second overspeed
    assert kinds(second.process("v", 3.0, 5.011, 52.005, 30.0)) == [(GEOFENCE_EXIT, "depot")]
    second.restore("v", None)
    assert second.state("v") is None


def test_removed_fence_is_forgotten_without_an_exit(index: GeofenceIndex) -> None:
    detector = EventDetector(index)
    detector.process("v", 1.0, 5.005, 52.005)
    detector.index = GeofenceIndex.from_records({k: v for k, v in RECORDS.items() if k != "depot"})
    assert detector.process("v", 2.0, 5.02, 52.005) == [
        GeofenceEvent("v", GEOFENCE_ENTER, 2.0, "yard", 5.02, 52.005, None)]


def test_to_event_for_storage() -> None:
    event = GeofenceEvent("v", OVERSPEED, 5.0, None, 5.0, 52.0, 99.0, 90.0).to_event()
    assert (event.kind, event.source, event.attributes) == (OVERSPEED, "local", {"limit_kph": 90.0})
    assert GeofenceEvent("v", GEOFENCE_ENTER, 5.0, "g", 5.0, 52.0).to_event("server").attributes == {}


def test_one_index_shared_by_threads_agrees_with_itself() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(9)
    records = _random_records(rng, 300)
    points = [(rng.uniform(4.9, 5.3), rng.uniform(51.9, 52.2)) for _ in range(2000)]
    reference = GeofenceIndex.from_records(records)
    expected = [reference.containing(lon, lat) for lon, lat in points]
    shared = GeofenceIndex.from_records(records)  # fresh: prepared geometries not yet warmed up

    def look_up(offset: int) -> list[frozenset[str]]:
        order = points[offset:] + points[:offset]
        found = [shared.containing(lon, lat) for lon, lat in order]
        return found[len(points) - offset:] + found[:len(points) - offset]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(look_up, [0, 500, 1000, 1500]))
    assert all(result == expected for result in results)
