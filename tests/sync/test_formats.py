"""Output rules shared by the desktop and the server (sync/formats.py): GPX decimals and RFC 7946
ring orientation."""

from __future__ import annotations

import re

import pytest
import shapely
from shapely.geometry import shape

from sync.formats import gpx_decimal, rfc7946_geometry

# Clockwise exterior with a counterclockwise hole: what most pre-RFC data has.
CLOCKWISE = {"type": "Polygon", "coordinates": [
    [[0.0, 0.0], [0.0, 10.0], [10.0, 10.0], [10.0, 0.0], [0.0, 0.0]],
    [[2.0, 2.0], [4.0, 2.0], [4.0, 4.0], [2.0, 4.0], [2.0, 2.0]],
]}


@pytest.mark.parametrize(("value", "text"), [
    (2e-05, "0.00002"), (-1e-07, "-0.0000001"), (179.99999999, "179.99999999"), (0.0, "0.0"), (52.5, "52.5"),
    (1e21, "1000000000000000000000"),
])
def test_gpx_decimals_are_plain_and_exact(value: float, text: str) -> None:
    assert gpx_decimal(value) == text
    assert re.fullmatch(r"-?\d+(\.\d+)?", gpx_decimal(value))
    assert float(gpx_decimal(value)) == value


def _ccw(ring: list[list[float]]) -> bool:
    return bool(shapely.LinearRing(ring).is_ccw)


def test_polygons_are_rewound_exterior_counterclockwise_holes_clockwise() -> None:
    rewound = rfc7946_geometry(CLOCKWISE)
    assert rewound is not None
    exterior, hole = rewound["coordinates"]
    assert _ccw(exterior) and not _ccw(hole)
    assert shape(rewound).equals(shape(CLOCKWISE))  # the same area, only the order changed


def test_multipolygons_near_the_antimeridian_keep_their_coordinates() -> None:
    east = [[179.5, -1.0], [179.5, 1.0], [180.0, 1.0], [180.0, -1.0], [179.5, -1.0]]
    west = [[-180.0, -1.0], [-180.0, 1.0], [-179.5, 1.0], [-179.5, -1.0], [-180.0, -1.0]]
    geometry = {"type": "MultiPolygon", "coordinates": [[east], [west]]}
    rewound = rfc7946_geometry(geometry)
    assert rewound is not None
    assert all(_ccw(polygon[0]) for polygon in rewound["coordinates"])
    assert sorted(map(tuple, rewound["coordinates"][0][0])) == sorted(map(tuple, east))


def test_counterclockwise_input_and_other_types_come_back_unchanged() -> None:
    good = rfc7946_geometry(CLOCKWISE)
    assert rfc7946_geometry(good) == good
    line = {"type": "LineString", "coordinates": [[13.4, 52.5], [13.5, 52.6]]}
    assert rfc7946_geometry(line) is line
    broken = {"type": "Polygon", "coordinates": [[[0, 0], [1]]]}
    assert rfc7946_geometry(broken) is broken
    assert rfc7946_geometry(None) is None
