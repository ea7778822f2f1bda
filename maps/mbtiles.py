"""MBTiles (SQLite) tile files: a thread-safe reader for the map's tile scheme, and a writer for the
demo-tile build script. Stdlib only: the Qt scheme handler in app/ calls the reader.

MBTiles stores rows in TMS order (y counted from the south); the web map asks in XYZ order
(y from the north), so y is flipped on the way in and out.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path


class MBTilesError(RuntimeError):
    """The file is missing or is not an MBTiles database."""


@dataclass(frozen=True)
class TileSetInfo:
    name: str
    min_zoom: int
    max_zoom: int
    bounds: tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat
    center: tuple[float, float, int]  # lon, lat, zoom
    attribution: str
    tile_format: str


def tms_row(z: int, y: int) -> int:
    return (1 << z) - 1 - y


def lonlat_to_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The XYZ tile (x, y) holding a WGS84 point at zoom z."""
    n = 1 << z
    lat_r = math.radians(max(min(lat, 85.0511), -85.0511))
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of an XYZ tile."""
    n = 1 << z

    def lat(row: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


class MBTilesReader:
    """Read-only access to one MBTiles file; safe to call from any thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise MBTilesError(f"MBTiles file {self.path} does not exist")
        try:
            self._conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
            self._conn.execute("SELECT 1 FROM tiles LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise MBTilesError(f"{self.path} is not an MBTiles file: {exc}") from exc
        self._lock = threading.Lock()
        self.info = self._read_info()

    def metadata(self) -> dict[str, str]:
        with self._lock:
            rows = self._conn.execute("SELECT name, value FROM metadata").fetchall()
        return {str(name): str(value) for name, value in rows}

    def _read_info(self) -> TileSetInfo:
        meta = self.metadata()
        with self._lock:
            low, high = self._conn.execute("SELECT min(zoom_level), max(zoom_level) FROM tiles").fetchone()
        min_zoom = int(meta.get("minzoom", low if low is not None else 0))
        max_zoom = int(meta.get("maxzoom", high if high is not None else 0))
        raw_bounds = [float(v) for v in meta.get("bounds", "-180,-85,180,85").split(",")]
        bounds = (raw_bounds[0], raw_bounds[1], raw_bounds[2], raw_bounds[3])
        if "center" in meta:
            parts = meta["center"].split(",")
            center = (float(parts[0]), float(parts[1]), int(float(parts[2])) if len(parts) > 2 else min_zoom)
        else:
            center = ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, min_zoom)
        return TileSetInfo(meta.get("name", self.path.stem), min_zoom, max_zoom, bounds, center,
                           meta.get("attribution", ""), meta.get("format", "png"))

    def tile(self, z: int, x: int, y: int) -> bytes | None:
        """The tile at XYZ coordinates, or None when the file has none there."""
        with self._lock:
            row = self._conn.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
                (z, x, tms_row(z, y)),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM tiles").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class MBTilesWriter:
    """Builds an MBTiles file (used by scripts/make_demo_mbtiles.py)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            self.path.unlink()
        self._conn = sqlite3.connect(self.path)
        self._conn.executescript(
            "CREATE TABLE metadata (name TEXT PRIMARY KEY, value TEXT);"
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);"
            "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);"
        )

    def set_metadata(self, values: dict[str, str]) -> None:
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO metadata (name, value) VALUES (?, ?)", values.items())

    def add_tile(self, z: int, x: int, y: int, data: bytes) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO tiles (zoom_level, tile_column, tile_row, tile_data) VALUES (?, ?, ?, ?)",
                (z, x, tms_row(z, y), sqlite3.Binary(data)),
            )

    def close(self) -> None:
        self._conn.execute("VACUUM")
        self._conn.close()
