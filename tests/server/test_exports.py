"""Exports (GPX 1.1, CSV, GeoJSON, JSON) and imports (GPX tracks, GeoJSON geofences and routes)."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for

from .gps_support import BASE_LAT, BASE_LON, client, close, create_vehicle, iso, now_s, post_batch, read_positions

GPX = "http://www.topografix.com/GPX/1/1"
TPX = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings)


# -- a minimal GPX 1.1 schema check (the parts of gpx.xsd a track uses) -------------------------------

DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
DATETIME = re.compile(r"^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
# xsd:sequence of each complex type: (element, may repeat).
SEQUENCES: dict[str, list[tuple[str, bool]]] = {
    "gpx": [("metadata", False), ("wpt", True), ("rte", True), ("trk", True), ("extensions", False)],
    "metadata": [(n, n == "link") for n in ("name", "desc", "author", "copyright", "link", "time", "keywords",
                                             "bounds", "extensions")],
    "trk": [(n, n in ("link", "trkseg")) for n in ("name", "cmt", "desc", "src", "link", "number", "type",
                                                    "extensions", "trkseg")],
    "trkseg": [("trkpt", True), ("extensions", False)],
    "trkpt": [(n, n == "link") for n in ("ele", "time", "magvar", "geoidheight", "name", "cmt", "desc", "src", "link",
                                          "sym", "type", "fix", "sat", "hdop", "vdop", "pdop", "ageofdgpsdata",
                                          "dgpsid", "extensions")],
}
TPX_SEQUENCE = ["atemp", "wtemp", "depth", "hr", "cad", "speed", "course", "bearing", "Extensions"]
SIMPLE = {"ele": DECIMAL, "time": DATETIME, "name": None, "desc": None, "hdop": DECIMAL}


def _local(element: ET.Element) -> tuple[str, str]:
    namespace, _, local = element.tag[1:].partition("}")
    return namespace, local


def _check_sequence(element: ET.Element, kind: str, problems: list[str]) -> None:
    order = SEQUENCES[kind]
    position = 0
    seen: set[str] = set()
    for child in element:
        namespace, local = _local(child)
        if namespace != GPX:
            problems.append(f"<{kind}> has {child.tag} outside <extensions>")
            continue
        names = [name for name, _ in order]
        if local not in names:
            problems.append(f"<{kind}> may not contain <{local}>")
            continue
        index = names.index(local)
        if index < position or (local in seen and not order[index][1]):
            problems.append(f"<{local}> out of order or repeated in <{kind}>")
        position, _ = index, seen.add(local)
        if local in SEQUENCES:
            _check_element(child, local, problems)
        elif local == "extensions":
            _check_extensions(child, problems)
        elif SIMPLE.get(local) is not None and not SIMPLE[local].match((child.text or "").strip()):  # type: ignore[union-attr]
            problems.append(f"<{local}> {child.text!r} is not a valid value")


def _check_element(element: ET.Element, kind: str, problems: list[str]) -> None:
    if kind == "trkpt":
        lat, lon = element.get("lat"), element.get("lon")
        if lat is None or not DECIMAL.match(lat) or not -90 <= float(lat) <= 90:
            problems.append(f"trkpt lat {lat!r} is not a latitudeType")
        if lon is None or not DECIMAL.match(lon) or not -180 <= float(lon) < 180:
            problems.append(f"trkpt lon {lon!r} is not a longitudeType")
    _check_sequence(element, kind, problems)


def _check_extensions(element: ET.Element, problems: list[str]) -> None:
    for child in element:
        namespace, local = _local(child)
        if namespace == GPX:  # xsd:any namespace="##other"
            problems.append(f"<extensions> may only hold other namespaces, found GPX <{local}>")
        if (namespace, local) == (TPX, "TrackPointExtension"):
            position = -1
            for item in child:
                item_ns, item_local = _local(item)
                index = TPX_SEQUENCE.index(item_local) if item_ns == TPX and item_local in TPX_SEQUENCE else -2
                if index <= position:
                    problems.append(f"gpxtpx:{item_local} unknown or out of order")
                position = index
                value = float(item.text or "nan")
                if item_local == "speed" and not value >= 0:
                    problems.append(f"gpxtpx:speed {item.text} must be >= 0")
                if item_local == "course" and not 0 <= value < 360:
                    problems.append(f"gpxtpx:course {item.text} must be in [0, 360)")


def gpx_problems(text: str) -> list[str]:
    root = ET.fromstring(text)
    problems: list[str] = []
    if root.tag != f"{{{GPX}}}gpx":
        return [f"root is {root.tag}, not gpx in {GPX}"]
    if root.get("version") != "1.1":
        problems.append("version must be 1.1")
    if not root.get("creator"):
        problems.append("creator is required")
    _check_sequence(root, "gpx", problems)
    return problems


def test_the_schema_check_catches_what_gpx_1_1_forbids() -> None:
    bad = (f'<gpx xmlns="{GPX}" version="1.0"><trk><trkseg><trkpt lat="91" lon="180">'
           "<time>yesterday</time><ele>1</ele><speed>3</speed><extensions><course>3</course></extensions>"
           "</trkpt></trkseg><name>late</name></trk></gpx>")
    problems = " | ".join(gpx_problems(bad))
    for expected in ("version must be 1.1", "creator is required", "lat '91'", "lon '180'", "<time> 'yesterday'",
                     "<ele> out of order", "may not contain <speed>", "only hold other namespaces",
                     "<name> out of order"):
        assert expected in problems


# -- exports ------------------------------------------------------------------------------------------


def _drive(vehicle_id: str, start: float) -> list[dict[str, Any]]:
    fixes = []
    for i in range(20):
        fixes.append({"vehicle_id": vehicle_id, "fix_time": iso(start + i * 5), "lat": BASE_LAT + i * 0.00013,
                      "lon": BASE_LON + i * 0.0002, "speed_kph": 36.0 + i, "course": (350.0 + i * 3) % 360,
                      "altitude": 34.5 + i / 4, "accuracy": 3.0 + i % 4})
    fixes[3]["fix_time"] = iso(start + 15.25)  # fractional seconds survive too
    fixes[7]["speed_kph"] = fixes[7]["course"] = fixes[7]["altitude"] = fixes[7]["accuracy"] = None
    return fixes


def test_gpx_export_is_valid_gpx_1_1_with_one_track_and_round_trips_through_the_gpx_importer(
        live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 3600
    with client(live, tenant.tokens["dispatcher"]) as http:
        source = create_vehicle(http, "Truck <Nord> & Süd")
        copy = create_vehicle(http, "Replay")
        sent = _drive(source, start)
        assert post_batch(http, sent)["accepted"] == 20
        response = read_positions(http, source, start - 1, start + 3600, "gpx")
        assert response.headers["content-type"].startswith("application/gpx+xml")
        assert "attachment" in response.headers["content-disposition"]
        text = response.text
        assert gpx_problems(text) == []
        root = ET.fromstring(text)
        assert root.tag == f"{{{GPX}}}gpx" and root.get("version") == "1.1"
        tracks = root.findall(f"{{{GPX}}}trk")
        assert len(tracks) == 1
        assert tracks[0].findtext(f"{{{GPX}}}name") == "Truck <Nord> & Süd"
        segments = tracks[0].findall(f"{{{GPX}}}trkseg")
        assert len(segments) == 1
        points = segments[0].findall(f"{{{GPX}}}trkpt")
        assert len(points) == 20
        assert points[0].findtext(f"{{{GPX}}}time") == iso(start)
        assert float(points[0].get("lat", "nan")) == BASE_LAT
        assert points[0].find(f"{{{GPX}}}extensions/{{{TPX}}}TrackPointExtension/{{{TPX}}}speed") is not None

        imported = http.post("/api/v1/import/gpx", params={"vehicle_id": copy}, content=response.content,
                             headers={"Content-Type": "application/gpx+xml"})
        assert imported.status_code == 200, imported.text
        assert imported.json() == {"accepted": 20, "duplicates": 0, "rejected": [], "points": 20}
        again = http.post("/api/v1/import/gpx", params={"vehicle_id": copy}, content=response.content)
        assert again.json()["duplicates"] == 20

        original = read_positions(http, source, start - 1, start + 3600).json()["data"]
        back = read_positions(http, copy, start - 1, start + 3600).json()["data"]
    assert len(back) == len(original) == 20
    for before, after in zip(original, back, strict=True):
        assert (after["fix_time"], after["lat"], after["lon"]) == (before["fix_time"], before["lat"], before["lon"])
        for name in ("speed_kph", "course", "altitude", "accuracy"):
            if before[name] is None:
                assert after[name] is None, name
            else:
                assert close(after[name], before[name]), (name, before[name], after[name])
    assert back[3]["fix_time"] == iso(start + 15.25)


def test_csv_geojson_and_json_exports(live: LiveServer, tenant: Tenant) -> None:
    start = now_s() - 3600
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van CSV", "imei-csv")
        sent = _drive(van, start)
        sent[0]["attributes"] = {"ignition": True, "driver": "Ana, \"the\" pro"}
        post_batch(http, sent)
        exported = read_positions(http, van, start - 1, start + 3600, "csv")
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(exported.text)))
        assert rows[0] == ["vehicle_id", "device_id", "fix_time", "lat", "lon", "speed_kph", "course", "altitude",
                           "accuracy", "attributes"]
        assert len(rows) == 21
        assert rows[1][:5] == [van, "imei-csv", iso(start), repr(BASE_LAT), repr(BASE_LON)]
        assert json.loads(rows[1][9]) == {"ignition": True, "driver": 'Ana, "the" pro'}
        assert rows[8][5:9] == ["", "", "", ""]  # the fix without speed, course, altitude, accuracy

        geojson = read_positions(http, van, start - 1, start + 3600, "geojson")
        assert geojson.headers["content-type"].startswith("application/geo+json")
        collection = geojson.json()
        assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 20
        first = collection["features"][0]
        assert first["geometry"] == {"type": "Point", "coordinates": [BASE_LON, BASE_LAT]}
        assert first["properties"]["fix_time"] == iso(start) and first["properties"]["vehicle_id"] == van

        data = read_positions(http, van, start - 1, start + 3600).json()["data"]
        assert post_batch(http, data) == {"accepted": 0, "duplicates": 20, "rejected": []}  # JSON posts back as-is


def test_gpx_import_reads_gpx_1_0_and_refuses_what_it_cannot_trust(live: LiveServer, tenant: Tenant) -> None:
    t = now_s() - 600
    gpx10 = (f'<?xml version="1.0"?><gpx version="1.0" creator="old" xmlns="http://www.topografix.com/GPX/1/0">'
             f'<trk><trkseg><trkpt lat="{BASE_LAT}" lon="{BASE_LON}"><ele>12</ele><time>{iso(t)}</time>'
             f'<course>45</course><speed>10</speed></trkpt>'
             f'<trkpt lat="{BASE_LAT}" lon="{BASE_LON}"></trkpt></trkseg></trk></gpx>')
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van GPX")
        result = http.post("/api/v1/import/gpx", params={"vehicle_id": van}, content=gpx10.encode())
        assert result.status_code == 200, result.text
        assert result.json()["accepted"] == 1
        assert result.json()["rejected"] == [{"index": 1, "reason": "fix_time is required"}]
        (row,) = read_positions(http, van, t - 1, t + 1).json()["data"]
        assert row["speed_kph"] == pytest.approx(36.0) and row["course"] == 45.0 and row["altitude"] == 12.0

        bomb = ('<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaaaaaaaa">]>'
                f'<gpx version="1.1" creator="x" xmlns="{GPX}"><metadata><name>&a;</name></metadata></gpx>')
        refused = http.post("/api/v1/import/gpx", params={"vehicle_id": van}, content=bomb.encode())
        assert refused.status_code == 400 and "DOCTYPE" in refused.json()["errors"][0]["detail"]
        kml = http.post("/api/v1/import/gpx", params={"vehicle_id": van},
                        content=b'<kml xmlns="http://www.opengis.net/kml/2.2"/>')
        assert kml.status_code == 400
        assert http.post("/api/v1/import/gpx", params={"vehicle_id": van}, content=b"<gpx").status_code == 400
        assert http.post("/api/v1/import/gpx", params={"vehicle_id": "nope"}, content=gpx10.encode()
                         ).status_code == 404
    with client(live, tenant.tokens["field"]) as field:  # field staff upload positions too
        assert field.post("/api/v1/import/gpx", params={"vehicle_id": van}, content=gpx10.encode()
                          ).status_code == 200


def _feature(geometry: dict[str, Any], feature_id: str | None = None, **properties: Any) -> dict[str, Any]:
    feature: dict[str, Any] = {"type": "Feature", "geometry": geometry, "properties": properties}
    if feature_id:
        feature["id"] = feature_id
    return feature


def test_geojson_import_creates_geofences_and_routes_through_the_tenant_document(
        live: LiveServer, tenant: Tenant) -> None:
    square = {"type": "Polygon", "coordinates": [[[13.3, 52.5], [13.4, 52.5], [13.4, 52.6], [13.3, 52.6],
                                                  [13.3, 52.5]]]}
    multi = {"type": "MultiPolygon", "coordinates": [square["coordinates"],
                                                     [[[14.0, 52.0], [14.1, 52.0], [14.1, 52.1], [14.0, 52.0]]]]}
    suffix = tenant.id[:8]
    collection = {"type": "FeatureCollection", "features": [
        _feature(square, f"depot-{suffix}", name="Depot", kind="depot", speed_limit_kph=20, colour="red"),
        _feature(multi, None, name="Two yards"),
        _feature({"type": "Point", "coordinates": [13.45, 52.52]}, None, name="Customer", radius_m=150),
        _feature({"type": "LineString", "coordinates": [[13.3, 52.5], [13.5, 52.55]]}, f"route-{suffix}",
                 name="Morning run", corridor_m=250),
        _feature({"type": "Point", "coordinates": [13.45, 52.52]}, None, name="No radius"),
        _feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, None, name="Bowtie"),
        _feature({"type": "MultiLineString", "coordinates": [[[0, 1], [1, 2]]]}, None, name="Odd"),
        {"type": "NotAFeature"},
    ]}
    with client(live, tenant.tokens["dispatcher"]) as http:
        response = http.post("/api/v1/import/geojson", json=collection)
        assert response.status_code == 201, response.text
        body = response.json()
        assert [(c["index"], c["type"]) for c in body["created"]] == [
            (0, "geofences"), (1, "geofences"), (2, "geofences"), (3, "routes")]
        reasons = {r["index"]: r["reason"] for r in body["rejected"]}
        assert sorted(reasons) == [4, 5, 6, 7]
        assert "radius_m" in reasons[4]
        assert "Self-intersection" in reasons[5]
        assert "MultiLineString" in reasons[6]
        assert "not a GeoJSON Feature" in reasons[7]

        depot = http.get(f"/api/v1/geofences/depot-{suffix}").json()["data"]["attributes"]
        assert (depot["name"], depot["kind"], depot["speed_limit_kph"]) == ("Depot", "depot", 20)
        assert "colour" not in depot  # only fields of the collection are imported
        route = http.get(f"/api/v1/routes/route-{suffix}").json()["data"]["attributes"]
        assert (route["name"], route["corridor_m"]) == ("Morning run", 250)
        names = {g["attributes"]["name"] for g in http.get("/api/v1/geofences").json()["data"]}
        assert names == {"Depot", "Two yards", "Customer"}

        again = http.post("/api/v1/import/geojson", json={"type": "FeatureCollection",
                                                          "features": collection["features"][:1]})
        assert again.status_code == 200
        assert again.json()["created"] == [] and "already exists" in again.json()["rejected"][0]["reason"]
        forced = http.post("/api/v1/import/geojson", params={"collection": "routes"}, json=collection["features"][0])
        assert "cannot be imported as routes" in forced.json()["rejected"][0]["reason"]
        assert http.post("/api/v1/import/geojson", json={"type": "Point"}).status_code == 400
    with client(live, tenant.tokens["field"]) as field:
        assert field.post("/api/v1/import/geojson", json=collection).status_code == 403
