"""The gpsd client against a small fake gpsd (a protocol peer speaking gpsd's JSON over TCP)."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from storage.positions import Fix
from sync.gps.gpsd import GpsdClient, parse_time, read_gpsd, tpv_to_fix

VERSION = {"class": "VERSION", "release": "3.25", "rev": "3.25", "proto_major": 3, "proto_minor": 15}
DEVICES = {"class": "DEVICES", "devices": [{"class": "DEVICE", "path": "/dev/ttyACM0", "driver": "u-blox"}]}
WATCH = {"class": "WATCH", "enable": True, "json": True, "nmea": False}
SKY = {"class": "SKY", "device": "/dev/ttyACM0", "hdop": 0.9, "nSat": 14, "uSat": 9}
TPV_NO_FIX = {"class": "TPV", "device": "/dev/ttyACM0", "mode": 1, "time": "2024-05-01T12:00:00.000Z"}
TPV_3D = {"class": "TPV", "device": "/dev/ttyACM0", "mode": 3, "time": "2024-05-01T12:00:01.000Z",
          "ept": 0.005, "lat": 52.520008, "lon": 13.404954, "altHAE": 81.3, "altMSL": 37.6, "alt": 37.6,
          "epx": 3.1, "epy": 4.2, "epv": 7.5, "track": 93.4, "speed": 12.5, "climb": 0.1, "eph": 5.2}
TPV_2D = {"class": "TPV", "device": "/dev/ttyACM0", "mode": 2, "time": "2024-05-01T12:00:02.250Z",
          "lat": 52.52005, "lon": 13.40515, "epx": 6.0, "epy": 8.5, "speed": 0.0, "alt": 99.0}
TPV_NO_TIME = {"class": "TPV", "device": "/dev/ttyACM0", "mode": 3, "lat": 52.5, "lon": 13.4}


def t(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp()


FIX_3D = Fix("gpsd-1", t("2024-05-01T12:00:01Z"), 52.520008, 13.404954, "van-2", speed_kph=45.0, course=93.4,
             altitude=37.6, accuracy=5.2, attributes={"mode": 3, "device": "/dev/ttyACM0", "satellites": 9})
FIX_2D = Fix("gpsd-1", t("2024-05-01T12:00:02.250Z"), 52.52005, 13.40515, "van-2", speed_kph=0.0, course=None,
             altitude=None, accuracy=8.5, attributes={"mode": 2, "device": "/dev/ttyACM0", "satellites": 9})


class FakeGpsd:
    """Accepts connections; on each, sends the banner, waits for ?WATCH, then plays a script."""

    def __init__(self, scripts: list[list[Any]]) -> None:
        self.scripts = scripts
        self.commands: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.connections = 0
        self.done = threading.Event()

    def _serve(self) -> None:
        for script in self.scripts:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(json.dumps(VERSION).encode() + b"\r\n")
                command = b""
                while not command.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    command += chunk
                self.commands.append(command)
                conn.sendall(json.dumps(DEVICES).encode() + b"\r\n" + json.dumps(WATCH).encode() + b"\r\n")
                for item in script:
                    line = item if isinstance(item, bytes) else json.dumps(item).encode()
                    conn.sendall(line + b"\r\n")
                if script and script[-1] == b"HOLD":  # keep the connection open until the test ends
                    self.done.wait(10)
        self.done.wait(10)

    def __enter__(self) -> FakeGpsd:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(5)


def test_tpv_reports_become_fixes() -> None:
    script = [SKY, TPV_NO_FIX, b"{not json", [1, 2], TPV_3D, TPV_NO_TIME, {"class": "PPS"}, TPV_2D]
    with FakeGpsd([script]) as gpsd:
        client = GpsdClient("gpsd-1", port=gpsd.port, vehicle_id="van-2", timeout=5)
        fixes = list(client)
    assert gpsd.commands == [b'?WATCH={"enable":true,"json":true}\n']
    assert fixes == [FIX_3D, FIX_2D]
    assert (client.stats.tpv, client.stats.fixes, client.stats.no_fix, client.stats.malformed) == (4, 2, 2, 2)


def test_accuracy_falls_back_to_the_larger_axis_error_and_altitude_to_alt() -> None:
    report = {**TPV_3D, "eph": None, "altMSL": None}
    fix = tpv_to_fix(report, "d")
    assert fix is not None and fix.accuracy == 4.2 and fix.altitude == 37.6
    assert tpv_to_fix({**TPV_3D, "lat": 91.0}, "d") is None
    assert tpv_to_fix({**TPV_3D, "mode": True}, "d") is None
    assert tpv_to_fix({**TPV_3D, "time": "2024-05-01T12:00:01"}, "d") is None  # no zone: not trusted


def test_parse_time() -> None:
    assert parse_time("2005-06-08T10:34:48.283Z") == pytest.approx(1118227488.283)
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


def test_reconnects_after_gpsd_restarts() -> None:
    first = [TPV_3D]  # then the connection drops
    second = [TPV_2D, b"HOLD"]
    with FakeGpsd([first, second]) as gpsd:
        client = GpsdClient("gpsd-1", port=gpsd.port, vehicle_id="van-2", reconnect=True,
                            min_backoff=0.01, max_backoff=0.05)
        fixes = []
        for fix in client:
            fixes.append(fix)
            if len(fixes) == 2:
                client.stop()
        # No SKY report came on either connection, so the fixes have no satellite count.
        assert fixes == [replace(FIX_3D, attributes={"mode": 3, "device": "/dev/ttyACM0"}),
                         replace(FIX_2D, attributes={"mode": 2, "device": "/dev/ttyACM0"})]
        assert gpsd.connections == 2 and client.stats.connections == 2


def test_no_gpsd_listening_ends_the_iteration_without_reconnect() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert list(read_gpsd("d", port=port, timeout=1)) == []
