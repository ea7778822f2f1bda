"""Position exports (JSON, GeoJSON, GPX 1.1, CSV) and the GPX reader used by the importer.

GPX 1.1 has no speed or course on a point (1.0 had), so both go in the Garmin
TrackPointExtension v2 (`gpxtpx:speed` in m/s, `gpxtpx:course` in degrees), which most tools
read; the accuracy in metres goes in this project's own extension namespace. The reader takes
those back, a GPX 1.0 `<speed>`/`<course>`, and any extension element named speed/course.
"""

from __future__ import annotations

import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import orjson

from server_stub.positions import Fix, iso
from sync.formats import gpx_decimal

GPX_NS = "http://www.topografix.com/GPX/1/1"
GPX10_NS = "http://www.topografix.com/GPX/1/0"
TPX_NS = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
TPX_XSD = "https://www8.garmin.com/xmlschemas/TrackPointExtensionv2.xsd"
WH_NS = "urn:webhost-fleet:gpx:1"
KNOT_KPH = 1.852
MPS_KPH = 3.6
CSV_COLUMNS = ("vehicle_id", "device_id", "fix_time", "lat", "lon", "speed_kph", "course", "altitude", "accuracy",
               "attributes")


# Characters XML 1.0 cannot carry at all, even escaped (most C0 controls, lone surrogates, U+FFFE/F).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    """Character data for the document: escaped, and without what would make it not well-formed
    (a vehicle name may hold any control character the value policy lets through)."""
    return escape(_NOT_XML.sub("\ufffd", text))


class GpxError(ValueError):
    """The upload is not a GPX document this server can read."""


def fix_json(fix: Fix) -> dict[str, Any]:
    """A stored fix in the ingest wire format (so an export can be posted back as-is)."""
    return {"vehicle_id": fix.vehicle_id, "device_id": fix.device_id, "fix_time": iso(fix.t), "lat": fix.lat,
            "lon": fix.lon, "speed_kph": fix.speed_kph, "course": fix.course, "altitude": fix.altitude,
            "accuracy": fix.accuracy, "attributes": fix.attributes or {}}


def to_json(fixes: Iterable[Fix], meta: dict[str, Any]) -> bytes:
    return orjson.dumps({"data": [fix_json(f) for f in fixes], "meta": meta})


def to_geojson(fixes: Iterable[Fix]) -> bytes:
    features = []
    for fix in fixes:
        properties = fix_json(fix)
        del properties["lat"], properties["lon"]
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [fix.lon, fix.lat]},
                         "properties": properties})
    return orjson.dumps({"type": "FeatureCollection", "features": features})


def to_csv(fixes: Iterable[Fix]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for fix in fixes:
        writer.writerow([fix.vehicle_id, fix.device_id or "", iso(fix.t), repr(fix.lat), repr(fix.lon),
                         _plain(fix.speed_kph), _plain(fix.course), _plain(fix.altitude), _plain(fix.accuracy),
                         orjson.dumps(fix.attributes).decode() if fix.attributes else ""])
    return out.getvalue()


def _plain(value: float | None) -> str:
    return "" if value is None else repr(value)


def to_gpx(fixes: Iterable[Fix], *, name: str, created: float, creator: str = "WebHost Fleet") -> str:
    """One GPX 1.1 track (one trkseg) of the fixes, valid against the GPX 1.1 schema."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<gpx version="1.1" creator={quoteattr(creator)} xmlns="{GPX_NS}" xmlns:gpxtpx="{TPX_NS}" '
        f'xmlns:wh="{WH_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{GPX_NS} http://www.topografix.com/GPX/1/1/gpx.xsd {TPX_NS} {TPX_XSD}">',
        f"<metadata><name>{_xml_text(name)}</name><time>{iso(created)}</time></metadata>",
        f"<trk><name>{_xml_text(name)}</name><trkseg>",
    ]
    for fix in fixes:
        point = [f'<trkpt lat="{gpx_decimal(fix.lat)}" lon="{gpx_decimal(fix.lon)}">']
        if fix.altitude is not None:
            point.append(f"<ele>{gpx_decimal(fix.altitude)}</ele>")
        point.append(f"<time>{iso(fix.t)}</time>")
        tpx = []
        if fix.speed_kph is not None:
            tpx.append(f"<gpxtpx:speed>{gpx_decimal(fix.speed_kph / MPS_KPH)}</gpxtpx:speed>")
        if fix.course is not None:
            tpx.append(f"<gpxtpx:course>{gpx_decimal(fix.course % 360.0)}</gpxtpx:course>")
        extensions = []
        if tpx:
            extensions.append("<gpxtpx:TrackPointExtension>" + "".join(tpx) + "</gpxtpx:TrackPointExtension>")
        if fix.accuracy is not None:
            extensions.append(f"<wh:accuracy>{gpx_decimal(fix.accuracy)}</wh:accuracy>")
        if extensions:
            point.append("<extensions>" + "".join(extensions) + "</extensions>")
        point.append("</trkpt>")
        lines.append("".join(point))
    lines.append("</trkseg></trk>")
    lines.append("</gpx>")
    return "\n".join(lines) + "\n"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _float_text(element: ET.Element | None) -> float | None:
    if element is None or element.text is None:
        return None
    try:
        value = float(element.text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_gpx(data: bytes) -> list[dict[str, Any]]:
    """Every track point of a GPX 1.0/1.1 document, in the ingest wire format (without vehicle)."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        # No DTDs: entity expansion is how XML bombs work, and GPX never needs one.
        raise GpxError("GPX with a DOCTYPE or entity declarations is not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise GpxError(f"not well-formed XML: {exc}") from None
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if _local(root.tag) != "gpx" or namespace not in (GPX_NS, GPX10_NS):
        raise GpxError(f"the root element must be <gpx> in {GPX_NS} (or GPX 1.0)")
    ns = {"g": namespace}
    fixes: list[dict[str, Any]] = []
    for point in root.iterfind("g:trk/g:trkseg/g:trkpt", ns):
        fix: dict[str, Any] = {"lat": _attribute_number(point, "lat"), "lon": _attribute_number(point, "lon")}
        time_element = point.find("g:time", ns)
        fix["fix_time"] = time_element.text.strip() if time_element is not None and time_element.text else None
        altitude = _float_text(point.find("g:ele", ns))
        if altitude is not None:
            fix["altitude"] = altitude
        speed_mps = _float_text(point.find("g:speed", ns))  # GPX 1.0
        course = _float_text(point.find("g:course", ns))
        accuracy = None
        extensions = point.find("g:extensions", ns)
        if extensions is not None:
            for element in extensions.iter():
                local = _local(element.tag)
                if local == "speed" and speed_mps is None:
                    speed_mps = _float_text(element)
                elif local == "course" and course is None:
                    course = _float_text(element)
                elif local == "accuracy" and accuracy is None:
                    accuracy = _float_text(element)
        if speed_mps is not None:
            fix["speed_kph"] = speed_mps * MPS_KPH
        if course is not None:
            fix["course"] = course
        if accuracy is not None:
            fix["accuracy"] = accuracy
        fixes.append(fix)
    return fixes


def _attribute_number(element: ET.Element, name: str) -> float | str | None:
    raw = element.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return raw  # ingest rejects it with a reason naming the field
