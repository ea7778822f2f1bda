"""Rules of the exchange formats that the desktop app and the server both write (GPX 1.1,
GeoJSON RFC 7946), kept in one place so their files agree.

The stored and synced geometry keeps what the user drew; every *output* goes through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.polygon import orient

__all__ = ["gpx_decimal", "rfc7946_geometry"]


def gpx_decimal(value: float) -> str:
    """xsd:decimal text for a float, as GPX 1.1's latitude, longitude and elevation require:
    exact, never in exponent notation (repr() gives '2e-05' within ~11 m of the equator)."""
    return format(Decimal(repr(float(value))), "f")


def _rewound(polygon: shapely.Polygon) -> shapely.Polygon:
    return orient(polygon, sign=1.0)  # exterior counterclockwise, holes clockwise


def rfc7946_geometry(geometry: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A GeoJSON geometry with RFC 7946 §3.1.6 ring orientation (exterior rings counterclockwise,
    holes clockwise). Other geometry types, and anything shapely cannot read (a record already
    flagged invalid), come back unchanged."""
    if not isinstance(geometry, Mapping) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        return geometry
    try:
        parsed = shape(dict(geometry))
    except Exception:  # malformed: flagged by validation, exported as it is
        return geometry
    rewound: shapely.Polygon | shapely.MultiPolygon
    if isinstance(parsed, shapely.Polygon):
        rewound = _rewound(parsed)
    elif isinstance(parsed, shapely.MultiPolygon):
        rewound = shapely.MultiPolygon([_rewound(part) for part in parsed.geoms])
    else:
        return geometry
    result = mapping(rewound)
    return {"type": result["type"], "coordinates": _lists(result["coordinates"])}


def _lists(value: Any) -> Any:
    """shapely's mapping() gives tuples; GeoJSON written by json has lists either way, but
    callers that compare or extend coordinates expect lists."""
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    return value
