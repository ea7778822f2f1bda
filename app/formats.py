"""Reading and writing GPX, GeoJSON and CSV: plain data in and out (no Qt, no storage), so import and
export run on a worker and the parsing is tested on its own.

- GeoJSON import: LineStrings become routes; Polygons, MultiPolygons and Points with `radius_m`
  become geofences; a feature whose `properties.collection` names vehicles or drivers becomes one
  (geometry ignored). Export: routes and geofences as features, vehicles at their latest fix.
- GPX import: every <rte> and <trk> becomes a route (its <name>, its points in order). Export:
  routes as <rte>, and a vehicle's track as <trk>.
- CSV: one collection per file, a header row of field names (the schema's), one record per row.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sync.formats import gpx_decimal, rfc7946_geometry
from sync.schema import FIELDS

GPX_NS = "http://www.topografix.com/GPX/1/1"
TIMESTAMP_FIELDS = ("created_at", "updated_at")


class FormatError(ValueError):
    """The file is not the format its name says, or holds nothing importable."""


@dataclass(frozen=True)
class ImportItem:
    collection: str
    fields: dict[str, Any]
    label: str  # where it came from, for error messages ("feature 3", "row 7", "<rte> 'Loop'")


def format_of(path: str) -> str:
    lower = path.lower()
    for suffix, kind in ((".geojson", "geojson"), (".json", "geojson"), (".gpx", "gpx"), (".csv", "csv")):
        if lower.endswith(suffix):
            return kind
    raise FormatError(f"cannot tell the format of {path}: use .geojson, .json, .gpx or .csv")


def _clean(properties: Mapping[str, Any], collection: str) -> dict[str, Any]:
    known = FIELDS[collection]
    return {k: v for k, v in properties.items()
            if k in known and k not in TIMESTAMP_FIELDS and k != "geometry" and v is not None}


# -- GeoJSON ---------------------------------------------------------------------------------------


def parse_geojson(text: str) -> list[ImportItem]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FormatError(f"not JSON: {exc}") from exc
    if isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    else:
        raise FormatError("expected a GeoJSON Feature or FeatureCollection")
    items = []
    for n, feature in enumerate(features, start=1):
        if not isinstance(feature, dict):
            continue
        properties = feature.get("properties") or {}
        geometry = feature.get("geometry")
        explicit = properties.get("collection")
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        if explicit in ("vehicles", "drivers") or explicit in ("routes", "geofences"):
            collection = str(explicit)
        elif kind == "LineString":
            collection = "routes"
        elif kind in ("Polygon", "MultiPolygon") or (kind == "Point" and "radius_m" in properties):
            collection = "geofences"
        else:
            continue  # a plain point (a vehicle position, a POI): nothing to import it as
        fields = _clean(properties, collection)
        if collection in ("routes", "geofences"):
            fields["geometry"] = geometry
        label = f"feature {n}" + (f" '{properties['name']}'" if properties.get("name") else "")
        items.append(ImportItem(collection, fields, label))
    if not items:
        raise FormatError("no routes, geofences, vehicles or drivers in this GeoJSON")
    return items


def write_geojson(routes: Iterable[Mapping[str, Any]], geofences: Iterable[Mapping[str, Any]],
                  vehicles: Iterable[tuple[Mapping[str, Any], float, float]] = ()) -> str:
    """Records as stored (with their "id"); vehicles with the lon/lat of their latest fix."""
    features = []
    for collection, records in (("routes", routes), ("geofences", geofences)):
        for record in records:
            properties = {k: v for k, v in record.items() if k != "geometry"}
            properties["collection"] = collection
            features.append({"type": "Feature", "geometry": rfc7946_geometry(record.get("geometry")),
                             "properties": properties})
    for record, lon, lat in vehicles:
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                         "properties": {**record, "collection": "vehicles"}})
    return json.dumps({"type": "FeatureCollection", "features": features}, indent=1)


# -- GPX -------------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _point(element: ET.Element) -> list[float]:
    return [round(float(element.attrib["lon"]), 7), round(float(element.attrib["lat"]), 7)]


def parse_gpx(text: str) -> list[ImportItem]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise FormatError(f"not GPX (XML): {exc}") from exc
    if _local(root.tag) != "gpx":
        raise FormatError("not a GPX file (the root element is not <gpx>)")
    items = []
    for kind, container, point in (("rte", None, "rtept"), ("trk", "trkseg", "trkpt")):
        for n, element in enumerate(_children(root, kind), start=1):
            names = _children(element, "name")
            name = (names[0].text or "").strip() if names else ""
            try:
                if container is None:
                    coords = [_point(p) for p in _children(element, point)]
                else:
                    coords = [_point(p) for seg in _children(element, container) for p in _children(seg, point)]
            except (KeyError, ValueError) as exc:
                raise FormatError(f"<{kind}> {n}: a point without a usable lat/lon ({exc})") from exc
            label = f"<{kind}> {n}" + (f" '{name}'" if name else "")
            items.append(ImportItem("routes", {"name": name or f"Imported {kind} {n}",
                                               "geometry": {"type": "LineString", "coordinates": coords}}, label))
    if not items:
        raise FormatError("no <rte> or <trk> in this GPX file")
    return items


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_gpx(routes: Iterable[Mapping[str, Any]], tracks: Iterable[tuple[str, list[tuple[float, float, float]]]] = ()
              ) -> str:
    """Routes as <rte>; tracks as (name, [(t, lon, lat), ...]) <trk>."""
    ET.register_namespace("", GPX_NS)
    root = ET.Element(f"{{{GPX_NS}}}gpx", {"version": "1.1", "creator": "WebHost Fleet"})
    for route in routes:
        geometry = route.get("geometry") or {}
        rte = ET.SubElement(root, f"{{{GPX_NS}}}rte")
        ET.SubElement(rte, f"{{{GPX_NS}}}name").text = str(route.get("name") or "")
        for lon, lat, *_ in geometry.get("coordinates") or []:
            ET.SubElement(rte, f"{{{GPX_NS}}}rtept", {"lat": gpx_decimal(lat), "lon": gpx_decimal(lon)})
    for name, points in tracks:
        trk = ET.SubElement(root, f"{{{GPX_NS}}}trk")
        ET.SubElement(trk, f"{{{GPX_NS}}}name").text = name
        seg = ET.SubElement(trk, f"{{{GPX_NS}}}trkseg")
        for t, lon, lat in points:
            pt = ET.SubElement(seg, f"{{{GPX_NS}}}trkpt", {"lat": gpx_decimal(lat), "lon": gpx_decimal(lon)})
            ET.SubElement(pt, f"{{{GPX_NS}}}time").text = _iso(t)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -- CSV -------------------------------------------------------------------------------------------


def csv_columns(collection: str) -> list[str]:
    return ["id", *[name for name in FIELDS[collection] if name != "geometry"]]


def _csv_value(kind: str, text: str) -> Any:
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return text  # kept as text: validation names the field and the problem
        return int(number) if number.is_integer() and "." not in text else number
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        return text
    if kind == "stops":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def parse_csv(text: str, collection: str) -> list[ImportItem]:
    specs = FIELDS[collection]
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if not reader.fieldnames or "name" not in reader.fieldnames:
        raise FormatError(f"a {collection} CSV needs a header row with at least a 'name' column")
    items = []
    for n, row in enumerate(reader, start=2):
        fields = {}
        for key, value in row.items():
            if key in specs and key not in TIMESTAMP_FIELDS and value not in (None, ""):
                fields[key] = _csv_value(specs[key].kind, value)
        items.append(ImportItem(collection, fields, f"row {n}" + (f" '{row.get('name')}'" if row.get("name") else "")))
    return items


def write_csv(collection: str, records: Iterable[Mapping[str, Any]]) -> str:
    columns = csv_columns(collection)
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in record.items()})
    return out.getvalue()
