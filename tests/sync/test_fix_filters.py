"""Fix filters: each rule rejects with its reason, good fixes pass, outcomes are counted."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from storage.positions import Fix
from sync.gps.filters import REASONS, FilterConfig, FixFilter
from sync.gps.geo import offset

NOW = 1_700_000_000.0
LON, LAT = 13.40, 52.52


def fix(dt: float = 0.0, east_m: float = 0.0, **changes: object) -> Fix:
    lon, lat = offset(LON, LAT, east_m, 0.0)
    return replace(Fix("dev-1", NOW + dt, lat, lon, accuracy=5.0), **changes)  # type: ignore[arg-type]


def make(**config: object) -> FixFilter:
    return FixFilter(FilterConfig(**config), clock=lambda: NOW)  # type: ignore[arg-type]


def test_good_track_passes() -> None:
    flt = make()
    track = [fix(t, 15.0 * t) for t in range(10)]  # 54 km/h
    assert [flt.check(f) is None and flt.accept(f) for f in track] == [True] * 10
    assert flt.counts == {"accepted": 10}


@pytest.mark.parametrize("bad, reason", [
    (fix(fix_time=math.nan), "invalid_time"),
    (fix(fix_time=-5.0), "invalid_time"),
    (fix(lat=91.0), "invalid_coordinates"),
    (fix(lon=-180.5), "invalid_coordinates"),
    (fix(lat=math.inf), "invalid_coordinates"),
    (fix(lon=math.nan), "invalid_coordinates"),
    (fix(lat=0.0, lon=0.0), "null_island"),
    (fix(dt=301.0), "future"),
    (fix(accuracy=150.0), "poor_accuracy"),
])
def test_each_single_fix_rule(bad: Fix, reason: str) -> None:
    flt = make()
    assert flt.check(bad) == reason
    assert not flt.accept(bad)
    assert flt.counts == {reason: 1}
    assert flt.accept(fix())  # the rejected fix did not become the reference


def test_limits_are_inclusive_and_configurable() -> None:
    assert make().check(fix(dt=300.0)) is None
    assert make().check(fix(accuracy=100.0)) is None
    assert make().check(fix(accuracy=None)) is None
    assert make(max_future_s=None, max_accuracy_m=None).check(fix(dt=9e6, accuracy=1e4)) is None
    assert make(reject_null_island=False).check(fix(lat=0.0, lon=0.0)) is None
    assert make(max_accuracy_m=10).check(fix(accuracy=12.0)) == "poor_accuracy"


def test_duplicate_time_of_the_same_device() -> None:
    flt = make()
    assert flt.accept(fix(0))
    assert flt.process(fix(0, east_m=3.0)) == "duplicate"
    assert flt.accept(fix(0, device_id="dev-2"))  # another device at the same time is fine
    assert flt.counts == {"accepted": 2, "duplicate": 1}


def test_implied_speed() -> None:
    flt = make()
    assert flt.accept(fix(0))
    assert flt.process(fix(10, east_m=1000.0)) == "implied_speed"  # 360 km/h
    assert flt.accept(fix(10, east_m=800.0))  # 288 km/h
    assert make(max_speed_kph=100).check(replace(fix(20, east_m=300.0))) is None  # no reference yet


def test_one_bad_reference_does_not_block_the_device_forever() -> None:
    flt = make(implied_speed_reset_after=3)
    assert flt.accept(fix(0, east_m=50_000.0))  # a wild first fix (cold start)
    reasons = [flt.process(fix(t, east_m=10.0 * t)) for t in range(1, 6)]
    assert reasons == ["implied_speed"] * 3 + [None, None]  # then the real track takes over
    assert flt.counts["implied_speed"] == 3


def test_min_period_and_min_distance_are_off_by_default() -> None:
    flt = make()
    assert flt.accept(fix(0))
    assert flt.accept(fix(0.1))
    assert flt.accept(fix(0.2))  # not moved at all


def test_min_period() -> None:
    flt = make(min_period_s=5)
    assert flt.accept(fix(0))
    assert flt.process(fix(4, east_m=40)) == "min_period"
    assert flt.accept(fix(5, east_m=50))


def test_min_distance() -> None:
    flt = make(min_distance_m=20)
    assert flt.accept(fix(0))
    assert flt.process(fix(1, east_m=10)) == "min_distance"
    assert flt.process(fix(2, east_m=19)) == "min_distance"
    assert flt.accept(fix(3, east_m=25))
    assert flt.counts == {"accepted": 2, "min_distance": 2}


def test_late_older_fix_does_not_become_the_reference() -> None:
    flt = make()
    assert flt.accept(fix(10, east_m=100))
    assert flt.accept(fix(5, east_m=50))  # late, but plausible
    assert flt.process(fix(10, east_m=200)) == "duplicate"  # the newest (t=10) is still the reference


def test_devices_are_independent_and_reset() -> None:
    flt = make(min_period_s=5)
    assert flt.accept(fix(0))
    assert flt.accept(fix(1, device_id="dev-2"))
    assert flt.process(fix(1)) == "min_period"
    flt.reset("dev-1")
    assert flt.accept(fix(1))
    flt.reset()
    assert flt.accept(fix(2, device_id="dev-2"))


def test_reasons_are_listed() -> None:
    assert set(REASONS) == {"invalid_time", "invalid_coordinates", "null_island", "future", "poor_accuracy",
                            "duplicate", "implied_speed", "min_period", "min_distance"}
