"""Where the bundled map assets live: the repository's resources/ folder, or the PyInstaller bundle."""

from __future__ import annotations

import sys
from pathlib import Path

# Every file the map page loads, relative to resources/: the page fails offline without them.
LEAFLET_FILES: tuple[str, ...] = (
    "leaflet/leaflet.js",
    "leaflet/leaflet.css",
    "leaflet/leaflet.markercluster.js",
    "leaflet/MarkerCluster.css",
    "leaflet/MarkerCluster.Default.css",
    "leaflet/draw/leaflet.draw.js",
    "leaflet/draw/leaflet.draw.css",
    "leaflet/draw/images/spritesheet.png",
    "leaflet/draw/images/spritesheet-2x.png",
    "leaflet/draw/images/spritesheet.svg",
    "leaflet/images/layers.png",
    "leaflet/images/marker-icon.png",
)

DEMO_MBTILES = "demo.mbtiles"


class AssetsMissing(FileNotFoundError):
    """Bundled map files are missing; the map cannot load offline without them."""


def resources_dir() -> Path:
    """resources/ beside the packages, or inside the bundle when frozen (Vorta's get_asset rule)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is not None:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


def missing_assets(root: Path | None = None) -> list[str]:
    base = resources_dir() if root is None else root
    return [name for name in LEAFLET_FILES if not (base / name).is_file()]


def check_assets(root: Path | None = None) -> Path:
    """The resources folder, or AssetsMissing naming the files to restore."""
    base = resources_dir() if root is None else root
    missing = missing_assets(base)
    if missing:
        raise AssetsMissing(
            f"map assets missing under {base}: {', '.join(missing)}; run scripts/fetch_map_assets.sh "
            "or restore resources/ from the repository"
        )
    return base


def demo_mbtiles_path() -> Path:
    return resources_dir() / DEMO_MBTILES
