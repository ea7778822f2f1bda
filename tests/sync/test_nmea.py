"""NMEA 0183 parsing with real sentences: checksums, talkers, RMC+GGA merging, validity, serial."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.positions import Fix
from sync.gps.nmea import NmeaParser, NmeaStats, checksum, parse_file, parse_lines, read_serial, with_checksum

# The classic examples (NMEA FAQ / gpsd documentation), checksums as published.
CLASSIC_RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
CLASSIC_GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_checksums_of_published_sentences() -> None:
    assert checksum(CLASSIC_RMC[1:-3]) == "6A"
    assert checksum(CLASSIC_GGA[1:-3]) == "47"
    assert checksum("GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E") == "68"
    assert checksum("GPGGA,092725.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,") == "5B"  # u-blox


def test_classic_rmc_and_gga_make_one_fix() -> None:
    parser = NmeaParser("gps-1", "truck-7")
    assert parser.feed(CLASSIC_RMC) == []  # waits for the GGA of the same second
    assert parser.feed(CLASSIC_GGA + "\r\n") == [Fix(
        device_id="gps-1", fix_time=utc(1994, 3, 23, 12, 35, 19), lat=48.1173, lon=11.5166667, vehicle_id="truck-7",
        speed_kph=41.485,  # 22.4 knots
        course=84.4, altitude=545.4, accuracy=4.5,  # HDOP 0.9 x 5 m
        attributes={"satellites": 8, "hdop": 0.9, "fix_quality": 1},
    )]
    assert parser.flush() == []
    assert parser.stats == NmeaStats(lines=2, sentences=2, fixes=1)


def test_southern_and_western_hemispheres() -> None:
    fixes = list(parse_lines([
        "$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68",
        "$GPRMC,081836,A,3751.65,S,14507.36,E,000.0,360.0,130998,011.3,E*62",
    ], "gps"))
    assert fixes == [
        Fix("gps", utc(1994, 11, 19, 22, 54, 46), 49.2741667, -123.1853333, None, 0.926, 54.7),
        Fix("gps", utc(1998, 9, 13, 8, 18, 36), -37.8608333, 145.1226667, None, 0.0, 360.0),
    ]


# A multi-GNSS receiver's output (u-blox style), with every case the parser must handle.
STREAM = [
    "$GNGGA,092725.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,*45",  # GGA before RMC
    "$GNRMC,092725.00,A,4717.11399,N,00833.91590,E,0.004,77.52,091202,,,A*4A",
    "$GLGSV,1,1,04,65,45,120,30,66,30,200,28,72,10,300,,73,60,045,35*6A",  # satellites in view: ignored
    "$GNRMC,092726.00,V,,,,,,,091202,,,N*63",  # receiver says: no fix
    "$GNGGA,092726.00,,,,,0,00,99.99,,,,,,*70",
    "$GNRMC,092727.00,A,4717.11500,N,00833.91700,E,10.0,90.0,091202,,,A*4E",
    "$GNGGA,092727.00,4717.11500,N,00833.91700,E,0,00,99.99,,,,,,*4D",  # fix quality 0 overrides RMC A
    "$GNRMC,092727.50,A,4717.11600,N,00833.91800,E,10.0,90.0,091202,,,A*4F",  # bad checksum (is 41)
    "$GNRMC,092728.00,A,4717.12000,N,00833.92000,E,12.5,91.5,091202,,,A*40",  # RMC without GGA
    "$GNGGA,092729.00,4717.13000,N,00833.93000,E,2,12,0.70,501.2,M,48.0,M,,*4D",  # GGA without RMC
    "$GPGST,092730.00,1.2,3.0,2.0,45.0,1.5,2.0,3.5*6B",  # 1.5 m / 2.0 m lat/lon error
    "$GARMC,092730.00,A,4717.14000,N,00833.94000,E,5.0,180.0,091202,,,D*44",  # Galileo talker
    "$GBGGA,092730.00,4717.14000,N,00833.94000,E,2,10,0.80,502.0,M,48.0,M,,*45",  # BeiDou talker
    "$GNRMC,092731.00,A,4717.15000,N,00833.95000,E,5.0,180.0,091202,,,A",  # no checksum at all
    "garbage without a dollar",
]

EXPECTED = [
    Fix("gps-2", utc(2002, 12, 9, 9, 27, 25), 47.2852332, 8.565265, None, 0.007, 77.52, 499.6, 5.05,
        {"satellites": 8, "hdop": 1.01, "fix_quality": 1}),
    Fix("gps-2", utc(2002, 12, 9, 9, 27, 28), 47.2853333, 8.5653333, None, 23.15, 91.5),
    Fix("gps-2", utc(2002, 12, 9, 9, 27, 29), 47.2855, 8.5655, None, None, None, 501.2, 3.5,
        {"satellites": 12, "hdop": 0.7, "fix_quality": 2}),
    Fix("gps-2", utc(2002, 12, 9, 9, 27, 30), 47.2856667, 8.5656667, None, 9.26, 180.0, 502.0, 2.5,
        {"satellites": 10, "hdop": 0.8, "fix_quality": 2}),
]


def test_multi_gnss_stream_gives_exactly_the_valid_fixes() -> None:
    parser = NmeaParser("gps-2")
    assert list(parse_lines(STREAM, "gps-2", parser=parser)) == EXPECTED
    assert parser.stats == NmeaStats(lines=15, sentences=12, bad_checksum=1, missing_checksum=1, malformed=1,
                                     ignored=1, fixes=4, no_fix=2)


def test_fixes_come_as_soon_as_the_epoch_is_complete() -> None:
    parser = NmeaParser("gps-2")
    out = [parser.feed(line) for line in STREAM]
    assert out[1] == EXPECTED[:1]  # RMC completes the GGA that came first
    assert out[9] == [EXPECTED[1]]  # the RMC-only epoch ends when the next epoch starts
    assert out[10] == [EXPECTED[2]]
    assert out[12] == [EXPECTED[3]]  # GST + RMC + GGA
    assert parser.flush() == []


def test_gga_only_before_any_date_is_not_a_fix() -> None:
    parser = NmeaParser("gps")
    assert list(parse_lines(["$GNGGA,092729.00,4717.13000,N,00833.93000,E,2,12,0.70,501.2,M,48.0,M,,*4D"],
                            "gps", parser=parser)) == []
    assert parser.stats.undated == 1


def test_gga_only_receiver_rolls_over_midnight() -> None:
    lines = [with_checksum("GPRMC,235959,A,4807.038,N,01131.000,E,0.0,0.0,311224,,"),
             with_checksum("GPGGA,235959,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
             with_checksum("GPGGA,000000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")]
    times = [f.fix_time for f in parse_lines(lines, "gps")]
    assert times == [utc(2024, 12, 31, 23, 59, 59), utc(2025, 1, 1, 0, 0, 0)]


def test_bytes_and_noise_before_the_dollar() -> None:
    parser = NmeaParser("gps")
    parser.feed(b"\x00\xff" + CLASSIC_RMC.encode() + b"\r\n")
    assert len(parser.feed(CLASSIC_GGA.replace("*47", "*47\n"))) == 1
    assert parser.feed("$gprmc,1*ff") == []  # lower-case hex is fine, the checksum itself is wrong
    assert parser.stats.bad_checksum == 1


def test_malformed_fields_are_counted_not_raised() -> None:
    parser = NmeaParser("gps")
    for body in ["GPRMC,123519,A,48x7.038,N,01131.000,E,022.4,084.4,230394,003.1,W",  # bad latitude
                 "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,320394,003.1,W",  # 32 March
                 "GPRMC,993519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W",  # hour 99
                 "GPRMC,123519,A,4807.038,Q,01131.000,E,022.4,084.4,230394,003.1,W",  # hemisphere Q
                 "GPRMC,123519,A",  # truncated
                 "GPGGA,123519,9107.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"]:  # latitude 91
        assert parser.feed(with_checksum(body)) == []
    assert parser.flush() == []
    assert parser.stats.malformed == 6 and parser.stats.fixes == 0


def test_parse_file(tmp_path: Path) -> None:
    log = tmp_path / "drive.nmea"
    log.write_bytes(("\r\n".join(STREAM) + "\r\n").encode() + b"\xfe\xfe binary junk\r\n")
    assert list(parse_file(log, "gps-2")) == EXPECTED


def test_read_serial_over_a_pty() -> None:
    master, slave = os.openpty()
    stop = threading.Event()
    fixes: list[Fix] = []
    parser = NmeaParser("usb-gps")

    def consume() -> None:
        for fix in read_serial(os.ttyname(slave), 9600, parser=parser, stop=stop, timeout=0.05):
            fixes.append(fix)

    worker = threading.Thread(target=consume, daemon=True)
    try:
        worker.start()
        # pyserial empties the input buffer when it opens the port: like a receiver that was
        # already talking, send satellites-in-view until the parser hears them.
        deadline = time.monotonic() + 10
        while parser.stats.lines == 0 and time.monotonic() < deadline:
            os.write(master, (STREAM[2] + "\r\n").encode())
            time.sleep(0.02)
        os.write(master, "".join(line + "\r\n" for line in STREAM[:2] + STREAM[8:10]).encode())
        while len(fixes) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        worker.join(10)
        assert not worker.is_alive()
        # The last epoch (GGA only) is flushed when the receiver goes quiet for the read timeout.
        assert fixes == [replace(f, device_id="usb-gps") for f in EXPECTED[:3]]
    finally:
        stop.set()
        worker.join(5)
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("line", ["", "   ", "\r\n"])
def test_blank_lines_are_not_counted(line: str) -> None:
    parser = NmeaParser("gps")
    assert parser.feed(line) == []
    assert parser.stats == NmeaStats()
