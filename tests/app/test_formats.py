"""GPX, GeoJSON and CSV reading and writing, round trips included."""

from __future__ import annotations

import json

import pytest

from app.formats import (
    FormatError,
    format_of,
    parse_csv,
    parse_geojson,
    parse_gpx,
    write_csv,
    write_geojson,
    write_gpx,
)

LINE = {"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.172]]}
SQUARE = {"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.945, 60.17], [24.945, 60.172], [24.94, 60.17]]]}


def test_format_is_taken_from_the_file_name() -> None:
    assert [format_of(p) for p in ("a.GeoJSON", "b.json", "c.gpx", "d.csv")] == ["geojson", "geojson", "gpx", "csv"]
    with pytest.raises(FormatError, match=r"use \.geojson"):
        format_of("e.kml")


def test_geojson_features_become_routes_geofences_vehicles_and_drivers() -> None:
    items = parse_geojson(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": LINE, "properties": {"name": "R", "corridor_m": 50, "created_at": "x"}},
        {"type": "Feature", "geometry": SQUARE, "properties": {"name": "G", "kind": "depot", "bogus": 1}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},
         "properties": {"name": "C", "radius_m": 30}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]}, "properties": {"name": "P"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},
         "properties": {"collection": "vehicles", "name": "V", "plate": "X-1"}},
    ]}))
    assert [(i.collection, i.fields.get("name")) for i in items] == [
        ("routes", "R"), ("geofences", "G"), ("geofences", "C"), ("vehicles", "V")]
    assert items[0].fields == {"name": "R", "corridor_m": 50, "geometry": LINE}
    assert "bogus" not in items[1].fields and "geometry" not in items[3].fields
    assert items[0].label == "feature 1 'R'"


def test_geojson_that_holds_nothing_useful_is_refused() -> None:
    with pytest.raises(FormatError, match="not JSON"):
        parse_geojson("{")
    with pytest.raises(FormatError, match="Feature or FeatureCollection"):
        parse_geojson('{"type": "Point", "coordinates": [1, 2]}')
    with pytest.raises(FormatError, match="no routes"):
        parse_geojson('{"type": "FeatureCollection", "features": []}')


def test_geojson_export_round_trips() -> None:
    text = write_geojson([{"id": "r1", "name": "R", "geometry": LINE}], [{"id": "g1", "name": "G", "geometry": SQUARE}],
                         [({"id": "v1", "name": "V"}, 24.9, 60.1)])
    items = parse_geojson(text)
    assert [(i.collection, i.fields["name"]) for i in items] == [("routes", "R"), ("geofences", "G"), ("vehicles", "V")]


def test_gpx_routes_and_tracks_become_routes_and_round_trip() -> None:
    text = write_gpx([{"name": "Harbour", "geometry": LINE}], [("Tuesday", [(1.7e9, 24.94, 60.17),
                                                                           (1.7e9 + 5, 24.941, 60.171)])])
    assert "<time>2023-11-14T22:13:20Z</time>" in text
    items = parse_gpx(text)
    assert [(i.fields["name"], i.fields["geometry"]["coordinates"]) for i in items] == [
        ("Harbour", LINE["coordinates"]), ("Tuesday", [[24.94, 60.17], [24.941, 60.171]])]


def test_gpx_errors_say_what_is_wrong() -> None:
    with pytest.raises(FormatError, match="not GPX"):
        parse_gpx("<gpx")
    with pytest.raises(FormatError, match="root element"):
        parse_gpx("<kml/>")
    with pytest.raises(FormatError, match="no <rte> or <trk>"):
        parse_gpx('<gpx xmlns="http://www.topografix.com/GPX/1/1"/>')
    with pytest.raises(FormatError, match="lat/lon"):
        parse_gpx('<gpx><rte><rtept lat="x" lon="1"/></rte></gpx>')


def test_csv_rows_are_typed_by_the_schema_and_round_trip() -> None:
    text = write_csv("vehicles", [{"id": "v1", "name": "Van", "plate": "P", "speed_limit_kph": 80}])
    assert text.splitlines()[0] == "id,name,plate,vin,device_id,driver_id,status,speed_limit_kph,notes,created_at," \
                                   "updated_at"
    [item] = parse_csv(text, "vehicles")
    assert item.fields == {"name": "Van", "plate": "P", "speed_limit_kph": 80}
    [fence] = parse_csv("name,active,speed_limit_kph\nYard,no,fast\n", "geofences")
    assert fence.fields == {"name": "Yard", "active": False, "speed_limit_kph": "fast"}  # validation names it
    with pytest.raises(FormatError, match="'name' column"):
        parse_csv("plate\nX\n", "vehicles")


def test_desktop_exports_write_gpx_decimals_and_rfc7946_rings() -> None:
    import shapely

    route = {"name": "Equator", "geometry": {"type": "LineString", "coordinates": [[2e-05, -1e-07], [0.5, 0.5]]}}
    gpx = write_gpx([route], [("Track", [(1_765_000_000.0, 2e-05, -3e-06)])])
    assert "e-0" not in gpx
    assert 'lat="-0.0000001" lon="0.00002"' in gpx and 'lat="-0.000003"' in gpx
    clockwise = {"name": "Depot", "geometry": {"type": "Polygon", "coordinates": [
        [[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]]}}
    feature = json.loads(write_geojson([], [clockwise]))["features"][0]
    assert shapely.LinearRing(feature["geometry"]["coordinates"][0]).is_ccw
    assert clockwise["geometry"]["coordinates"][0][1] == [0.0, 1.0]  # the record itself is untouched
