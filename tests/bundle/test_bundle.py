"""The desktop bundle is built with the real PyInstaller spec and its `--self-test` run the way a
user would: from a folder outside the repository, with a bare environment (no venv on PATH, no
PYTHONPATH), so every check must be satisfied by what the bundle itself carries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "packaging" / "webhost-desktop.spec"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    command = [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
        "--distpath", str(dist), "--workpath", str(ROOT / "build" / "pyinstaller"), str(SPEC),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    executable = dist / "webhost-desktop" / "webhost-desktop"
    assert executable.is_file() and os.access(executable, os.X_OK)
    return executable.parent


def run_bundled(bundle: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bare_env = {
        "HOME": str(workdir),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
        "XDG_CACHE_HOME": str(workdir / "cache"),
    }
    return subprocess.run(
        [str(bundle / "webhost-desktop"), *args],
        cwd=workdir, env=bare_env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
@pytest.mark.bundle
def test_the_bundle_passes_its_self_test_outside_the_repository(bundle: Path, tmp_path: Path) -> None:
    assert ROOT not in tmp_path.parents
    result = run_bundled(bundle, tmp_path, "--self-test")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert lines["ok   mod_spatialite loads"].startswith(str(bundle))  # the bundled copy, not the OS one
    assert str(bundle) in lines["ok   Leaflet assets present"]
    assert "central Helsinki" in lines["ok   offline tiles present"]
    assert "ok   store is writable" in lines
    assert "0 network requests" in lines["ok   map page loads without network"]
    assert any(key.endswith("keyring backend") for key in lines)


@pytest.mark.slow
@pytest.mark.bundle
def test_the_bundle_carries_mod_spatialite_and_its_libraries(bundle: Path) -> None:
    internal = bundle / "_internal"
    names = {path.name for path in internal.iterdir()}
    assert "mod_spatialite.so" in names
    for dependency in ("libgeos_c", "libproj", "librttopo", "libxml2"):
        assert any(name.startswith(dependency) for name in names), dependency
    assert (internal / "resources" / "demo.mbtiles").is_file()
    assert (internal / "maps" / "bridge.js").is_file()


@pytest.mark.slow
@pytest.mark.bundle
def test_the_bundle_answers_help_with_the_documented_options(bundle: Path, tmp_path: Path) -> None:
    result = run_bundled(bundle, tmp_path, "--help")
    assert result.returncode == 0
    for option in ("--profile", "--server", "--field", "--self-test"):
        assert option in result.stdout
