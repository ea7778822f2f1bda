"""The map page and its data, without Qt: bundled assets only, the tile file, the layer JSON."""

from __future__ import annotations

import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest

from maps.assets import LEAFLET_FILES, AssetsMissing, check_assets, demo_mbtiles_path, missing_assets, resources_dir
from maps.layers import geofence_feature, route_feature, vehicle_state
from maps.mbtiles import MBTilesError, MBTilesReader, MBTilesWriter, lonlat_to_tile, tile_bounds, tms_row
from maps.page import MapOptions, build_map_html, external_urls, referenced_urls


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(v for k, v in attrs if k in ("src", "href") and v)


def test_map_page_names_no_network_url_and_every_asset_is_bundled() -> None:
    html = build_map_html()
    parser = _Refs()
    parser.feed(html)
    assert parser.urls, "the page loads its scripts from somewhere"
    assert external_urls(html) == []
    assert not [u for u in parser.urls if u.startswith(("http:", "https:", "//"))]
    local = [u for u in parser.urls if not u.startswith("qrc:")]
    assert {"leaflet/leaflet.js", "leaflet/leaflet.markercluster.js", "leaflet/draw/leaflet.draw.js"} <= set(local)
    for url in local:
        assert (resources_dir() / url).is_file(), url
    assert "cdn" not in html.lower() and "jquery" not in html.lower() and "bootstrap" not in html.lower()


def test_the_page_initialises_the_bridge_with_the_offline_tile_scheme() -> None:
    html = build_map_html(MapOptions(read_only=True))
    assert "fleetInit(" in html
    assert "mbtiles:///{z}/{x}/{y}.png" in html
    assert '"readOnly": true' in html
    assert set(referenced_urls(html)) >= {"leaflet/leaflet.css", "leaflet/draw/leaflet.draw.css"}


def test_online_tiles_are_only_used_when_chosen() -> None:
    assert "tile.openstreetmap.org" not in build_map_html(MapOptions())
    online = build_map_html(MapOptions(online_tiles=True))
    assert external_urls(online) == ["https://tile.openstreetmap.org/{z}/{x}/{y}.png"]


def test_every_bundled_leaflet_file_is_present() -> None:
    assert missing_assets() == []
    assert check_assets() == resources_dir()
    assert len(LEAFLET_FILES) >= 10


def test_missing_assets_are_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AssetsMissing, match=r"fetch_map_assets\.sh") as info:
        check_assets(tmp_path)
    assert "leaflet/leaflet.js" in str(info.value)


def test_demo_tiles_cover_central_helsinki_with_real_content() -> None:
    reader = MBTilesReader(demo_mbtiles_path())
    info = reader.info
    min_lon, min_lat, max_lon, max_lat = info.bounds
    assert min_lon < 24.945 < max_lon and min_lat < 60.17 < max_lat
    assert (info.min_zoom, info.max_zoom) == (13, 17)
    assert 50 < reader.count() < 1000
    x, y = lonlat_to_tile(24.945, 60.170, 16)
    tile = reader.tile(16, x, y)
    assert tile is not None and tile.startswith(b"\x89PNG")
    assert reader.tile(16, 0, 0) is None
    assert demo_mbtiles_path().stat().st_size < 5_000_000
    reader.close()


def test_tile_rows_are_flipped_to_tms_and_back(tmp_path: Path) -> None:
    path = tmp_path / "t.mbtiles"
    writer = MBTilesWriter(path)
    writer.add_tile(3, 4, 1, b"png-a")
    writer.set_metadata({"minzoom": "3", "maxzoom": "3", "bounds": "-10,-10,10,10"})
    writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT tile_row FROM tiles").fetchone()[0] == tms_row(3, 1) == 6
    reader = MBTilesReader(path)
    assert reader.tile(3, 4, 1) == b"png-a"
    assert reader.info.center == (0.0, 0.0, 3)
    reader.close()


def test_a_file_that_is_not_mbtiles_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(MBTilesError, match="does not exist"):
        MBTilesReader(tmp_path / "missing.mbtiles")
    junk = tmp_path / "junk.mbtiles"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(MBTilesError, match="not an MBTiles file"):
        MBTilesReader(junk)


def test_tile_arithmetic_round_trips() -> None:
    x, y = lonlat_to_tile(13.40, 52.52, 14)
    west, south, east, north = tile_bounds(14, x, y)
    assert west <= 13.40 < east and south < 52.52 <= north


@pytest.mark.parametrize(("invalid", "fix_time", "speed", "state"), [
    (True, 999.0, 50.0, "invalid"),
    (False, None, None, "offline"),
    (False, 1000.0 - 3600, 30.0, "offline"),
    (False, 990.0, 42.0, "moving"),
    (False, 990.0, 1.0, "stopped"),
    (False, 990.0, None, "stopped"),
])
def test_vehicle_state_rules(invalid: bool, fix_time: float | None, speed: float | None, state: str) -> None:
    assert vehicle_state(invalid=invalid, fix_time=fix_time, speed_kph=speed, now=1000.0) == state


def test_route_features_carry_their_corridor_and_default_it() -> None:
    line = {"type": "LineString", "coordinates": [[24.94, 60.17], [24.95, 60.171]]}
    wide = route_feature("r1", {"name": "A", "geometry": line, "corridor_m": 250}, None)
    assert wide is not None and wide["properties"]["corridor_m"] == 250.0
    flagged = route_feature("r2", {"name": "B", "geometry": line}, "name: bad")
    assert flagged is not None and flagged["properties"] == {
        "id": "r2", "collection": "routes", "name": "B", "vehicle_id": None, "corridor_m": 100.0,
        "invalid": "name: bad"}
    assert route_feature("r3", {"name": "C"}, None) is None


def test_circle_geofences_keep_their_radius() -> None:
    feature = geofence_feature("g1", {"name": "Yard", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]},
                                      "radius_m": 75, "kind": "depot"}, None)
    assert feature is not None
    assert feature["properties"]["radius_m"] == 75 and feature["properties"]["kind"] == "depot"
