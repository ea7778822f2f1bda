"""The map page: folium builds the Leaflet map, with every script and stylesheet taken from the
bundled resources/leaflet/ instead of folium's CDN defaults, so the page works with no network.

The page is meant to be loaded with resources/ as its base URL (asset paths are relative), tiles
from the app's `mbtiles:` URL scheme, and the live layers driven through maps/bridge.js.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import folium
from folium import Element, Figure, MacroElement
from folium.template import Template

BRIDGE_JS = Path(__file__).with_name("bridge.js")
QWEBCHANNEL_JS = "qrc:///qtwebchannel/qwebchannel.js"
OFFLINE_TILE_URL = "mbtiles:///{z}/{x}/{y}.png"
ONLINE_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OFFLINE_ATTRIBUTION = "Map data \u00a9 OpenStreetMap contributors (ODbL), offline demo tiles"
ONLINE_ATTRIBUTION = "\u00a9 OpenStreetMap contributors"

JS_ASSETS = (
    ("leaflet", "leaflet.js"),
    ("markercluster", "leaflet.markercluster.js"),
    ("leaflet_draw", "draw/leaflet.draw.js"),
)
CSS_ASSETS = (
    ("leaflet_css", "leaflet.css"),
    ("markercluster_css", "MarkerCluster.css"),
    ("markercluster_default_css", "MarkerCluster.Default.css"),
    ("leaflet_draw_css", "draw/leaflet.draw.css"),
)

PAGE_CSS = """
.fleet-vehicle { border-radius: 50%; border: 2px solid #fff; box-shadow: 0 0 2px rgba(0,0,0,.6); }
.fleet-moving { background: #2e7d32; }
.fleet-stopped { background: #f9a825; }
.fleet-offline { background: #757575; }
.fleet-invalid { background: #c62828; border-color: #ffeb3b; }
.fleet-message { padding: 6px 10px; border-radius: 4px; background: #fff; max-width: 320px;
                 box-shadow: 0 1px 4px rgba(0,0,0,.4); font: 13px sans-serif; }
.fleet-message-error { background: #ffebee; color: #b71c1c; border: 1px solid #c62828; }
"""


@dataclass(frozen=True)
class MapOptions:
    center: tuple[float, float] = (24.9410, 60.1700)  # lon, lat: central Helsinki (the demo tiles)
    zoom: int = 14
    min_zoom: int = 3  # the map's; the tile layer starts at tile_min_zoom
    max_zoom: int = 18
    tile_min_zoom: int = 0
    max_native_zoom: int = 16
    tile_bounds: tuple[float, float, float, float] | None = None  # min_lon, min_lat, max_lon, max_lat
    read_only: bool = False
    online_tiles: bool = False  # opt-in: OpenStreetMap's tile servers instead of the MBTiles file
    asset_base: str = "leaflet/"

    @property
    def tile_url(self) -> str:
        return ONLINE_TILE_URL if self.online_tiles else OFFLINE_TILE_URL

    def init_options(self) -> dict[str, Any]:
        bounds = None
        if self.tile_bounds is not None and not self.online_tiles:
            min_lon, min_lat, max_lon, max_lat = self.tile_bounds
            bounds = [[min_lat, min_lon], [max_lat, max_lon]]
        return {
            "tileUrl": self.tile_url,
            "minZoom": self.min_zoom,
            "maxZoom": self.max_zoom,
            "tileMinZoom": 0 if self.online_tiles else self.tile_min_zoom,
            "maxNativeZoom": 19 if self.online_tiles else self.max_native_zoom,
            "tileBounds": bounds,
            "attribution": ONLINE_ATTRIBUTION if self.online_tiles else OFFLINE_ATTRIBUTION,
            "readOnly": self.read_only,
            "disableClusteringAtZoom": 16,
        }


class _FleetInit(MacroElement):
    """Calls fleetInit(map, options) once folium has created the map object."""

    _template = Template(
        "{% macro script(this, kwargs) %}\n"
        "fleetInit({{ this._parent.get_name() }}, {{ this.options_json }});\n"
        "{% endmacro %}"
    )

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "FleetInit"
        self.options_json = json.dumps(options)


def build_map_html(options: MapOptions | None = None) -> str:
    """The complete HTML of the map page."""
    opts = options or MapOptions()
    lon, lat = opts.center
    fmap = folium.Map(location=[lat, lon], zoom_start=opts.zoom, tiles=None, min_zoom=opts.min_zoom,
                      max_zoom=opts.max_zoom, control_scale=True)
    # folium's class-level defaults point at CDNs (and pull jQuery, Bootstrap and Font Awesome,
    # which this page does not use): replace them on the instance with the bundled files.
    fmap.default_js = [(name, opts.asset_base + path) for name, path in JS_ASSETS]
    fmap.default_css = [(name, opts.asset_base + path) for name, path in CSS_ASSETS]
    root = fmap.get_root()
    assert isinstance(root, Figure)
    header = root.header
    header.add_child(Element(f'<script src="{QWEBCHANNEL_JS}"></script>'), name="qwebchannel")
    header.add_child(Element(f"<style>{PAGE_CSS}</style>"), name="fleet_css")
    header.add_child(Element(f"<script>\n{BRIDGE_JS.read_text()}\n</script>"), name="fleet_bridge")
    fmap.add_child(_FleetInit(opts.init_options()))
    html: str = fmap.get_root().render()
    return html


_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""", re.IGNORECASE)


def referenced_urls(html: str) -> list[str]:
    """Every src=, href= and url(...) target in the page (for the no-network checks)."""
    return [a or b for a, b in _URL.findall(html)]


def external_urls(html: str) -> list[str]:
    """Any http(s) URL anywhere in the page text; an offline page has none."""
    return re.findall(r"https?://[^\s\"'<>)]+", html)
