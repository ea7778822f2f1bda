"""Screenshots of the dispatcher window (the demo fleet on the offline map) and the field window,
taken under a real X server (Xvfb when there is no DISPLAY) and kept in test-artifacts/. The
test checks what was drawn: tiles and markers through mapState(), and non-uniform pixels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def run_screenshots() -> dict[str, Any]:
    command = [sys.executable, "-m", "scripts.app_screenshots", "--out", str(ARTIFACTS)]
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    if not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            pytest.skip("no DISPLAY and no xvfb-run to make one")
        command = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", *command]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    parsed: dict[str, Any] = json.loads(last)
    return parsed


@pytest.mark.slow
def test_screenshots_show_the_fleet_on_offline_tiles() -> None:
    shots = run_screenshots()
    dispatcher, field = shots["dispatcher"], shots["field"]
    for shot in (dispatcher, field):
        path = Path(shot["path"])
        assert path.is_file() and path.stat().st_size > 50_000
        assert shot["map"]["tilesLoaded"] >= 4 and shot["map"]["tileErrors"] == 0
        assert shot["network_requests"] == []
        assert shot["pixels"]["distinct_colours"] > 50  # a blank or failed map has a handful
    assert dispatcher["map"]["markers"] == dispatcher["vehicles_rows"] == 13
    assert dispatcher["map"]["byState"] == {"moving": 6, "stopped": 4, "offline": 2, "invalid": 1}
    assert dispatcher["map"]["layers"]["routes"] == 3 and dispatcher["map"]["layers"]["geofences"] == 3
    assert dispatcher["map"]["layers"]["track"] > 10 and dispatcher["map"]["cursor"] > 0
    assert dispatcher["map_pixels"]["distinct_colours"] > 50
    assert field["map"]["readOnly"] is True and field["edit_buttons_visible"] is False
    assert "Van 01 left route corridor Station - Hakaniemi" in field["alerts"]
    assert field["speed"].endswith("km/h") and field["outbox"].startswith("Outbox: ")
