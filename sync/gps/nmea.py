"""NMEA 0183 parsing: RMC + GGA (+ GST) sentences of one UTC time merged into one Fix.

- Every sentence's checksum is verified; a bad or missing one is skipped and counted.
- Talkers GP (GPS), GL (GLONASS), GN (multi-GNSS), GA (Galileo), GB/BD (BeiDou), GQ (QZSS) and
  GI (NavIC) are read alike; other sentences (GSV, GSA, VTG, proprietary ...) are ignored.
- An epoch (one UTC time) becomes a fix once it has an RMC and a GGA, or when the next epoch
  starts (receivers that send only one of them), or on flush(). An RMC with status V (or mode
  N), or a GGA with fix quality 0, makes the whole epoch "no fix".
- A GGA-only epoch takes its date from the last RMC seen; without one it cannot be dated.
- Accuracy is the GST horizontal error when the receiver sends GST, else HDOP x 5 m.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage.positions import Fix
from sync.gps.geo import KNOTS_TO_KPH

TALKERS = frozenset({"GP", "GL", "GN", "GA", "GB", "BD", "GQ", "GI"})
SENTENCES = frozenset({"RMC", "GGA", "GST"})
DEFAULT_METRES_PER_HDOP = 5.0


class NmeaError(ValueError):
    """A sentence that cannot be read."""


@dataclass
class NmeaStats:
    lines: int = 0
    sentences: int = 0  # checksum verified
    bad_checksum: int = 0
    missing_checksum: int = 0
    malformed: int = 0
    ignored: int = 0  # other sentence types or talkers
    fixes: int = 0
    no_fix: int = 0  # epochs the receiver flagged invalid (RMC V, GGA quality 0)
    undated: int = 0  # GGA-only epochs before any RMC gave the date


def checksum(body: str) -> str:
    """The two-hex-digit XOR checksum of the characters between '$' and '*'."""
    value = 0
    for ch in body.encode("ascii", "replace"):
        value ^= ch
    return f"{value:02X}"


def with_checksum(body: str) -> str:
    """`$body*HH` (tests and the simulator's NMEA output)."""
    return f"${body}*{checksum(body)}"


def _float(value: str) -> float | None:
    if not value:
        return None
    try:
        result = float(value)
    except ValueError as exc:
        raise NmeaError(f"not a number: {value!r}") from exc
    if not math.isfinite(result):
        raise NmeaError(f"not a finite number: {value!r}")
    return result


def _int(value: str) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise NmeaError(f"not an integer: {value!r}") from exc


def _coordinate(value: str, hemisphere: str, degree_digits: int) -> float | None:
    """`ddmm.mmmm` / `dddmm.mmmm` plus N/S/E/W to signed decimal degrees."""
    if not value and not hemisphere:
        return None
    if hemisphere not in ("N", "S", "E", "W") or "." in value[:degree_digits] or len(value) < degree_digits + 2:
        raise NmeaError(f"bad coordinate {value!r} {hemisphere!r}")
    degrees = _int(value[:degree_digits])
    minutes = _float(value[degree_digits:])
    if degrees is None or minutes is None or degrees < 0 or not 0 <= minutes < 60:
        raise NmeaError(f"bad coordinate {value!r}")
    result = degrees + minutes / 60.0
    if result > (90 if degree_digits == 2 else 180):
        raise NmeaError(f"coordinate out of range {value!r}")
    return round(-result if hemisphere in ("S", "W") else result, 7)


def _time_of_day(value: str) -> float:
    """`hhmmss(.sss)` to seconds since midnight."""
    if len(value) < 6 or not value[:6].isdigit():
        raise NmeaError(f"bad time {value!r}")
    hours, minutes = int(value[0:2]), int(value[2:4])
    seconds = _float(value[4:]) or 0.0
    if hours > 23 or minutes > 59 or seconds >= 61:
        raise NmeaError(f"bad time {value!r}")
    return hours * 3600 + minutes * 60 + seconds


def _date(value: str) -> float:
    """`ddmmyy` to the Unix time of that midnight UTC (yy 80-99 is 19yy, else 20yy)."""
    if len(value) != 6 or not value.isdigit():
        raise NmeaError(f"bad date {value!r}")
    day, month, year = int(value[0:2]), int(value[2:4]), int(value[4:6])
    year += 1900 if year >= 80 else 2000
    try:
        return datetime(year, month, day, tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise NmeaError(f"bad date {value!r}") from exc


@dataclass
class _Epoch:
    time_field: str
    time_of_day: float
    rmc: dict[str, Any] | None = None
    gga: dict[str, Any] | None = None
    gst: dict[str, Any] | None = None
    invalid: bool = False


@dataclass
class NmeaParser:
    """Feed it lines; it returns the fixes they complete. One parser per receiver."""

    device_id: str
    vehicle_id: str | None = None
    metres_per_hdop: float = DEFAULT_METRES_PER_HDOP
    require_checksum: bool = True
    stats: NmeaStats = field(default_factory=NmeaStats)
    _epoch: _Epoch | None = field(default=None, init=False, repr=False)
    _last_date: float | None = field(default=None, init=False, repr=False)  # midnight of the last RMC date
    _last_time: float | None = field(default=None, init=False, repr=False)  # last fix time emitted
    _sends_gst: bool = field(default=False, init=False, repr=False)

    def feed(self, line: str | bytes) -> list[Fix]:
        """One line of receiver output (CR/LF and leading noise are fine)."""
        if isinstance(line, bytes):
            line = line.decode("ascii", "replace")
        line = line.strip()
        if not line:
            return []
        self.stats.lines += 1
        start = line.rfind("$")
        if start < 0:
            self.stats.malformed += 1
            return []
        sentence = line[start + 1:]
        star = sentence.rfind("*")
        if star < 0:
            if self.require_checksum:
                self.stats.missing_checksum += 1
                return []
            body = sentence
        else:
            body, given = sentence[:star], sentence[star + 1:star + 3]
            if given.upper() != checksum(body):
                self.stats.bad_checksum += 1
                return []
        self.stats.sentences += 1
        fields = body.split(",")
        address = fields[0]
        if len(address) != 5 or address[:2] not in TALKERS or address[2:] not in SENTENCES:
            self.stats.ignored += 1
            return []
        try:
            return self._sentence(address[2:], fields)
        except (NmeaError, IndexError):
            self.stats.malformed += 1
            return []

    def feed_many(self, lines: Iterable[str | bytes]) -> Iterator[Fix]:
        for line in lines:
            yield from self.feed(line)

    def flush(self) -> list[Fix]:
        """Finish the epoch in progress (end of a file, or a receiver gone quiet)."""
        epoch, self._epoch = self._epoch, None
        fix = self._finish(epoch) if epoch is not None else None
        return [fix] if fix is not None else []

    # -- sentences ----------------------------------------------------------------------------

    def _sentence(self, kind: str, f: list[str]) -> list[Fix]:
        if kind == "RMC":
            # RMC,time,status,lat,N,lon,E,speed_kn,course,ddmmyy,magvar,E[,mode[,navstatus]]
            time_field = f[1]
            status = f[2]
            mode = f[12] if len(f) > 12 else ""
            data: dict[str, Any] = {"valid": status == "A" and mode != "N"}
            if data["valid"]:
                data.update(
                    lat=_coordinate(f[3], f[4], 2), lon=_coordinate(f[5], f[6], 3),
                    speed_kn=_float(f[7]), course=_float(f[8]), date=_date(f[9]),
                )
                if data["lat"] is None or data["lon"] is None:
                    raise NmeaError("valid RMC without a position")
            elif f[9]:
                data["date"] = _date(f[9])
            return self._add(time_field, "rmc", data)
        if kind == "GGA":
            # GGA,time,lat,N,lon,E,quality,satellites,hdop,altitude,M,geoid,M,age,station
            quality = _int(f[6]) or 0
            data = {"valid": quality > 0, "fix_quality": quality, "satellites": _int(f[7]), "hdop": _float(f[8])}
            if quality > 0:
                data.update(lat=_coordinate(f[2], f[3], 2), lon=_coordinate(f[4], f[5], 3), altitude=_float(f[9]))
                if data["lat"] is None or data["lon"] is None:
                    raise NmeaError("GGA with a fix but without a position")
            return self._add(f[1], "gga", data)
        # GST,time,rms,semi-major,semi-minor,orientation,lat error,lon error,alt error (1-sigma metres)
        lat_err, lon_err = _float(f[6]), _float(f[7])
        accuracy = math.hypot(lat_err, lon_err) if lat_err is not None and lon_err is not None else None
        return self._add(f[1], "gst", {"valid": True, "accuracy": accuracy})

    def _add(self, time_field: str, kind: str, data: dict[str, Any]) -> list[Fix]:
        time_of_day = _time_of_day(time_field)
        out: list[Fix] = []
        epoch = self._epoch
        if epoch is not None and epoch.time_field != time_field:
            self._epoch = None
            fix = self._finish(epoch)
            if fix is not None:
                out.append(fix)
            epoch = None
        if epoch is None:
            epoch = self._epoch = _Epoch(time_field, time_of_day)
        if kind == "rmc" and data.get("date") is not None:
            self._last_date = data["date"]
        if not data["valid"]:
            epoch.invalid = True
        setattr(epoch, kind, data)
        if kind == "gst":
            self._sends_gst = True
        if epoch.rmc is not None and epoch.gga is not None and (epoch.gst is not None or not self._sends_gst):
            # Complete: RMC and GGA are in, and the GST too from a receiver known to send one.
            self._epoch = None
            fix = self._finish(epoch)
            if fix is not None:
                out.append(fix)
        return out

    def _finish(self, epoch: _Epoch) -> Fix | None:
        rmc, gga = epoch.rmc, epoch.gga
        if rmc is None and gga is None:
            return None  # a GST on its own
        if epoch.invalid:
            self.stats.no_fix += 1
            return None
        if rmc is not None:
            midnight = rmc["date"]
        elif self._last_date is not None:
            midnight = self._last_date
            # A GGA-only receiver past midnight: the date of the last RMC is a day behind.
            if self._last_time is not None and midnight + epoch.time_of_day < self._last_time - 43_200:
                midnight += 86_400
        else:
            self.stats.undated += 1
            return None
        fix_time = round(midnight + epoch.time_of_day, 3)
        source = gga if gga is not None else rmc
        assert source is not None
        lat, lon = (rmc["lat"], rmc["lon"]) if rmc is not None else (source["lat"], source["lon"])
        speed = round(rmc["speed_kn"] * KNOTS_TO_KPH, 3) if rmc is not None and rmc["speed_kn"] is not None else None
        course = rmc["course"] if rmc is not None else None
        attributes: dict[str, Any] = {}
        altitude = accuracy = None
        if gga is not None:
            altitude = gga.get("altitude")
            for key in ("satellites", "hdop", "fix_quality"):
                if gga.get(key) is not None:
                    attributes[key] = gga[key]
            if gga.get("hdop") is not None:
                accuracy = round(gga["hdop"] * self.metres_per_hdop, 2)
        if epoch.gst is not None and epoch.gst.get("accuracy") is not None:
            accuracy = round(epoch.gst["accuracy"], 2)
        self._last_time = fix_time
        self.stats.fixes += 1
        return Fix(self.device_id, fix_time, lat, lon, self.vehicle_id, speed, course, altitude, accuracy, attributes)


def parse_lines(lines: Iterable[str | bytes], device_id: str, *, vehicle_id: str | None = None,
                parser: NmeaParser | None = None) -> Iterator[Fix]:
    parser = parser if parser is not None else NmeaParser(device_id, vehicle_id)
    yield from parser.feed_many(lines)
    yield from parser.flush()


def parse_file(path: str | os.PathLike[str], device_id: str, *, vehicle_id: str | None = None,
               parser: NmeaParser | None = None) -> Iterator[Fix]:
    """Fixes from an NMEA log file (read lazily; bytes that are not ASCII are replaced)."""
    with open(path, "rb") as stream:
        yield from parse_lines(stream, device_id, vehicle_id=vehicle_id, parser=parser)


def read_serial(port: str, baud: int = 4800, device_id: str | None = None, *, vehicle_id: str | None = None,
                parser: NmeaParser | None = None, stop: threading.Event | None = None,
                timeout: float = 1.0) -> Iterator[Fix]:
    """Fixes from a receiver on a serial port (pyserial), until `stop` is set or the port goes away.

    A receiver that goes quiet for `timeout` seconds has its last epoch flushed, so a receiver
    that sends only RMC or only GGA does not hold its newest fix back."""
    import serial

    parser = parser if parser is not None else NmeaParser(device_id or port, vehicle_id)
    with serial.Serial(port, baud, timeout=timeout) as link:
        while stop is None or not stop.is_set():
            try:
                line = link.readline()
            except serial.SerialException:
                break
            if line:
                yield from parser.feed(line)
            else:
                yield from parser.flush()
    yield from parser.flush()
