"""The route simulator: positions along the route at the given speed, courses, determinism, jitter."""

from __future__ import annotations

import itertools
import statistics
import time

import pytest
from shapely.geometry import LineString

from sync.gps.geo import distance_m, offset
from sync.gps.simulator import RouteSimulator

START = (13.40, 52.52)
CORNER = offset(*START, 1000.0, 0.0)  # 1 km east
END = offset(*CORNER, 0.0, 500.0)  # then 500 m north
ROUTE = {"type": "LineString", "coordinates": [list(START), list(CORNER), list(END)]}


def test_drives_the_route_at_the_given_speed() -> None:
    sim = RouteSimulator(ROUTE, speed_kph=36.0, interval_s=10.0, device_id="sim", vehicle_id="v1", start_time=1000.0)
    assert sim.length_m == pytest.approx(1500.0, rel=1e-3)
    fixes = list(sim)
    # 100 m per fix: 0, 100, ..., 1500 m.
    assert len(fixes) == 16
    assert [f.fix_time for f in fixes] == pytest.approx([1000.0 + 10 * k for k in range(15)] + [1000 + sim.duration_s])
    assert (fixes[0].lon, fixes[0].lat) == pytest.approx(START)
    assert (fixes[-1].lon, fixes[-1].lat) == pytest.approx(END)
    assert (fixes[10].lon, fixes[10].lat) == pytest.approx(CORNER, abs=1e-6)
    steps = [distance_m(a.lon, a.lat, b.lon, b.lat) for a, b in itertools.pairwise(fixes)]
    assert steps[:10] == pytest.approx([100.0] * 10, rel=2e-3)  # along the east leg
    assert [f.course for f in fixes[:10]] == [90.0] * 10
    assert [f.course for f in fixes[11:]] == [0.0] * 5
    assert all(f.speed_kph == 36.0 and f.device_id == "sim" and f.vehicle_id == "v1" for f in fixes)
    assert all(f.attributes == {"simulated": True} for f in fixes)


def test_route_forms_agree() -> None:
    coords = ROUTE["coordinates"]
    a = list(RouteSimulator(ROUTE, speed_kph=50, start_time=0.0))
    b = list(RouteSimulator(LineString(coords), speed_kph=50, start_time=0.0))
    c = list(RouteSimulator([tuple(p) for p in coords], speed_kph=50, start_time=0.0))
    assert a == b == c
    sim = RouteSimulator(ROUTE, speed_kph=50)
    assert len(a) == 1 + int(sim.length_m / (50 / 3.6)) + 1  # every second, plus the arrival


def test_seeded_jitter_is_deterministic_and_about_the_right_size() -> None:
    one = list(RouteSimulator(ROUTE, speed_kph=36, start_time=0.0, seed=7, jitter_m=5.0))
    two = list(RouteSimulator(ROUTE, speed_kph=36, start_time=0.0, seed=7, jitter_m=5.0))
    other = list(RouteSimulator(ROUTE, speed_kph=36, start_time=0.0, seed=8, jitter_m=5.0))
    exact = list(RouteSimulator(ROUTE, speed_kph=36, start_time=0.0))
    assert one == two
    assert one != other
    errors = [distance_m(a.lon, a.lat, b.lon, b.lat) for a, b in zip(one, exact, strict=True)]
    # Two normal axes of sigma 5 m: the mean radial error is 5 * sqrt(pi / 2) = 6.3 m.
    assert 4.5 < statistics.fmean(errors) < 8.0


def test_loop_keeps_driving() -> None:
    sim = RouteSimulator(ROUTE, speed_kph=360.0, interval_s=1.0, start_time=0.0, loop=True)  # 100 m/s
    fixes = list(itertools.islice(sim, 40))
    assert len(fixes) == 40
    assert (fixes[15].lon, fixes[15].lat) == pytest.approx(START, abs=1e-6)  # 1500 m: back at the start
    assert (fixes[25].lon, fixes[25].lat) == pytest.approx(CORNER, abs=1e-6)


def test_realtime_paces_on_the_clock_and_stops() -> None:
    sim = RouteSimulator(ROUTE, speed_kph=36, interval_s=0.02, start_time=0.0, realtime=True)
    started = time.monotonic()
    fixes = []
    for fix in sim:
        fixes.append(fix)
        if len(fixes) == 6:
            sim.stop_event.set()
    assert len(fixes) == 6
    assert time.monotonic() - started >= 0.09


@pytest.mark.parametrize("route, options", [
    ({"type": "Point", "coordinates": [0, 0]}, {}),
    ([(1.0, 1.0)], {}),
    ([(1.0, 1.0), (1.0, 1.0)], {}),
    ([(1.0, 95.0), (1.0, 1.0)], {}),
    (ROUTE, {"speed_kph": 0}),
    (ROUTE, {"interval_s": 0}),
    (ROUTE, {"jitter_m": -1}),
])
def test_bad_arguments(route: object, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RouteSimulator(route, **{"speed_kph": 50.0, **options})  # type: ignore[arg-type]
