"""Record validation shared by desktop clients and the server, so every replica flags the same records.

Validation reports problems and never rejects: a merged CRDT update is kept even when it breaks a rule.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from storage import geometry
from sync.schema import COLLECTIONS, FIELDS, NAME_MAX_LENGTH, FieldSpec

MAX_VERTICES = 10_000

# Deliberately loose: the point is catching typos such as a missing "@", not RFC 5322 conformance.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_REPR_LIMIT = 60
RECORD_FIELD = "(record)"

Position = tuple[float, float]


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str


class UnknownCollection(ValueError):
    def __init__(self, collection: str) -> None:
        super().__init__(f"unknown collection {collection!r}; expected one of {', '.join(COLLECTIONS)}")
        self.collection = collection


class ValidationError(ValueError):
    def __init__(self, collection: str, problems: Sequence[Problem]) -> None:
        # Passing the constructor arguments to ValueError keeps the exception picklable.
        super().__init__(collection, tuple(problems))
        self.collection = collection
        self.problems: list[Problem] = list(problems)

    def __str__(self) -> str:
        return "; ".join(f"{self.collection}.{p.field}: {p.reason}" for p in self.problems)

    @property
    def field(self) -> str:
        return self.problems[0].field if self.problems else ""

    @property
    def reason(self) -> str:
        return self.problems[0].reason if self.problems else ""


class GeometryError(ValueError):
    """A GeoJSON geometry that cannot be used; ``field`` and ``reason`` match a ``Problem``."""

    def __init__(self, reason: str, field: str = "geometry") -> None:
        super().__init__(reason, field)
        self.reason = reason
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def problems(collection: str, record: Mapping[str, object]) -> list[Problem]:
    """Every rule the record breaks, in field order; empty when the record is valid."""
    if collection not in COLLECTIONS:
        raise UnknownCollection(collection)
    if _QUICK[collection](record) is not None:
        return []
    return _detailed_problems(collection, record)


def checked(collection: str, record: Mapping[str, object]) -> tuple[list[Problem], BaseGeometry | None]:
    """problems(), plus the record's geometry as shapely read it when the record is valid (None
    otherwise, or when it has no geometry), so a caller that stores the geometry need not read
    the GeoJSON a second time."""
    if collection not in COLLECTIONS:
        raise UnknownCollection(collection)
    quick = _QUICK[collection](record)
    if quick is not None:
        return [], quick[0]
    return _detailed_problems(collection, record), None


def checked_many(
    collection: str, records: Sequence[Mapping[str, object]]
) -> list[tuple[list[Problem], BaseGeometry | None]]:
    """checked() for each record, with the same answers. The geometries of the records that pass
    the quick field checks are read together with shapely's array functions: an initial sync
    reads a thousand polygons of a hundred vertices, and one at a time that costs more than
    applying the whole update."""
    if len(records) < BULK_GEOMETRY_MIN:
        return [checked(collection, record) for record in records]
    if collection not in COLLECTIONS:
        raise UnknownCollection(collection)
    quick = _QUICK[collection]
    prechecked = [quick.precheck(record) for record in records]
    pending = [index for index, found in enumerate(prechecked) if type(found) is tuple]
    read = dict(zip(pending, _fast_geometries([prechecked[i] for i in pending]), strict=True))  # type: ignore[misc]
    results: list[tuple[list[Problem], BaseGeometry | None]] = []
    for index, (record, found) in enumerate(zip(records, prechecked, strict=True)):
        if found is True:
            results.append(([], None))
            continue
        geom = read.get(index)
        if geom is not None:
            results.append(([], geom))
        else:
            results.append((_detailed_problems(collection, record), None))
    return results


def _detailed_problems(collection: str, record: Mapping[str, object]) -> list[Problem]:
    # The signature promises a Mapping, but records arrive from other replicas, so check anyway.
    if not isinstance(record, Mapping):
        return [Problem(RECORD_FIELD, f"must be an object (got {_type_name(record)})")]

    specs = FIELDS[collection]
    found: list[Problem] = []
    for spec in specs.values():
        value = record.get(spec.name)
        if value is None:
            if spec.required:
                found.append(Problem(spec.name, "is required"))
            continue
        found.extend(Problem(spec.name, reason) for reason in _field_reasons(spec, value))

    for key, value in record.items():
        if not isinstance(key, str):
            found.append(Problem(_short_repr(key), "field names must be strings"))
        elif key not in specs:
            reason = _json_reason(value)
            if reason is not None:
                found.append(Problem(key, reason))

    if collection == "geofences":
        geometry = record.get("geometry")
        if (
            isinstance(geometry, Mapping)
            and geometry.get("type") == "Point"
            and record.get("radius_m") is None
        ):
            found.append(Problem("radius_m", "is required when geometry is a Point (a circle)"))
    return found


def validate_record(collection: str, record: Mapping[str, object]) -> None:
    """Raise ValidationError listing every problem, or return when the record is valid."""
    found = problems(collection, record)
    if found:
        raise ValidationError(collection, found)


def geometry_from_geojson(value: object, allowed: tuple[str, ...]) -> BaseGeometry:
    """A valid shapely geometry from a GeoJSON geometry object, or GeometryError saying why not."""
    geom, reason = _read_geometry(value, allowed)
    if geom is None:
        raise GeometryError(reason or "could not be read")
    return geom


def geometry_problems(value: object, allowed: tuple[str, ...]) -> list[str]:
    """The reasons a GeoJSON geometry is unusable, empty when it is fine."""
    _, reason = _read_geometry(value, allowed)
    return [] if reason is None else [reason]


def circle_polygon(lon: float, lat: float, radius_m: float, segments: int = 64) -> Polygon:
    """A polygon approximating a circle on the ground (local equirectangular; fine below ~50 km)."""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ValueError(f"centre must be finite (got {lon!r}, {lat!r})")
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise ValueError(f"radius_m must be a positive number (got {radius_m!r})")
    if segments < 3:
        raise ValueError(f"segments must be at least 3 (got {segments})")
    return geometry.circle_polygon(lon, lat, radius_m, segments)


def _field_reasons(spec: FieldSpec, value: object) -> list[str]:
    if spec.kind == "string":
        return _string_reasons(spec, value)
    if spec.kind == "enum":
        choices = spec.choices or ()
        if isinstance(value, str) and value in choices:
            return []
        return [f"must be one of {', '.join(choices)} (got {_short_repr(value)})"]
    if spec.kind == "number":
        return _number_reasons(spec, value)
    if spec.kind == "bool":
        return [] if isinstance(value, bool) else [f"must be true or false (got {_short_repr(value)})"]
    if spec.kind == "email":
        if isinstance(value, str) and _EMAIL.match(value):
            return []
        return [f"must be an email address like name@example.com (got {_short_repr(value)})"]
    if spec.kind == "date":
        if isinstance(value, str) and _parses_as_date(value):
            return []
        return [f"must be an ISO date like 2030-12-31 (got {_short_repr(value)})"]
    if spec.kind == "datetime":
        if isinstance(value, str) and _parses_as_datetime(value):
            return []
        return [f"must be an ISO 8601 datetime like 2030-12-31T08:00:00Z (got {_short_repr(value)})"]
    if spec.kind == "ref":
        if isinstance(value, str) and value.strip():
            return []
        return [f"must be a {spec.references or 'record'} id or null (got {_short_repr(value)})"]
    if spec.kind == "geometry":
        return geometry_problems(value, spec.geometry_types or ())
    if spec.kind == "stops":
        return _stops_reasons(value)
    raise AssertionError(f"schema kind {spec.kind!r} has no validator")


def _string_reasons(spec: FieldSpec, value: object) -> list[str]:
    if not isinstance(value, str):
        return [f"must be a string (got {_type_name(value)})"]
    if spec.required and not value.strip():
        return ["is required"]
    if spec.max_length is not None and len(value) > spec.max_length:
        return [f"must be at most {spec.max_length} characters (got {len(value)})"]
    return []


def _number_reasons(spec: FieldSpec, value: object) -> list[str]:
    # bool is an int subclass, but true as a speed limit is a bug, not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"must be a number (got {_type_name(value)})"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"must be a finite number (got {value!r})"]
    low, high = spec.exclusive_minimum, spec.maximum
    if (low is not None and value <= low) or (high is not None and value > high):
        if low is not None and high is not None:
            return [f"must be greater than {_num(low)} and at most {_num(high)} (got {_num(value)})"]
        if low is not None:
            return [f"must be greater than {_num(low)} (got {_num(value)})"]
        return [f"must be at most {_num(high or 0)} (got {_num(value)})"]
    return []


def _stops_reasons(value: object) -> list[str]:
    if not isinstance(value, list):
        return [f"must be a list of {{name, lon, lat}} objects (got {_type_name(value)})"]
    reasons: list[str] = []
    for index, stop in enumerate(value):
        where = f"stop {index}"
        if not isinstance(stop, Mapping):
            reasons.append(f"{where} must be an object with name, lon and lat (got {_type_name(stop)})")
            continue
        name = stop.get("name")
        if not isinstance(name, str) or not name.strip():
            reasons.append(f"{where} name must be a non-empty string (got {_short_repr(name)})")
        elif len(name) > NAME_MAX_LENGTH:
            reasons.append(f"{where} name must be at most {NAME_MAX_LENGTH} characters (got {len(name)})")
        reason = _lon_lat_reason(stop.get("lon"), stop.get("lat"))
        if reason is not None:
            reasons.append(f"{where} {reason}")
        for key, extra in stop.items():
            if key in ("name", "lon", "lat"):
                continue
            if not isinstance(key, str):
                reasons.append(f"{where} field names must be strings")
                continue
            extra_reason = _json_reason(extra)
            if extra_reason is not None:
                reasons.append(f"{where} {key} {extra_reason}")
    return reasons


def _lon_lat_reason(lon: object, lat: object) -> str | None:
    return _coordinate_reason("lon", lon, 180) or _coordinate_reason("lat", lat, 90)


def _coordinate_reason(label: str, number: object, limit: int) -> str | None:
    if isinstance(number, bool) or not isinstance(number, int | float):
        return f"{label} must be a number (got {_short_repr(number)})"
    if isinstance(number, float) and not math.isfinite(number):
        return f"{label} must be a finite number (got {number!r})"
    if not -limit <= number <= limit:
        return f"{label} must be between -{limit} and {limit} (got {_num(number)})"
    return None


class _Malformed(Exception):
    """Internal: a GeoJSON structure problem, caught and turned into a reason."""


class _Reader:
    """Walks GeoJSON coordinates, checking shape, ranges and the vertex budget as it goes."""

    def __init__(self) -> None:
        self.vertices = 0

    def position(self, value: object, where: str) -> Position:
        if not isinstance(value, list) or len(value) not in (2, 3):
            raise _Malformed(f"{where} must be a [lon, lat] position (got {_short_repr(value)})")
        self.vertices += 1
        # Checked per vertex so a huge payload is abandoned early instead of being walked in full.
        if self.vertices > MAX_VERTICES:
            raise _Malformed(f"has more than {MAX_VERTICES} vertices")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise _Malformed(f"{where} must contain numbers (got {_short_repr(value)})")
        reason = _lon_lat_reason(value[0], value[1])
        if reason is not None:
            raise _Malformed(f"{where} {reason}")
        return (float(value[0]), float(value[1]))

    def positions(self, value: object, where: str, minimum: int) -> list[Position]:
        if not isinstance(value, list):
            raise _Malformed(f"{where} must be a list of positions (got {_type_name(value)})")
        if len(value) < minimum:
            raise _Malformed(f"{where} must have at least {minimum} positions (got {len(value)})")
        return [self.position(item, f"{where} position {i}") for i, item in enumerate(value)]

    def polygon(self, value: object, where: str) -> Polygon:
        if not isinstance(value, list) or not value:
            raise _Malformed(f"{where} must be a non-empty list of linear rings (got {_short_repr(value)})")
        rings: list[list[Position]] = []
        for index, ring_value in enumerate(value):
            ring_where = f"{where} ring {index}"
            ring = self.positions(ring_value, ring_where, minimum=4)
            # RFC 7946 requires closed rings; shapely would silently close them, hiding a broken writer.
            if ring[0] != ring[-1]:
                raise _Malformed(f"{ring_where} must be closed (first and last positions equal)")
            rings.append(ring)
        return Polygon(rings[0], rings[1:])


def _read_geometry(value: object, allowed: tuple[str, ...]) -> tuple[BaseGeometry | None, str | None]:
    expected = " or ".join(allowed) if allowed else "no geometry"
    if not isinstance(value, Mapping):
        return None, f"must be a GeoJSON {expected} object (got {_type_name(value)})"
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        return None, f"must be a GeoJSON {expected} (got type {_short_repr(kind)})"
    if "coordinates" not in value:
        return None, f"{kind} has no coordinates"
    coordinates = value["coordinates"]
    fast = _fast_geometry(kind, coordinates)
    if fast is not None:
        return fast, None
    reader = _Reader()
    geom: BaseGeometry
    try:
        if kind == "Point":
            lon, lat = reader.position(coordinates, "coordinates")
            geom = Point(lon, lat)
        elif kind == "LineString":
            geom = LineString(reader.positions(coordinates, "coordinates", minimum=2))
        elif kind == "Polygon":
            geom = reader.polygon(coordinates, "coordinates")
        elif kind == "MultiPolygon":
            if not isinstance(coordinates, list) or not coordinates:
                return (
                    None,
                    f"coordinates must be a non-empty list of polygons (got {_short_repr(coordinates)})",
                )
            geom = MultiPolygon([reader.polygon(part, f"polygon {i}") for i, part in enumerate(coordinates)])
        else:
            return None, f"GeoJSON type {kind} is not supported here"
    except _Malformed as exc:
        return None, str(exc)
    except (shapely.errors.GEOSException, ValueError, TypeError) as exc:
        # Structure was checked above, so this is a GEOS corner case; report it rather than crash a merge.
        return None, f"could not be read: {exc}"

    if isinstance(geom, Polygon | MultiPolygon) and not geom.is_valid:
        label = "polygon" if isinstance(geom, Polygon) else "multipolygon"
        return None, f"{label} is invalid: {explain_validity(geom)}"
    return geom, None


_LIST_TYPE = {list}
_POSITION_LENGTHS = {2, 3}
_NUMBER_TYPES = {float, int}
_FLAT = {2}
_LON_LAT_LIMITS = np.array([180.0, 90.0])


def _ring_array(value: object, minimum: int, closed: bool) -> np.ndarray[Any, Any] | None:
    """A ring or line as an (n, 2) float array when it is well-formed and in range, else None."""
    if type(value) is not list or len(value) < minimum:
        return None
    # Type checks in C loops (a polygon has hundreds of positions). numpy would quietly turn
    # booleans and numeric strings into floats; GeoJSON forbids both.
    if set(map(type, value)) != _LIST_TYPE:
        return None
    lengths = set(map(len, value))
    if not lengths <= _POSITION_LENGTHS:
        return None
    if not set(map(type, itertools.chain.from_iterable(value))) <= _NUMBER_TYPES:
        return None
    if lengths == _FLAT:
        array = np.fromiter(itertools.chain.from_iterable(value), np.float64, 2 * len(value)).reshape(-1, 2)
    else:
        array = np.asarray(value, dtype=np.float64)[:, :2]
    # One comparison checks both ranges, and NaN or infinity fail it too.
    if not (np.abs(array) <= _LON_LAT_LIMITS).all():
        return None
    if closed and not (array[0] == array[-1]).all():
        return None
    return array


def _polygon_arrays(value: object) -> list[np.ndarray[Any, Any]] | None:
    if not isinstance(value, list) or not value:
        return None
    rings = [_ring_array(ring, 4, closed=True) for ring in value]
    return None if any(r is None for r in rings) else rings  # type: ignore[return-value]


def _fast_geometry(kind: str, coordinates: object) -> BaseGeometry | None:
    """The common case in one vectorised pass: a geometry when every rule holds, else None so the
    detailed reader can name the problem. Initial sync validates thousands of polygons at once."""
    geom: BaseGeometry
    try:
        if kind == "Point":
            if (type(coordinates) is not list or not 2 <= len(coordinates) <= 3
                    or not set(map(type, coordinates)) <= _NUMBER_TYPES):
                return None
            lon, lat = coordinates[0], coordinates[1]
            if _lon_lat_reason(lon, lat) is not None:
                return None
            return Point(float(lon), float(lat))
        if kind == "LineString":
            line = _ring_array(coordinates, 2, closed=False)
            if line is None or len(line) > MAX_VERTICES:
                return None
            return LineString(line)
        if kind == "Polygon":
            rings = _polygon_arrays(coordinates)
            if rings is None or sum(len(r) for r in rings) > MAX_VERTICES:
                return None
            geom = Polygon(rings[0], rings[1:])
        elif kind == "MultiPolygon":
            if not isinstance(coordinates, list) or not coordinates:
                return None
            polygons = [_polygon_arrays(part) for part in coordinates]
            if any(p is None for p in polygons):
                return None
            if sum(len(r) for p in polygons for r in p or []) > MAX_VERTICES:
                return None
            geom = MultiPolygon([Polygon(p[0], p[1:]) for p in polygons if p is not None])
        else:
            return None
    except (ValueError, TypeError, OverflowError, shapely.errors.GEOSException):
        return None
    return geom if geom.is_valid else None


# Below this many geometries of one type, numpy's fixed costs outweigh what the bulk read saves.
BULK_GEOMETRY_MIN = 16


def _fast_geometries(items: Sequence[tuple[str, object]]) -> list[BaseGeometry | None]:
    """_fast_geometry(kind, coordinates) for each item, with the same answers; polygons and lines
    are checked and built together. A batch whose structure the bulk checks cannot vouch for
    (3D positions, say) is read one geometry at a time."""
    result: list[BaseGeometry | None] = [None] * len(items)
    by_kind: dict[str, list[int]] = {}
    for index, (kind, _) in enumerate(items):
        by_kind.setdefault(kind, []).append(index)
    for kind, indices in by_kind.items():
        coordinates = [items[index][1] for index in indices]
        bulk = _BULK_READERS.get(kind)
        geoms = bulk(coordinates) if bulk is not None and len(indices) >= BULK_GEOMETRY_MIN else None
        if geoms is None:
            geoms = [_fast_geometry(kind, value) for value in coordinates]
        for index, geom in zip(indices, geoms, strict=True):
            result[index] = geom
    return result


def _flat_positions(rings: list[Any]) -> np.ndarray[Any, Any] | None:
    """All positions of the given lists of positions as one (n, 2) array, or None unless every
    position is a list of exactly two numbers (the checks _ring_array makes, for all at once)."""
    positions = list(itertools.chain.from_iterable(rings))
    if set(map(type, positions)) != _LIST_TYPE or set(map(len, positions)) != _FLAT:
        return None
    if not set(map(type, itertools.chain.from_iterable(positions))) <= _NUMBER_TYPES:
        return None
    return np.fromiter(itertools.chain.from_iterable(positions), np.float64, 2 * len(positions)).reshape(-1, 2)


def _offsets(lengths: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _lengths(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """len() of each value, which must all be non-empty lists (else None)."""
    if set(map(type, values)) != _LIST_TYPE:
        return None
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    return lengths if lengths.min() > 0 else None


def _bulk_polygons(coordinates: list[object]) -> list[BaseGeometry | None] | None:
    """_fast_geometry("Polygon", c) for each c, or None to have them read one by one."""
    try:
        rings_per_polygon = _lengths(coordinates)
        if rings_per_polygon is None:
            return None
        rings: list[Any] = list(itertools.chain.from_iterable(coordinates))  # type: ignore[arg-type]
        ring_lengths = _lengths(rings)
        if ring_lengths is None:
            return None
        array = _flat_positions(rings)
    except OverflowError:  # an integer beyond float range
        return None
    if array is None:
        return None
    ring_offsets = _offsets(ring_lengths)
    polygon_offsets = _offsets(rings_per_polygon)
    in_range = (np.abs(array) <= _LON_LAT_LIMITS).all(axis=1)  # NaN and infinity fail too
    closed = (array[ring_offsets[:-1]] == array[ring_offsets[1:] - 1]).all(axis=1)
    ring_ok = np.logical_and.reduceat(in_range, ring_offsets[:-1]) & closed & (ring_lengths >= 4)
    polygon_ok = np.logical_and.reduceat(ring_ok, polygon_offsets[:-1])
    polygon_ok &= np.add.reduceat(ring_lengths, polygon_offsets[:-1]) <= MAX_VERTICES
    good = np.flatnonzero(polygon_ok)
    if len(good) < len(coordinates):  # build only the polygons that passed
        ring_mask = np.repeat(polygon_ok, rings_per_polygon)
        array = array[np.repeat(ring_mask, ring_lengths)]
        ring_offsets = _offsets(ring_lengths[ring_mask])
        polygon_offsets = _offsets(rings_per_polygon[polygon_ok])
    result: list[BaseGeometry | None] = [None] * len(coordinates)
    if not len(good):
        return result
    try:
        polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, array, (ring_offsets, polygon_offsets))
        valid = shapely.is_valid(polygons)
    except (ValueError, TypeError, shapely.errors.GEOSException):
        return None
    for index, polygon, is_valid in zip(good.tolist(), polygons, valid.tolist(), strict=True):
        if is_valid:
            result[index] = polygon
    return result


def _bulk_lines(coordinates: list[object]) -> list[BaseGeometry | None] | None:
    """_fast_geometry("LineString", c) for each c, or None to have them read one by one."""
    try:
        lengths = _lengths(coordinates)
        if lengths is None:
            return None
        array = _flat_positions(coordinates)
    except OverflowError:
        return None
    if array is None:
        return None
    offsets = _offsets(lengths)
    in_range = (np.abs(array) <= _LON_LAT_LIMITS).all(axis=1)
    line_ok = np.logical_and.reduceat(in_range, offsets[:-1]) & (lengths >= 2) & (lengths <= MAX_VERTICES)
    good = np.flatnonzero(line_ok)
    if len(good) < len(coordinates):
        array = array[np.repeat(line_ok, lengths)]
        offsets = _offsets(lengths[line_ok])
    result: list[BaseGeometry | None] = [None] * len(coordinates)
    if not len(good):
        return result
    try:
        lines = shapely.from_ragged_array(shapely.GeometryType.LINESTRING, array, (offsets,))
    except (ValueError, TypeError, shapely.errors.GEOSException):
        return None
    for index, line in zip(good.tolist(), lines, strict=True):
        result[index] = line
    return result


_BULK_READERS: dict[str, Callable[[list[object]], list[BaseGeometry | None] | None]] = {
    "Polygon": _bulk_polygons,
    "LineString": _bulk_lines,
}


# -- the quick path ---------------------------------------------------------------------------
#
# Most records are valid, and the detailed checks above spend most of their time building
# reasons nobody reads. A quick check per field says only "certainly fine" or "look closer";
# on "look closer" the detailed checks run and name the problem, so a quick check may be
# stricter than the rules (exact types, say) but never looser.

_QuickCheck = Callable[[Any], bool]
_JSON_SCALARS = frozenset({str, int, bool, type(None)})


def _always(value: object) -> bool:
    return True


def _quick_check(spec: FieldSpec) -> _QuickCheck:
    kind = spec.kind
    if kind == "string":
        required, max_length = spec.required, spec.max_length
        return lambda v: (type(v) is str and (not required or bool(v.strip()))
                          and (max_length is None or len(v) <= max_length))
    if kind == "enum":
        choices = frozenset(spec.choices or ())
        return lambda v: type(v) is str and v in choices
    if kind == "number":
        low, high = spec.exclusive_minimum, spec.maximum

        def number(v: Any) -> bool:
            kind_of = type(v)
            if kind_of is not int and (kind_of is not float or not math.isfinite(v)):
                return False
            return (low is None or v > low) and (high is None or v <= high)

        return number
    if kind == "bool":
        return lambda v: type(v) is bool
    if kind == "email":
        return lambda v: type(v) is str and _EMAIL.match(v) is not None
    if kind == "date":
        return lambda v: type(v) is str and _parses_as_date(v)
    if kind == "datetime":
        return lambda v: type(v) is str and _parses_as_datetime(v)
    if kind == "ref":
        return lambda v: type(v) is str and bool(v.strip())
    if kind == "stops":
        return lambda v: not _stops_reasons(v)
    if kind == "geometry":
        return _always  # read once, after the field loop, so the geometry can be handed back
    raise AssertionError(f"schema kind {kind!r} has no quick check")


class _QuickValidator:
    """For one collection: (geometry or None,) when the record is certainly valid, else None."""

    def __init__(self, collection: str) -> None:
        specs = FIELDS[collection]
        self.checks = {name: _quick_check(spec) for name, spec in specs.items()}
        self.required = tuple(name for name, spec in specs.items() if spec.required)
        geometry_spec = next((spec for spec in specs.values() if spec.kind == "geometry"), None)
        self.geometry_field = geometry_spec.name if geometry_spec else None
        self.geometry_types = (geometry_spec.geometry_types or ()) if geometry_spec else ()
        self.circles = collection == "geofences"

    def __call__(self, record: object) -> tuple[BaseGeometry | None] | None:
        found = self.precheck(record)
        if found is False:
            return None
        if found is True:
            return (None,)
        geom = _fast_geometry(*found)
        return None if geom is None else (geom,)

    def precheck(self, record: object) -> tuple[str, object] | bool:
        """Everything but reading the geometry: False to look closer, True when the record is
        certainly valid and has no geometry, else (GeoJSON type, coordinates) still to be read."""
        if type(record) is not dict:
            return False
        checks = self.checks
        for key, value in record.items():
            check = checks.get(key)
            if check is None:
                if type(key) is not str:
                    return False
                if type(value) in _JSON_SCALARS or _json_reason(value) is None:
                    continue
                return False
            if value is not None and not check(value):
                return False
        for name in self.required:
            if record.get(name) is None:
                return False
        if self.geometry_field is None:
            return True
        value = record.get(self.geometry_field)
        if value is None:
            return True
        if type(value) is not dict:
            return False
        kind = value.get("type")
        if kind not in self.geometry_types or "coordinates" not in value:
            return False
        if self.circles and kind == "Point" and record.get("radius_m") is None:
            return False
        return kind, value["coordinates"]


_QUICK: dict[str, _QuickValidator] = {collection: _QuickValidator(collection) for collection in COLLECTIONS}


def _json_reason(value: object) -> str | None:
    """Why a value is not a JSON value, or None; iterative so deep nesting cannot blow the stack."""
    stack: list[object] = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | int | str):
            continue
        if isinstance(item, list | Mapping):
            # Reached twice means shared (already checked) or a cycle; skipping it stops an endless walk.
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"must be a JSON value (got {item!r})"
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, Mapping):
            for key, nested in item.items():
                if not isinstance(key, str):
                    return f"must be a JSON value (object key {_short_repr(key)} is not a string)"
                stack.append(nested)
        else:
            return f"must be a JSON value (got {_type_name(item)})"
    return None


@functools.lru_cache(maxsize=16_384)
def _parses_as_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=16_384)
def _parses_as_datetime(text: str) -> bool:
    # A bare date also parses as a datetime, but a timestamp without a time is almost always a bug.
    if _parses_as_date(text):
        return False
    candidate = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        datetime.fromisoformat(candidate)
    except ValueError:
        return False
    return True


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:
        # Python refuses to print ints beyond sys.get_int_max_str_digits(); such a value is still a problem.
        return f"<{_type_name(value)}>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _num(value: float) -> str:
    if isinstance(value, int):
        return _short_repr(value)
    return str(int(value)) if value.is_integer() else repr(value)
