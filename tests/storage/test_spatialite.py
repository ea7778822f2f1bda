"""Locating mod_spatialite and opening connections that have it loaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from storage import spatialite
from storage.spatialite import SpatialiteNotFound


@pytest.fixture
def real_library(monkeypatch: pytest.MonkeyPatch) -> str:
    """The library this machine really has, found with no override in play."""
    monkeypatch.delenv("SPATIALITE_PATH", raising=False)
    monkeypatch.delattr(sys, "_MEIPASS", raising=False)
    return spatialite.find_spatialite()


def test_spatialite_path_to_missing_file_raises_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, real_library: str
) -> None:
    missing = tmp_path / "nowhere" / "mod_spatialite.so"
    monkeypatch.setenv("SPATIALITE_PATH", str(missing))
    with pytest.raises(SpatialiteNotFound, match="SPATIALITE_PATH") as excinfo:
        spatialite.find_spatialite()
    assert str(missing) in str(excinfo.value)


def test_spatialite_path_to_real_library_is_used_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, real_library: str
) -> None:
    # A link in a folder no standard location names proves the variable, not a fallback, was used.
    # (The file name stays mod_spatialite: SQLite derives the init symbol from it.)
    (tmp_path / "custom").mkdir()
    explicit = tmp_path / "custom" / "mod_spatialite.so"
    explicit.symlink_to(real_library)
    monkeypatch.setenv("SPATIALITE_PATH", str(explicit))
    assert spatialite.find_spatialite() == str(explicit)
    conn = spatialite.connect(tmp_path / "explicit.sqlite")
    try:
        assert conn.execute("SELECT spatialite_version()").fetchone()[0]
    finally:
        conn.close()


def test_pyinstaller_bundle_dir_comes_before_standard_locations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, real_library: str
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "mod_spatialite.so").symlink_to(real_library)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    assert real_library in spatialite.STANDARD_LOCATIONS
    assert spatialite.find_spatialite() == str(bundle / "mod_spatialite.so")


def test_no_candidate_found_says_which_package_to_install(
    monkeypatch: pytest.MonkeyPatch, real_library: str
) -> None:
    monkeypatch.setattr(spatialite, "STANDARD_LOCATIONS", ())
    with pytest.raises(SpatialiteNotFound, match="install libsqlite3-mod-spatialite"):
        spatialite.find_spatialite()


def test_sqlite_module_can_load_extensions() -> None:
    module = spatialite.sqlite_module()
    assert hasattr(module.Connection, "enable_load_extension")
    assert hasattr(module.Connection, "load_extension")


def test_connect_returns_connection_with_spatialite_loaded(tmp_path: Path) -> None:
    conn = spatialite.connect(tmp_path / "plain.sqlite")
    try:
        version = conn.execute("SELECT spatialite_version()").fetchone()[0]
        assert isinstance(version, str)
        assert version
        # The spatial metadata is created once, so geometry columns can be added straight away.
        assert conn.execute("SELECT count(*) FROM spatial_ref_sys WHERE srid = 4326").fetchone()[0] == 1
    finally:
        conn.close()
