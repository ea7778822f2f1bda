"""Fix filters: drop fixes that are impossible, noisy or redundant before they reach the outbox.

Each check compares a fix with the last *accepted* fix of the same device. The reasons, in
the order they are checked:

- `invalid_time`: not a finite, positive Unix time
- `invalid_coordinates`: not finite, or latitude/longitude out of range
- `null_island`: exactly 0,0 (what many receivers report before their first fix)
- `future`: more than `max_future_s` ahead of the clock
- `poor_accuracy`: accuracy worse than `max_accuracy_m` metres
- `duplicate`: same device and time as the last accepted fix
- `implied_speed`: getting here from the last accepted fix would need more than `max_speed_kph`
  (after `implied_speed_reset_after` such rejections in a row the next fix is taken as the new
  reference, so one bad accepted fix cannot block a device forever)
- `min_period`: less than `min_period_s` after the last accepted fix (0 = off)
- `min_distance`: less than `min_distance_m` from the last accepted fix (0 = off)
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from storage.positions import Fix
from sync.gps.geo import distance_m

REASONS = ("invalid_time", "invalid_coordinates", "null_island", "future", "poor_accuracy", "duplicate",
           "implied_speed", "min_period", "min_distance")


@dataclass(frozen=True)
class FilterConfig:
    max_future_s: float | None = 300.0
    max_accuracy_m: float | None = 100.0
    max_speed_kph: float | None = 300.0
    implied_speed_reset_after: int = 5
    min_distance_m: float = 0.0
    min_period_s: float = 0.0
    reject_null_island: bool = True


@dataclass
class FixFilter:
    config: FilterConfig = field(default_factory=FilterConfig)
    clock: Callable[[], float] = time.time
    counts: Counter[str] = field(default_factory=Counter)
    _last: dict[str, Fix] = field(default_factory=dict, init=False, repr=False)
    _speed_rejections: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def check(self, fix: Fix) -> str | None:
        """Why the fix would be rejected, or None when it would be accepted. Changes nothing."""
        c = self.config
        t = fix.fix_time
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            return "invalid_time"
        lat, lon = fix.lat, fix.lon
        if (not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)) or not math.isfinite(lat)
                or not math.isfinite(lon) or not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0):
            return "invalid_coordinates"
        if c.reject_null_island and lat == 0.0 and lon == 0.0:
            return "null_island"
        if c.max_future_s is not None and t > self.clock() + c.max_future_s:
            return "future"
        if c.max_accuracy_m is not None and fix.accuracy is not None and fix.accuracy > c.max_accuracy_m:
            return "poor_accuracy"
        last = self._last.get(fix.device_id)
        if last is None:
            return None
        if t == last.fix_time:
            return "duplicate"
        dt = abs(t - last.fix_time)
        moved: float | None = None
        if c.max_speed_kph is not None and self._speed_rejections.get(fix.device_id, 0) < c.implied_speed_reset_after:
            moved = distance_m(last.lon, last.lat, lon, lat)
            if moved / dt * 3.6 > c.max_speed_kph:
                return "implied_speed"
        if c.min_period_s > 0 and t - last.fix_time < c.min_period_s:
            return "min_period"
        if c.min_distance_m > 0:
            if moved is None:
                moved = distance_m(last.lon, last.lat, lon, lat)
            if moved < c.min_distance_m:
                return "min_distance"
        return None

    def accept(self, fix: Fix) -> bool:
        """Check the fix, count the outcome, and remember it as the device's reference if accepted."""
        return self.process(fix) is None

    def process(self, fix: Fix) -> str | None:
        """accept(), answering the reason for a rejection (None when accepted)."""
        reason = self.check(fix)
        if reason is not None:
            self.counts[reason] += 1
            if reason == "implied_speed":
                self._speed_rejections[fix.device_id] = self._speed_rejections.get(fix.device_id, 0) + 1
            return reason
        self.counts["accepted"] += 1
        self._speed_rejections.pop(fix.device_id, None)
        last = self._last.get(fix.device_id)
        if last is None or fix.fix_time > last.fix_time:  # a late, older fix does not become the reference
            self._last[fix.device_id] = fix
        return None

    def reset(self, device_id: str | None = None) -> None:
        """Forget the reference fix of one device (or all)."""
        if device_id is None:
            self._last.clear()
            self._speed_rejections.clear()
        else:
            self._last.pop(device_id, None)
            self._speed_rejections.pop(device_id, None)
