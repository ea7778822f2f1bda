"""record_fixes: the latest fix of many vehicles in one statement, with record_fix's rules."""

from __future__ import annotations

from pathlib import Path

from storage import Store
from storage.vehicles import LatestFix, VehicleId


def test_a_batch_keeps_only_newer_fixes_per_vehicle(tmp_path: Path) -> None:
    with Store(tmp_path / "fleet.sqlite") as store:
        a, b = VehicleId("a"), VehicleId("b")
        store.vehicles.record_fixes([LatestFix(a, 10.0, 24.9, 60.1, 5.0, None),
                                     LatestFix(b, 10.0, 24.8, 60.2, None, 90.0)])
        store.vehicles.record_fixes([LatestFix(a, 20.0, 25.0, 60.3, 7.0, None), LatestFix(b, 5.0, 0.5, 0.5, 1.0, 1.0)])
        store.vehicles.record_fixes([])
        fixes = {f.vehicle_id: f for f in store.vehicles.latest_fixes()}
        assert (fixes[a].fix_time, fixes[a].lon, fixes[a].speed_kph) == (20.0, 25.0, 7.0)
        assert (fixes[b].fix_time, fixes[b].lon, fixes[b].course) == (10.0, 24.8, 90.0)  # the late fix lost
