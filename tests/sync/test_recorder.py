"""The recorder: filtered fixes into the outbox in batches, offline geofence events into store.events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from storage import Store
from storage.events import Event
from storage.positions import Fix
from sync.gps.filters import FixFilter
from sync.gps.geo import offset
from sync.gps.recorder import Recorder
from sync.gps.simulator import RouteSimulator

T0 = time.time() - 3600.0  # an hour ago: well inside the filter's clock window
WEST = (5.000, 52.000)
EAST = offset(*WEST, 3000.0, 0.0)  # 3 km due east


def square(lon0: float, lat0: float, size_m: float) -> dict[str, Any]:
    lon1, lat1 = offset(lon0, lat0, size_m, size_m)
    return {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]]}


def fence_across_route(east_m: float, size_m: float = 200.0) -> dict[str, Any]:
    """A square straddling the route, `east_m` metres east of its start."""
    lon, lat = offset(*WEST, east_m, -size_m / 2)
    return square(lon, lat, size_m)


@pytest.fixture
def fleet(store: Store) -> Store:
    store.vehicles.upsert("truck-1", {"name": "Truck 1", "device_id": "gps-1", "speed_limit_kph": 80})
    store.geofences.upsert("depot", {"name": "Depot", "geometry": fence_across_route(500)})
    store.geofences.upsert("customer", {"name": "Customer", "geometry": fence_across_route(2000),
                                        "speed_limit_kph": 30})
    store.geofences.upsert("closed", {"name": "Closed", "geometry": fence_across_route(1200), "active": False})
    return store


def simulated(**options: Any) -> RouteSimulator:
    return RouteSimulator([WEST, EAST], **{"speed_kph": 36.0, "interval_s": 1.0, "device_id": "gps-1",
                                           "start_time": T0, **options})


def events_of(store: Store, vehicle_id: str = "truck-1") -> list[Event]:
    return sorted(store.events.recent(vehicle_id=vehicle_id), key=lambda e: (e.event_time, e.kind))


def summary(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.geofence_id) for e in events]


def test_simulated_track_through_two_geofences(fleet: Store) -> None:
    batches: list[int] = []
    recorder = Recorder(fleet, simulated(), FixFilter(), batch_size=25, on_batch=batches.append)
    stats = recorder.run()

    assert stats.received == stats.accepted == stats.stored == 301  # 3 km at 10 m/s, one fix a second
    assert fleet.positions.counts().pending == 301
    assert sum(batches) == 301 and len(batches) == stats.batches == 13 and max(batches) == 25
    # The device is truck-1's tracker: its fixes are recorded for truck-1.
    track = fleet.positions.track("truck-1", T0 - 1, T0 + 1000)
    assert len(track) == 301
    latest = fleet.vehicles.latest_fix("truck-1")
    assert latest is not None and latest.fix_time == track[-1].fix_time

    events = events_of(fleet)
    assert summary(events) == [("geofence_enter", "depot"), ("geofence_exit", "depot"),
                               ("geofence_enter", "customer"), ("overspeed", "customer"),
                               ("geofence_exit", "customer")]
    assert all(e.source == "local" for e in events)
    enter_depot, exit_depot = events[0], events[1]
    # Entered at 500 m (t = 50 s) and left at 700 m (t = 70 s): the first fix inside/outside.
    assert enter_depot.event_time == pytest.approx(T0 + 50, abs=1.01)
    assert exit_depot.event_time == pytest.approx(T0 + 70, abs=1.01)
    assert events[3].speed_kph == 36.0 and events[3].attributes == {"limit_kph": 30.0}


def test_fence_crossed_between_two_sparse_fixes(fleet: Store) -> None:
    # One fix every 100 s at 36 km/h: 1 km apart, so the 200 m depot falls between two fixes.
    recorder = Recorder(fleet, simulated(interval_s=100.0), FixFilter())
    recorder.run()
    events = events_of(fleet)
    assert summary(events) == [("geofence_enter", "depot"), ("geofence_exit", "depot"),
                               ("geofence_enter", "customer"), ("overspeed", "customer"),
                               ("geofence_exit", "customer")]
    enter_depot, exit_depot = events[0], events[1]
    # Between the fixes at 0 m and 1000 m, interpolated at the boundary crossings: 500 m and 700 m.
    assert enter_depot.event_time == pytest.approx(T0 + 50.0, abs=0.1)
    assert exit_depot.event_time == pytest.approx(T0 + 70.0, abs=0.1)
    assert enter_depot.lon == pytest.approx(offset(*WEST, 500.0, 0.0)[0], abs=1e-6)
    assert exit_depot.lon == pytest.approx(offset(*WEST, 700.0, 0.0)[0], abs=1e-6)
    assert enter_depot.lat == pytest.approx(WEST[1], abs=1e-6)


def test_restart_in_the_middle_neither_repeats_nor_loses_events(tmp_path: Path) -> None:
    path = tmp_path / "restart.sqlite"
    store = Store(path)
    store.vehicles.upsert("truck-1", {"name": "Truck 1", "device_id": "gps-1"})
    store.geofences.upsert("depot", {"name": "Depot", "geometry": fence_across_route(500)})
    fixes = list(simulated())
    Recorder(store, fixes[:60], FixFilter(), batch_size=7).run()  # stops inside the depot (500..700 m)
    assert summary(events_of(store)) == [("geofence_enter", "depot")]
    store.close()

    store = Store(path)
    try:
        Recorder(store, fixes[55:], FixFilter(), batch_size=7).run()  # overlaps: 5 fixes sent twice
        assert summary(events_of(store)) == [("geofence_enter", "depot"), ("geofence_exit", "depot")]
        assert store.positions.counts().pending == len(fixes)
    finally:
        store.close()


def test_rejected_fixes_are_not_recorded(fleet: Store) -> None:
    good = list(simulated())[:5]
    bad = [
        Fix("gps-1", T0 + 100, 0.0, 0.0),  # null island
        Fix("gps-1", T0 + 101, good[-1].lat, good[-1].lon, accuracy=500.0),
        Fix("gps-1", good[-1].fix_time, good[-1].lat, good[-1].lon),  # duplicate time
    ]
    recorder = Recorder(fleet, good + bad, FixFilter())
    stats = recorder.run()
    assert (stats.accepted, stats.rejected, stats.stored) == (5, 3, 5)
    assert stats.rejections == {"null_island": 1, "poor_accuracy": 1, "duplicate": 1}
    assert fleet.positions.counts().pending == 5


def test_device_without_vehicle_is_recorded_without_events(fleet: Store) -> None:
    stats = Recorder(fleet, simulated(device_id="unknown-phone"), FixFilter()).run()
    assert stats.stored == 301 and stats.events == 0
    assert fleet.positions.pending_batch(1)[0].fix.vehicle_id is None
    assert fleet.events.recent() == []


def test_vehicle_overspeed_and_reload_of_geofences(fleet: Store) -> None:
    recorder = Recorder(fleet, [], FixFilter(), vehicle_id="truck-1")
    lon, lat = offset(*WEST, 100.0, 0.0)
    recorder.record(Fix("gps-x", T0, lat, lon, speed_kph=85.0))  # vehicle limit 80
    fleet.geofences.upsert("new", {"name": "New", "geometry": square(*offset(*WEST, 150.0, -50.0), 100.0)})
    recorder.reload_geofences()
    lon2, lat2 = offset(*WEST, 200.0, 0.0)
    recorder.record(Fix("gps-x", T0 + 10, lat2, lon2, speed_kph=50.0))
    recorder.flush()
    assert summary(events_of(fleet)) == [("overspeed", None), ("geofence_enter", "new")]


def test_flushes_on_time_as_well_as_size(fleet: Store) -> None:
    now = [0.0]
    recorder = Recorder(fleet, [], FixFilter(), batch_size=1000, flush_interval_s=5.0, clock=lambda: now[0])
    fixes = list(simulated())
    for i, f in enumerate(fixes[:12]):
        now[0] = float(i)
        recorder.record(f)
    assert recorder.stats.batches == 2  # at t = 5 s and t = 10 s
    assert fleet.positions.counts().pending == 11
    recorder.flush()
    assert fleet.positions.counts().pending == 12
