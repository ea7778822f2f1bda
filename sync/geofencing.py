"""Geofence enter/exit and overspeed events from a stream of fixes.

Shared by the offline field client (sync.gps.recorder) and the server's position ingest, so
both compute the same events from the same fixes.

- `GeofenceIndex` answers "which fences contain this point" and "which fences does this segment
  pass through". Fences sit in a shapely STRtree over prepared geometries; a point lookup goes
  through a small per-cell cache of STRtree candidates (a vehicle stays in one cell for many
  fixes), then one vectorised prepared `intersects_xy` over those candidates. A point on a
  fence's boundary counts as inside. An index is immutable and may be shared between threads
  (GEOS calls on the prepared geometries are serialised by a lock).
- `EventDetector` keeps per-vehicle state (last fix, fences inside, overspeed flag) and turns
  each new fix into events: enter/exit by set difference at the fix; a fence entered and left
  between two sparse fixes yields an enter and an exit at the interpolated boundary crossings;
  overspeed once when the speed goes over the lowest applicable limit, again only after it has
  dropped to `overspeed_hysteresis_kph` below that limit. Fixes not newer than the vehicle's last
  one are ignored.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from storage.events import EVENT_KINDS, Event
from storage.geometry import geofence_shape

GEOFENCE_ENTER = "geofence_enter"
GEOFENCE_EXIT = "geofence_exit"
OVERSPEED = "overspeed"
assert {GEOFENCE_ENTER, GEOFENCE_EXIT, OVERSPEED} <= set(EVENT_KINDS)

DEFAULT_CELL_DEG = 0.01  # ~1.1 km north-south: a vehicle stays in one cell for a minute or more
_MAX_CACHED_CELLS = 65_536
_CELL_PAD = 1e-9  # degrees; covers rounding in floor(x / cell) * cell

_IndexArray = npt.NDArray[np.intp]
_GeomArray = npt.NDArray[np.object_]
_EMPTY: frozenset[str] = frozenset()


def speed_limit_of(record: Mapping[str, Any]) -> float | None:
    """A record's `speed_limit_kph` as a positive float, or None when unset or unusable."""
    value = record.get("speed_limit_kph")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _polygonal(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The area of a geofence shape, repaired when invalid (a bow-tie becomes two triangles)."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        fixed = shapely.make_valid(geom)
        polygons: list[Polygon] = []
        for part in shapely.get_parts(fixed):
            if isinstance(part, Polygon):
                polygons.append(part)
            elif isinstance(part, MultiPolygon):
                polygons.extend(part.geoms)
        if not polygons:
            return None
        geom = MultiPolygon(polygons)
    if isinstance(geom, MultiPolygon) and len(geom.geoms) == 1:
        return geom.geoms[0]
    return geom


def _finite(*values: float) -> bool:
    try:
        return all(map(math.isfinite, values))
    except TypeError:
        return False


@dataclass(frozen=True, slots=True)
class Crossing:
    """A fence the segment between two fixes passes through without either fix being inside:
    it enters at fraction `enter` and leaves at fraction `exit` of the segment (0..1)."""

    geofence_id: str
    enter: float
    exit: float


class GeofenceIndex:
    """Immutable spatial index over the active, readable geofences of a tenant."""

    def __init__(
        self,
        ids: Sequence[str],
        shapes: Sequence[BaseGeometry],
        speed_limits: Sequence[float | None] | None = None,
        *,
        skipped: Mapping[str, str] | None = None,
        cell_deg: float = DEFAULT_CELL_DEG,
    ) -> None:
        if len(ids) != len(shapes) or (speed_limits is not None and len(speed_limits) != len(ids)):
            raise ValueError("ids, shapes and speed_limits must have the same length")
        if not (cell_deg > 0 and math.isfinite(cell_deg)):
            raise ValueError("cell_deg must be a positive number")
        self._ids: list[str] = list(ids)
        self._position = {gid: i for i, gid in enumerate(self._ids)}
        if len(self._position) != len(self._ids):
            raise ValueError("geofence ids must be unique")
        self._id_set = frozenset(self._ids)
        self._limits: list[float | None] = list(speed_limits) if speed_limits is not None else [None] * len(ids)
        self._limit_by_id = {gid: lim for gid, lim in zip(self._ids, self._limits, strict=True) if lim is not None}
        self._geoms: _GeomArray = np.empty(len(shapes), dtype=object)
        self._geoms[:] = list(shapes)
        shapely.prepare(self._geoms)
        self._bounds: list[tuple[float, float, float, float]] = [
            (float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in shapely.bounds(self._geoms)
        ] if len(shapes) else []
        self._tree = shapely.STRtree(self._geoms)
        self._cell = cell_deg
        self._inv_cell = 1.0 / cell_deg
        self._cells: dict[tuple[int, int], tuple[_IndexArray, _GeomArray]] = {}
        self.skipped: dict[str, str] = dict(skipped or {})
        # GEOS prepared geometries build their internal indexes lazily and are not thread-safe
        # (libgeos/geos#825), and shapely releases the GIL: one thread at a time uses them.
        self._lock = threading.Lock()

    @classmethod
    def from_records(cls, records: Mapping[str, Mapping[str, Any]], *,
                     cell_deg: float = DEFAULT_CELL_DEG) -> GeofenceIndex:
        """Index tenant-document geofence records `{id: fields}`. Inactive records (`active` is
        false) and records whose geometry cannot be read are left out and listed in `skipped`."""
        ids: list[str] = []
        shapes: list[BaseGeometry] = []
        limits: list[float | None] = []
        skipped: dict[str, str] = {}
        for gid, record in records.items():
            if not isinstance(record, Mapping):
                skipped[str(gid)] = "not a record"
                continue
            active = record.get("active")
            if active is not None and not active:
                skipped[str(gid)] = "inactive"
                continue
            try:
                geom = _polygonal(geofence_shape(record))
            except Exception:  # shapely raises several unrelated types on malformed input
                geom = None
            if geom is None:
                skipped[str(gid)] = "unreadable geometry"
                continue
            ids.append(str(gid))
            shapes.append(geom)
            limits.append(speed_limit_of(record))
        return cls(ids, shapes, limits, skipped=skipped, cell_deg=cell_deg)

    @classmethod
    def empty(cls) -> GeofenceIndex:
        return cls([], [])

    # -- lookups ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, geofence_id: object) -> bool:
        return geofence_id in self._position

    @property
    def ids(self) -> frozenset[str]:
        return self._id_set

    def speed_limit(self, geofence_id: str) -> float | None:
        return self._limit_by_id.get(geofence_id)

    def geometry(self, geofence_id: str) -> BaseGeometry | None:
        i = self._position.get(geofence_id)
        return None if i is None else self._geoms[i]

    def _candidates(self, lon: float, lat: float) -> tuple[_IndexArray, _GeomArray]:
        """Fences whose envelope meets the grid cell of the point (cached per cell)."""
        key = (math.floor(lon * self._inv_cell), math.floor(lat * self._inv_cell))
        hit = self._cells.get(key)
        if hit is None:
            c = self._cell
            cell = shapely.box(key[0] * c - _CELL_PAD, key[1] * c - _CELL_PAD,
                               (key[0] + 1) * c + _CELL_PAD, (key[1] + 1) * c + _CELL_PAD)
            idx: _IndexArray = np.sort(self._tree.query(cell)).astype(np.intp)
            hit = (idx, self._geoms[idx])
            if len(self._cells) >= _MAX_CACHED_CELLS:
                self._cells.clear()
            self._cells[key] = hit
        return hit

    def containing(self, lon: float, lat: float) -> frozenset[str]:
        """Ids of the fences that contain the point (boundary included)."""
        if not self._ids or not _finite(lon, lat):
            return _EMPTY
        return self._containing(lon, lat)

    def _containing(self, lon: float, lat: float) -> frozenset[str]:
        idx, geoms = self._candidates(lon, lat)
        if not len(idx):
            return _EMPTY
        with self._lock:
            inside = idx[shapely.intersects_xy(geoms, lon, lat)]
        if not len(inside):
            return _EMPTY
        ids = self._ids
        return frozenset([ids[i] for i in inside.tolist()])

    def containing_many(self, lons: Iterable[float], lats: Iterable[float]) -> list[frozenset[str]]:
        """`containing` for many points (a batch on ingest)."""
        return [self.containing(lon, lat) for lon, lat in zip(lons, lats, strict=True)]

    def _segment_candidates(self, lon1: float, lat1: float, lon2: float, lat2: float) -> list[int]:
        inv = self._inv_cell
        if (math.floor(lon1 * inv) == math.floor(lon2 * inv)) and (math.floor(lat1 * inv) == math.floor(lat2 * inv)):
            return self._candidates(lon2, lat2)[0].tolist()  # type: ignore[no-any-return]
        envelope = shapely.box(min(lon1, lon2), min(lat1, lat2), max(lon1, lon2), max(lat1, lat2))
        return sorted(self._tree.query(envelope).tolist())

    def _intersecting(self, line: LineString, candidates: list[int]) -> list[int]:
        if not candidates:
            return []
        chosen = np.asarray(candidates, dtype=np.intp)
        with self._lock:
            hits = shapely.intersects(self._geoms[chosen], line)
        return chosen[hits].tolist()  # type: ignore[no-any-return]

    def crossed(self, lon1: float, lat1: float, lon2: float, lat2: float) -> frozenset[str]:
        """Fences whose boundary the segment between two fixes crosses or touches: those it
        enters, leaves, or passes through (but not those it stays inside of all along)."""
        if not self._ids or not _finite(lon1, lat1, lon2, lat2):
            return _EMPTY
        if (lon1, lat1) == (lon2, lat2):
            return _EMPTY
        line = LineString([(lon1, lat1), (lon2, lat2)])
        hits = self._intersecting(line, self._segment_candidates(lon1, lat1, lon2, lat2))
        if not hits:
            return _EMPTY
        chosen = np.asarray(hits, dtype=np.intp)
        with self._lock:
            inside_all_along = shapely.contains_properly(self._geoms[chosen], line)
        through = chosen[~inside_all_along]
        return frozenset(self._ids[i] for i in through.tolist())

    def passed_through(self, lon1: float, lat1: float, lon2: float, lat2: float,
                       exclude: frozenset[str] | set[str] = _EMPTY) -> list[Crossing]:
        """Fences (other than `exclude`, typically those containing either end) that the segment
        meets, with the fractions of the segment where it first enters and last leaves them."""
        if not self._ids or not _finite(lon1, lat1, lon2, lat2) or (lon1, lat1) == (lon2, lat2):
            return []
        return self._passed_through(lon1, lat1, lon2, lat2, exclude)

    def _passed_through(self, lon1: float, lat1: float, lon2: float, lat2: float,
                        exclude: frozenset[str] | set[str]) -> list[Crossing]:
        min_lon, max_lon = min(lon1, lon2), max(lon1, lon2)
        min_lat, max_lat = min(lat1, lat2), max(lat1, lat2)
        ids, bounds = self._ids, self._bounds
        candidates = []
        for i in self._segment_candidates(lon1, lat1, lon2, lat2):
            if ids[i] in exclude:
                continue
            b = bounds[i]
            if b[0] <= max_lon and b[2] >= min_lon and b[1] <= max_lat and b[3] >= min_lat:
                candidates.append(i)
        if not candidates:
            return []
        line: LineString = shapely.linestrings(np.array([[lon1, lat1], [lon2, lat2]]))  # type: ignore[assignment]
        crossings = []
        for i in self._intersecting(line, candidates):
            fractions = self._fractions(i, line)
            if fractions is not None:
                crossings.append(Crossing(ids[i], fractions[0], fractions[1]))
        return crossings

    def _fractions(self, i: int, line: LineString) -> tuple[float, float] | None:
        try:
            part = shapely.intersection(self._geoms[i], line)
        except shapely.errors.GEOSException:
            return None
        coords = shapely.get_coordinates(part)
        if not len(coords):
            return None
        along = shapely.line_locate_point(line, shapely.points(coords), normalized=True)
        return float(np.min(along)), float(np.max(along))


@dataclass(frozen=True, slots=True)
class GeofenceEvent:
    vehicle_id: str
    kind: str  # geofence_enter, geofence_exit or overspeed (storage.events.EVENT_KINDS)
    event_time: float  # Unix seconds (UTC)
    geofence_id: str | None  # for overspeed: the fence whose limit was broken, None for the vehicle's own
    lon: float
    lat: float
    speed_kph: float | None = None
    limit_kph: float | None = None  # overspeed only: the limit that was exceeded

    def to_event(self, source: str = "local") -> Event:
        attributes: dict[str, Any] = {} if self.limit_kph is None else {"limit_kph": self.limit_kph}
        return Event(vehicle_id=self.vehicle_id, kind=self.kind, event_time=self.event_time,
                     geofence_id=self.geofence_id, lon=self.lon, lat=self.lat, speed_kph=self.speed_kph,
                     attributes=attributes, source=source)


@dataclass(slots=True)
class VehicleState:
    fix_time: float
    lon: float
    lat: float
    inside: frozenset[str] = field(default_factory=frozenset)
    overspeed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"fix_time": self.fix_time, "lon": self.lon, "lat": self.lat, "inside": sorted(self.inside),
                "overspeed": self.overspeed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VehicleState:
        inside = data.get("inside") or []
        return cls(float(data["fix_time"]), float(data["lon"]), float(data["lat"]),
                   frozenset(str(g) for g in inside), bool(data.get("overspeed", False)))


_KIND_ORDER = {GEOFENCE_EXIT: 0, GEOFENCE_ENTER: 1, OVERSPEED: 2}


def _lerp(a: float, b: float, f: float) -> float:
    return a + (b - a) * f


class EventDetector:
    """Per-vehicle geofence and overspeed state machine over a GeofenceIndex.

    Not safe for concurrent calls for the same vehicle; different vehicles may be processed
    from different threads."""

    def __init__(self, index: GeofenceIndex | None = None, *, overspeed_hysteresis_kph: float = 5.0,
                 enter_on_first_fix: bool = True) -> None:
        self.index = index if index is not None else GeofenceIndex.empty()
        self.overspeed_hysteresis_kph = overspeed_hysteresis_kph
        # A vehicle never seen before that appears inside a fence "enters" it at its first fix.
        self.enter_on_first_fix = enter_on_first_fix
        self._vehicles: dict[str, VehicleState] = {}

    def process(self, vehicle_id: str, fix_time: float, lon: float, lat: float, speed_kph: float | None = None,
                vehicle_speed_limit: float | None = None) -> list[GeofenceEvent]:
        """Events caused by one new fix, in time order; [] for a fix not newer than the last."""
        if not _finite(fix_time, lon, lat):
            return []
        prev = self._vehicles.get(vehicle_id)
        if prev is not None and fix_time <= prev.fix_time:
            return []
        index = self.index
        now_inside = index._containing(lon, lat) if len(index) else _EMPTY
        events: list[GeofenceEvent] = []
        if prev is None:
            for gid in (now_inside if self.enter_on_first_fix else _EMPTY):
                events.append(GeofenceEvent(vehicle_id, GEOFENCE_ENTER, fix_time, gid, lon, lat, speed_kph))
            overspeed = False
        else:
            # Fences removed or deactivated since the last fix are forgotten without an event.
            before = prev.inside if prev.inside <= index.ids else prev.inside & index.ids
            for gid in before - now_inside:
                events.append(GeofenceEvent(vehicle_id, GEOFENCE_EXIT, fix_time, gid, lon, lat, speed_kph))
            for gid in now_inside - before:
                events.append(GeofenceEvent(vehicle_id, GEOFENCE_ENTER, fix_time, gid, lon, lat, speed_kph))
            crossings = (index._passed_through(prev.lon, prev.lat, lon, lat, before | now_inside)
                         if len(index) and (prev.lon, prev.lat) != (lon, lat) else None)
            if crossings:
                t0, span = prev.fix_time, fix_time - prev.fix_time
                for c in crossings:
                    for kind, f in ((GEOFENCE_ENTER, c.enter), (GEOFENCE_EXIT, c.exit)):
                        events.append(GeofenceEvent(vehicle_id, kind, t0 + span * f, c.geofence_id,
                                                    _lerp(prev.lon, lon, f), _lerp(prev.lat, lat, f), speed_kph))
            overspeed = prev.overspeed
        if len(events) > 1:
            events.sort(key=lambda e: (e.event_time, _KIND_ORDER[e.kind], e.geofence_id or ""))

        if speed_kph is not None and math.isfinite(speed_kph):
            limit, limit_fence = self._limit(now_inside, vehicle_speed_limit)
            if limit is None:
                overspeed = False
            elif not overspeed and speed_kph > limit:
                overspeed = True
                events.append(GeofenceEvent(vehicle_id, OVERSPEED, fix_time, limit_fence, lon, lat, speed_kph, limit))
            elif overspeed and speed_kph <= limit - self.overspeed_hysteresis_kph:
                overspeed = False
        self._vehicles[vehicle_id] = VehicleState(fix_time, lon, lat, now_inside, overspeed)
        return events

    def _limit(self, inside: frozenset[str], vehicle_limit: float | None) -> tuple[float | None, str | None]:
        """The lowest limit that applies, and the fence that sets it (None: the vehicle's own)."""
        limit = vehicle_limit if vehicle_limit is not None and vehicle_limit > 0 else None
        fence: str | None = None
        for gid in sorted(inside):
            fence_limit = self.index.speed_limit(gid)
            if fence_limit is not None and (limit is None or fence_limit < limit):
                limit, fence = fence_limit, gid
        return limit, fence

    # -- persistence --------------------------------------------------------------------------

    def vehicles(self) -> list[str]:
        return list(self._vehicles)

    def state(self, vehicle_id: str) -> dict[str, Any] | None:
        """The vehicle's state as a JSON-ready dict, or None when it has no fix yet."""
        state = self._vehicles.get(vehicle_id)
        return None if state is None else state.to_json()

    def restore(self, vehicle_id: str, state: Mapping[str, Any] | None) -> None:
        """Reinstate what state() returned (None forgets the vehicle)."""
        if state is None:
            self._vehicles.pop(vehicle_id, None)
        else:
            self._vehicles[vehicle_id] = VehicleState.from_json(state)

    def forget(self, vehicle_id: str) -> None:
        self._vehicles.pop(vehicle_id, None)
