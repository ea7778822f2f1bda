"""`make demo HEADLESS=1` as a newcomer runs it: the server comes up and the demo fleet moves."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from server_stub import demo

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def stop_demo(process: subprocess.Popen[str]) -> str:
    """Ctrl-C, as a person would; everything the demo printed."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output


def test_make_demo_headless_serves_health_and_the_fleet_reports_positions(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WEBHOST_DEMO_DIR": str(tmp_path), "PORT": str(port)}
    process = subprocess.Popen(["make", "-s", "demo", "HEADLESS=1"], cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        health = wait_for(lambda: httpx.get(f"{url}/health", timeout=2).json(), 120, "the demo server answering")
        assert health["status"] == "ok" and health["database"]["status"] == "ok"
        token = httpx.post(f"{url}/api/v1/auth/token", json={"email": demo.USERS["dispatcher"],
                                                              "password": demo.PASSWORD}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        vehicles = httpx.get(f"{url}/api/v1/vehicles", headers=auth).json()["data"]
        assert len(vehicles) == demo.VEHICLE_COUNT
        first = vehicles[0]["id"]

        def positions() -> list[dict[str, object]]:
            response = httpx.get(f"{url}/api/v1/positions", params={"vehicle_id": first, "format": "json"},
                                 headers=auth, timeout=5)
            return list(response.json()["data"])

        wait_for(lambda: len(positions()) >= 2, 60, "two positions of a demo vehicle arriving")
        track = positions()
        assert {fix["vehicle_id"] for fix in track} == {first}
        assert len({(fix["lon"], fix["lat"]) for fix in track}) >= 2, "the demo vehicle is not moving"
    finally:
        output = stop_demo(process)
    assert "dispatcher@demo.webhost.example" in output and "/admin" in output


def test_make_demo_opens_the_desktop_app_signed_in_as_the_dispatcher(tmp_path: Path) -> None:
    """The full `make demo`: the desktop app (offscreen here) signs in with the printed dispatcher
    account by itself and syncs the demo fleet into its own profile store."""
    port = free_port()
    home = tmp_path / "home"
    env = {**os.environ, "WEBHOST_DEMO_DIR": str(tmp_path / "demo"), "PORT": str(port), "QT_QPA_PLATFORM": "offscreen",
           "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_STATE_HOME": str(home / "state"), "XDG_CACHE_HOME": str(home / "cache")}
    process = subprocess.Popen(["make", "-s", "demo"], cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    profile = tmp_path / "demo" / "demo" / "desktop-dispatcher"  # WEBHOST_DEMO_DIR/demo holds the demo's files
    try:
        settings = wait_for(lambda: (profile / "settings.json").is_file() and (profile / "settings.json").read_text(),
                            120, "the desktop app signing in")
        assert demo.USERS["dispatcher"] in settings and '"role": "dispatcher"' in settings

        def synced_vehicles() -> int:
            if not (profile / "fleet.sqlite").is_file():
                return 0
            connection = sqlite3.connect(f"file:{profile / 'fleet.sqlite'}?mode=ro", uri=True, timeout=5)
            try:
                return int(connection.execute("SELECT count(*) FROM vehicles").fetchone()[0])
            except sqlite3.OperationalError:  # the app has not created its tables yet
                return 0
            finally:
                connection.close()

        wait_for(lambda: synced_vehicles() == demo.VEHICLE_COUNT, 120, "the demo fleet syncing into the desktop app")
    finally:
        output = stop_demo(process)
    assert "desktop app: signed in as the dispatcher" in output
