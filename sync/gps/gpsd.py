"""A gpsd client (JSON protocol over TCP, port 2947): TPV reports with a 2D/3D fix become Fixes.

It sends `?WATCH={"enable":true,"json":true}` and reads one JSON object per line. TPV reports
with `mode` >= 2, a time and a position become fixes: speed m/s -> km/h, `track` -> course,
altitude from `altMSL` (or the older `alt`, or `altHAE`), accuracy from `eph` (or the larger
of `epx`/`epy`). Other classes (VERSION, DEVICES, WATCH, SKY ...) are read and ignored; SKY's
satellite count is attached to the next fix. With `reconnect=True` a lost connection is
re-established with jittered exponential backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.positions import Fix
from sync.gps.geo import MPS_TO_KPH, valid_lon_lat

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2947
WATCH_COMMAND = b'?WATCH={"enable":true,"json":true}\n'


@dataclass
class GpsdStats:
    reports: int = 0
    tpv: int = 0
    fixes: int = 0
    no_fix: int = 0  # TPV with mode < 2 or without time/position
    malformed: int = 0
    connections: int = 0


def _number(report: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = report.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def parse_time(value: Any) -> float | None:
    """gpsd's ISO 8601 UTC time ("2005-06-08T10:34:48.283Z") to Unix seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return round(moment.timestamp(), 3)


def tpv_to_fix(report: Mapping[str, Any], device_id: str, vehicle_id: str | None = None,
               extra: Mapping[str, Any] | None = None) -> Fix | None:
    """A Fix from one TPV report, or None when it carries no usable 2D/3D fix."""
    mode = report.get("mode")
    if not isinstance(mode, int) or isinstance(mode, bool) or mode < 2:
        return None
    fix_time = parse_time(report.get("time"))
    lat, lon = _number(report, "lat"), _number(report, "lon")
    if fix_time is None or lat is None or lon is None or not valid_lon_lat(lon, lat):
        return None
    speed = _number(report, "speed")
    accuracy = _number(report, "eph")
    if accuracy is None:
        axes = [v for v in (_number(report, "epx"), _number(report, "epy")) if v is not None]
        accuracy = max(axes) if axes else None
    attributes: dict[str, Any] = {"mode": mode}
    if isinstance(report.get("device"), str):
        attributes["device"] = report["device"]
    attributes.update(extra or {})
    return Fix(
        device_id, fix_time, lat, lon, vehicle_id,
        speed_kph=None if speed is None else round(speed * MPS_TO_KPH, 3),
        course=_number(report, "track"),
        altitude=_number(report, "altMSL", "alt", "altHAE") if mode >= 3 else None,
        accuracy=None if accuracy is None else round(accuracy, 2),
        attributes=attributes,
    )


class GpsdClient:
    """Iterate over it for fixes. Blocking; run it on a worker thread (or feed a Recorder)."""

    def __init__(self, device_id: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 vehicle_id: str | None = None, timeout: float = 5.0, reconnect: bool = False,
                 min_backoff: float = 0.5, max_backoff: float = 30.0, stop: threading.Event | None = None,
                 rng: random.Random | None = None) -> None:
        self.device_id = device_id
        self.vehicle_id = vehicle_id
        self.host, self.port = host, port
        self.timeout = timeout
        self.reconnect = reconnect
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.stop_event = stop if stop is not None else threading.Event()
        self.stats = GpsdStats()
        self._rng = rng or random.Random()
        self._sock: socket.socket | None = None

    def stop(self) -> None:
        self.stop_event.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __iter__(self) -> Iterator[Fix]:
        attempts = 0
        while not self.stop_event.is_set():
            try:
                for fix in self._session():
                    attempts = 0
                    yield fix
            except OSError as exc:
                log.info("gpsd at %s:%s: %s", self.host, self.port, exc)
            if not self.reconnect:
                return
            delay = min(self.max_backoff, self.min_backoff * 2 ** attempts) * self._rng.uniform(0.5, 1.0)
            attempts += 1
            self.stop_event.wait(delay)

    def _session(self) -> Iterator[Fix]:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock = sock
        self.stats.connections += 1
        extra: dict[str, Any] = {}
        try:
            sock.sendall(WATCH_COMMAND)
            sock.settimeout(self.timeout)
            buffer = b""
            while not self.stop_event.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue  # a quiet receiver; check for stop and keep waiting
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    fix = self._line(line, extra)
                    if fix is not None:
                        yield fix
        finally:
            self._sock = None
            sock.close()

    def _line(self, line: bytes, extra: dict[str, Any]) -> Fix | None:
        line = line.strip()
        if not line:
            return None
        self.stats.reports += 1
        try:
            report = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.stats.malformed += 1
            return None
        if not isinstance(report, dict):
            self.stats.malformed += 1
            return None
        cls = report.get("class")
        if cls == "SKY":
            used = report.get("uSat")
            if not isinstance(used, int) and isinstance(report.get("satellites"), list):
                used = sum(1 for s in report["satellites"] if isinstance(s, dict) and s.get("used"))
            if isinstance(used, int):
                extra["satellites"] = used
            return None
        if cls != "TPV":
            return None
        self.stats.tpv += 1
        fix = tpv_to_fix(report, self.device_id, self.vehicle_id, extra)
        if fix is None:
            self.stats.no_fix += 1
        else:
            self.stats.fixes += 1
        return fix


def read_gpsd(device_id: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
              vehicle_id: str | None = None, **options: Any) -> Iterator[Fix]:
    """Fixes from gpsd until the connection ends (or forever with reconnect=True)."""
    return iter(GpsdClient(device_id, host=host, port=port, vehicle_id=vehicle_id, **options))
