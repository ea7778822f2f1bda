"""Events computed on ingest (geofence enter/exit, overspeed) and the trip and stop reports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server_stub import reports
from server_stub.positions import Fix
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for

from .gps_support import (
    BASE_LAT,
    BASE_LON,
    client,
    create_geofence,
    create_vehicle,
    events,
    iso,
    line,
    now_s,
    post_batch,
    square,
    track,
)


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings)


def kinds(found: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["geofence_id"]) for e in found]


def test_a_track_through_two_geofences_enters_and_leaves_each_in_order(live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 3600
    with client(live, tenant.tokens["dispatcher"]) as http:
        first = create_geofence(http, "Depot", square(BASE_LON + 0.01, BASE_LAT, 0.002), kind="depot")
        second = create_geofence(http, "Customer", square(BASE_LON + 0.03, BASE_LAT, 0.002))
        van = create_vehicle(http, "Van E")
        fixes = track(van, start, line(BASE_LON, BASE_LAT, BASE_LON + 0.04, BASE_LAT, 81))
        # Uploaded in two batches, the second re-sending part of the first.
        assert post_batch(http, fixes[:40])["accepted"] == 40
        assert post_batch(http, fixes[30:])["duplicates"] == 10
        found = events(http, van)
        assert kinds(found) == [("geofence_enter", first), ("geofence_exit", first), ("geofence_enter", second),
                                ("geofence_exit", second)]
        times = [e["event_time"] for e in found]
        assert times == sorted(times)
        enter = found[0]
        assert BASE_LON + 0.008 - 1e-9 <= enter["lon"] <= BASE_LON + 0.0085  # the first fix inside the fence
        assert enter["lat"] == pytest.approx(BASE_LAT)
        assert kinds(events(http, van, kind="geofence_exit")) == [("geofence_exit", first), ("geofence_exit", second)]
        assert events(http, "someone-else") == []
        assert http.get("/api/v1/events", params={"kind": "teleport"}).status_code == 400


def test_a_fence_crossed_between_two_sparse_fixes_yields_enter_and_exit_in_between(
        live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 3600
    with client(live, tenant.tokens["dispatcher"]) as http:
        fence = create_geofence(http, "Toll gate", square(BASE_LON + 0.02, BASE_LAT, 0.001))
        van = create_vehicle(http, "Van S")
        post_batch(http, track(van, start, [(BASE_LON + 0.01, BASE_LAT), (BASE_LON + 0.03, BASE_LAT)], step=600))
        found = events(http, van)
    assert kinds(found) == [("geofence_enter", fence), ("geofence_exit", fence)]
    enter_t, exit_t = (e["event_time"] for e in found)
    assert iso(start) < enter_t < exit_t < iso(start + 600)
    # Interpolated on the segment: the fence spans 0.019..0.021 of a 0.01..0.03 line.
    assert found[0]["lon"] == pytest.approx(BASE_LON + 0.019, abs=1e-6)
    assert found[1]["lon"] == pytest.approx(BASE_LON + 0.021, abs=1e-6)
    assert enter_t == iso(start + 270) and exit_t == iso(start + 330)


def test_overspeed_against_the_vehicle_limit_and_a_fence_limit(live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 3600
    with client(live, tenant.tokens["dispatcher"]) as http:
        limited = create_vehicle(http, "Van 50", speed_limit_kph=50)
        speeds = [30.0, 60.0, 70.0, 40.0, 65.0]
        post_batch(http, [{"vehicle_id": limited, "fix_time": iso(start + i * 10), "lat": BASE_LAT + i * 1e-4,
                           "lon": BASE_LON, "speed_kph": s} for i, s in enumerate(speeds)])
        found = events(http, limited, kind="overspeed")
        assert [(e["event_time"], e["speed_kph"], e["attributes"]["limit_kph"], e["geofence_id"]) for e in found] == [
            (iso(start + 10), 60.0, 50.0, None), (iso(start + 40), 65.0, 50.0, None)]

        school = create_geofence(http, "School zone", square(BASE_LON + 0.05, BASE_LAT, 0.002), speed_limit_kph=20)
        free = create_vehicle(http, "Van free")
        post_batch(http, [{"vehicle_id": free, "fix_time": iso(start + 100), "lat": BASE_LAT,
                           "lon": BASE_LON + 0.05, "speed_kph": 30.0}])
        found = events(http, free)
        assert kinds(found) == [("geofence_enter", school), ("overspeed", school)]
        assert found[1]["attributes"] == {"limit_kph": 20.0}


def test_detector_state_survives_a_restart_so_the_exit_still_comes(live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 3600
    with client(live, tenant.tokens["dispatcher"]) as http:
        fence = create_geofence(http, "Yard", square(BASE_LON + 0.01, BASE_LAT, 0.002))
        van = create_vehicle(http, "Van R")
        fixes = track(van, start, line(BASE_LON, BASE_LAT, BASE_LON + 0.02, BASE_LAT, 41))
        post_batch(http, fixes[:20])  # ends inside the fence
    live.restart()
    with client(live, tenant.tokens["dispatcher"]) as http:
        post_batch(http, fixes[20:])
        assert kinds(events(http, van)) == [("geofence_enter", fence), ("geofence_exit", fence)]


def test_a_geofence_added_later_is_used_for_the_next_batch(live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 3600
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van N")
        post_batch(http, track(van, start, [(BASE_LON, BASE_LAT)]))
        assert events(http, van) == []
        fence = create_geofence(http, "New site", square(BASE_LON + 0.01, BASE_LAT, 0.002))
        post_batch(http, track(van, start + 60, [(BASE_LON + 0.01, BASE_LAT)]))
        assert kinds(events(http, van)) == [("geofence_enter", fence)]
        http.patch(f"/api/v1/geofences/{fence}", json={"data": {"type": "geofences", "id": fence,
                                                                "attributes": {"active": False}}})
        post_batch(http, track(van, start + 120, [(BASE_LON + 0.01, BASE_LAT + 0.0001)]))
        assert kinds(events(http, van)) == [("geofence_enter", fence)]  # a deactivated fence is forgotten quietly


# -- trips and stops ------------------------------------------------------------------------------------

STEP_LAT = 0.0009  # ~100 m: 10 s apart that is 36 km/h


def drive_stop_drive(start: float) -> list[dict[str, Any]]:
    """Drive 10 min north, a 2 min halt at a light (not a stop), drive on, park 10 min, drive 10 min."""
    points: list[tuple[float, float, float]] = []  # (lat, lon, speed)
    lat = BASE_LAT
    for _ in range(30):
        points.append((lat, BASE_LON, 36.0))
        lat += STEP_LAT
    points.extend((lat, BASE_LON, 0.0) for _ in range(12))  # 120 s at a red light
    for _ in range(30):
        points.append((lat, BASE_LON, 36.0))
        lat += STEP_LAT
    points.extend((lat, BASE_LON, 0.0) for _ in range(60))  # parked for 600 s
    for _ in range(60):
        points.append((lat, BASE_LON, 36.0))
        lat += STEP_LAT
    return [{"fix_time": start + i * 10, "lat": p[0], "lon": p[1], "speed_kph": p[2]} for i, p in enumerate(points)]


def as_fixes(raw: list[dict[str, Any]]) -> list[Fix]:
    return [Fix("v", None, r["fix_time"], r["lat"], r["lon"], r["speed_kph"]) for r in raw]


def test_trips_and_stops_of_a_drive_stop_drive_track() -> None:
    start = 1_714_557_600.0
    fixes = as_fixes(drive_stop_drive(start))
    stops = reports.stops(fixes)
    assert [(s["start_time"], s["end_time"], s["duration_s"]) for s in stops] == [
        (iso(start + 720), iso(start + 1320), 600.0)]
    trips = reports.trips(fixes)
    assert [(t["start_time"], t["end_time"]) for t in trips] == [
        (iso(start), iso(start + 720)), (iso(start + 1320), iso(start + 1910))]
    assert trips[0]["distance_m"] == pytest.approx(60 * 100, rel=0.01)
    assert trips[1]["distance_m"] == pytest.approx(59 * 100, rel=0.01)
    assert trips[0]["max_speed_kph"] == 36.0
    assert trips[0]["avg_speed_kph"] == pytest.approx(6000 / 720 * 3.6, rel=0.01)


def test_short_trips_are_dropped_gaps_split_trips_and_missing_speeds_are_derived() -> None:
    start = 1_714_557_600.0
    short = [Fix("v", None, start + i * 10, BASE_LAT + i * 0.0001, BASE_LON, 20.0) for i in range(40)]  # 400 m
    assert reports.trips(short) == []
    # No reported speeds at all, and an hour-long hole in the data between two drives.
    drive = [Fix("v", None, start + i * 10, BASE_LAT + i * STEP_LAT, BASE_LON) for i in range(40)]
    later = [Fix("v", None, start + 7200 + i * 10, BASE_LAT + (40 + i) * STEP_LAT, BASE_LON) for i in range(40)]
    trips = reports.trips(drive + later)
    assert len(trips) == 2
    assert trips[0]["max_speed_kph"] == pytest.approx(36.0, rel=0.01)
    assert reports.stops(drive + later) == []
    assert reports.trips([]) == [] and reports.stops([]) == []


def test_trip_and_stop_report_endpoints(live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 7200
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van T")
        post_batch(http, [{"vehicle_id": van, **f} for f in drive_stop_drive(start)])
        params = {"vehicle_id": van, "from": iso(start - 60), "to": iso(start + 7000)}
        trips = http.get("/api/v1/reports/trips", params=params)
        assert trips.status_code == 200, trips.text
        assert [(t["start_time"], t["end_time"]) for t in trips.json()["data"]] == [
            (iso(start), iso(start + 720)), (iso(start + 1320), iso(start + 1910))]
        assert trips.json()["meta"]["settings"]["min_trip_distance_m"] == 500.0
        stops = http.get("/api/v1/reports/stops", params=params).json()["data"]
        assert [(s["start_time"], s["duration_s"]) for s in stops] == [(iso(start + 720), 600.0)]
        assert http.get("/api/v1/reports/trips").status_code == 400
    with client(live, provision_tenant(live.settings, "Nosy Ltd").tokens["admin"]) as other:
        assert other.get("/api/v1/reports/trips", params=params).json()["data"] == []
