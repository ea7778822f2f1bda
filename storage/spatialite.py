"""Find and load mod_spatialite into a SQLite connection that is able to load extensions."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Where each platform's package managers put the library; searched after SPATIALITE_PATH
# and the PyInstaller bundle, in this order.
STANDARD_LOCATIONS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu/mod_spatialite.so",
    "/usr/lib/aarch64-linux-gnu/mod_spatialite.so",
    "/usr/lib64/mod_spatialite.so",
    "/usr/lib/mod_spatialite.so",
    "/usr/local/lib/mod_spatialite.so",
    "/opt/homebrew/lib/mod_spatialite.dylib",
    "/usr/local/lib/mod_spatialite.dylib",
    "/opt/local/lib/mod_spatialite.dylib",
    r"C:\OSGeo4W\bin\mod_spatialite.dll",
    r"C:\OSGeo4W64\bin\mod_spatialite.dll",
)

_LIBRARY_NAMES = ("mod_spatialite.so", "mod_spatialite.dylib", "mod_spatialite.dll")


class SpatialiteNotFound(RuntimeError):
    """mod_spatialite could not be located or loaded."""


class ExtensionLoadingUnsupported(RuntimeError):
    """No SQLite binding on this Python can load extensions."""


def sqlite_module() -> ModuleType:
    """The sqlite3 DB-API module to use: the stdlib one if it can load extensions, else pysqlite3."""
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        from pysqlite3 import dbapi2  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ExtensionLoadingUnsupported(
            "this Python's sqlite3 cannot load extensions; install pysqlite3-binary "
            "(pip install pysqlite3-binary) or use a Python built with extension loading"
        ) from exc
    return dbapi2  # type: ignore[no-any-return,unused-ignore]


def _bundle_dir() -> Path | None:
    frozen_dir = getattr(sys, "_MEIPASS", None)
    return Path(frozen_dir) if frozen_dir else None


def candidate_paths() -> list[str]:
    """Every place mod_spatialite may be, most specific first."""
    candidates: list[str] = []
    explicit = os.environ.get("SPATIALITE_PATH")
    if explicit:
        candidates.append(explicit)
    bundle = _bundle_dir()
    if bundle is not None:
        candidates.extend(str(bundle / name) for name in _LIBRARY_NAMES)
        candidates.extend(str(bundle / "lib" / name) for name in _LIBRARY_NAMES)
    candidates.extend(STANDARD_LOCATIONS)
    return candidates


def find_spatialite() -> str:
    """Path of the first mod_spatialite that exists, or SpatialiteNotFound with a hint."""
    explicit = os.environ.get("SPATIALITE_PATH")
    if explicit and not Path(explicit).exists():
        raise SpatialiteNotFound(
            f"SPATIALITE_PATH={explicit!r} does not exist; point it at mod_spatialite or unset it"
        )
    for path in candidate_paths():
        if Path(path).exists():
            return path
    raise SpatialiteNotFound(
        "mod_spatialite not found; install libsqlite3-mod-spatialite (Debian/Ubuntu), "
        "libspatialite (Homebrew) or OSGeo4W (Windows), or set SPATIALITE_PATH"
    )


def load_extension(conn: Any) -> None:
    """Load mod_spatialite into conn; raise SpatialiteNotFound with the path when it fails."""
    path = find_spatialite()
    conn.enable_load_extension(True)
    try:
        conn.load_extension(path)
    except Exception as exc:
        raise SpatialiteNotFound(f"mod_spatialite at {path} failed to load: {exc}") from exc
    finally:
        conn.enable_load_extension(False)


def load_spatialite(conn: Any) -> None:
    """Load mod_spatialite into a writable conn and create the spatial metadata tables once."""
    load_extension(conn)
    has_metadata = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spatial_ref_sys'"
    ).fetchone()
    if not has_metadata:
        # 'WGS84' creates only the SRIDs we use: much faster and smaller than the full catalogue.
        conn.execute("SELECT InitSpatialMetadata(1, 'WGS84')")


def connect(path: str | os.PathLike[str], *, read_only: bool = False) -> Any:
    """A SQLite connection with SpatiaLite loaded, in autocommit mode (we issue BEGIN ourselves)."""
    sqlite = sqlite_module()
    if read_only:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if read_only:
        load_extension(conn)
    else:
        load_spatialite(conn)
    return conn

