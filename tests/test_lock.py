"""The lock is the only source of installed versions: uv.lock, its exports in requirements/ and
pyproject.toml agree, and the venv the tests run in holds exactly the locked versions."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked_pins(path: Path) -> dict[str, str]:
    """name -> version for the requirements whose environment marker holds on this machine."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith((" ", "#")) or "==" not in line:
            continue
        requirement, _, marker = line.rstrip(" \\").partition(";")
        name, _, version = requirement.partition("==")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


def test_lock_exports_and_pyproject_agree() -> None:
    """Editing a dependency in pyproject.toml without `make lock` fails here (offline check)."""
    uv = Path(sys.executable).parent / "uv"
    result = subprocess.run(
        ["bash", "scripts/lock.sh", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "UV": str(uv), "HOME": str(ROOT / ".venv")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_export_pins_exact_versions_with_hashes() -> None:
    for name in ("dev.txt", "server.txt", "desktop.txt"):
        lines = (ROOT / "requirements" / name).read_text().splitlines()
        requirements = [line for line in lines if line and not line.startswith((" ", "#"))]
        assert len(requirements) > 10, name
        for requirement in requirements:
            assert "==" in requirement and requirement.endswith("\\"), f"{name}: {requirement} is not pinned"
        assert sum("--hash=sha256:" in line for line in lines) >= len(requirements)


def test_the_venv_holds_exactly_the_locked_versions() -> None:
    pins = locked_pins(ROOT / "requirements" / "dev.txt")
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
    }
    wrong = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert not wrong, f"(locked, installed): {wrong}"
    unlocked = set(installed) - set(pins) - {"webhost-fleet", "pip"}
    assert not unlocked, f"installed but not in the lock: {sorted(unlocked)}"


def test_bootstrap_and_the_image_install_from_the_lock_only() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes --no-deps" in bootstrap and "-r requirements/dev.txt" in bootstrap
    assert ".[dev]" not in bootstrap
    dockerfile = (ROOT / "packaging" / "Dockerfile").read_text()
    assert "requirements/server.txt" in dockerfile and "--require-hashes" in dockerfile
