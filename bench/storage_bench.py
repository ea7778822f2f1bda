"""Local store benchmark: outbox inserts, bbox over 1M positions, point-in-geofence over 20k fences.

Run: .venv/bin/python -m bench.storage_bench   (add --quick for a smaller run)
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from storage import Store, spatialite
from storage.positions import Fix

CENTER_LON, CENTER_LAT = 13.40, 52.52  # Berlin


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _time_per_call(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def _fixes(n: int, device: str, rng: random.Random, t0: float = 1.7e9) -> list[Fix]:
    """A vehicle's track: a random walk at urban speeds, one fix a second, as a recorder makes it."""
    lon, lat, heading = CENTER_LON + rng.uniform(-0.6, 0.6), CENTER_LAT + rng.uniform(-0.35, 0.35), 0.0
    fixes = []
    for i in range(n):
        heading += rng.gauss(0, 0.3)
        step = rng.uniform(0, 15) / 111_000  # up to 15 m/s
        lon = min(max(lon + step * math.cos(heading) / 0.61, CENTER_LON - 0.8), CENTER_LON + 0.8)
        lat = min(max(lat + step * math.sin(heading), CENTER_LAT - 0.5), CENTER_LAT + 0.5)
        fixes.append(Fix(device, t0 + i, lat, lon, vehicle_id=device, speed_kph=step * 111_000 * 3.6,
                         course=math.degrees(heading) % 360))
    return fixes


def bench_inserts(workdir: Path, n: int) -> None:
    rng = random.Random(1)
    fixes = _fixes(n, "dev-1", rng)
    store = Store(workdir / "insert.sqlite")
    t0 = time.perf_counter()
    for start in range(0, n, 1000):  # batches of 1000, as the recorder flushes them
        store.positions.add_many(fixes[start:start + 1000])
    ours = time.perf_counter() - t0
    store.close()

    # Baseline: the same rows into a plain table with no spatial index, same batching.
    conn = spatialite.sqlite_module().connect(str(workdir / "raw.sqlite"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE p (device_id TEXT, fix_time REAL, lat REAL, lon REAL, speed REAL, course REAL)")
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO p VALUES (?, ?, ?, ?, ?, ?)",
                         [(f.device_id, f.fix_time, f.lat, f.lon, f.speed_kph, f.course)
                          for f in fixes[start:start + 1000]])
        conn.execute("COMMIT")
    raw = time.perf_counter() - t0
    conn.close()
    print(f"insert {n:,} positions (outbox, spatial index): {ours:.2f} s = {n / ours:,.0f} fixes/s")
    print(f"  baseline raw executemany, no index:          {raw:.2f} s = {n / raw:,.0f} fixes/s "
          f"(ours/raw time {ours / raw:.1f}x)")


def bench_bbox(workdir: Path, n: int) -> None:
    rng = random.Random(2)
    store = Store(workdir / "bbox.sqlite")
    per_vehicle = min(n, 20_000)
    for device in range(n // per_vehicle):
        fixes = _fixes(per_vehicle, f"dev-{device}", rng)
        for start in range(0, per_vehicle, 10_000):
            store.positions.add_many(fixes[start:start + 10_000])
    total = store.scalar("SELECT count(*) FROM positions")
    boxes = []
    for _ in range(200):
        lon = CENTER_LON + rng.uniform(-0.7, 0.7)
        lat = CENTER_LAT + rng.uniform(-0.4, 0.4)
        boxes.append((lon, lat, lon + 0.01, lat + 0.01))  # about 700 m x 1.1 km: a street-level view
    it = iter(boxes * 10)
    samples = _time_per_call(lambda: store.positions.in_bbox(next(it)), 1000)
    hits = statistics.mean(len(store.positions.in_bbox(b)) for b in boxes[:50])
    p50, p99 = _percentiles(samples)
    print(f"bbox query over {total:,} positions (~{hits:.0f} hits): p50 {p50:.0f} us, p99 {p99:.0f} us")
    # Baseline: counting the same box with a full scan of the table.
    t0 = time.perf_counter()
    b = boxes[0]
    store.scalar("SELECT count(*) FROM positions WHERE lon BETWEEN ? AND ? AND lat BETWEEN ? AND ?",
                 (b[0], b[2], b[1], b[3]))
    print(f"  baseline full scan of the same box: {(time.perf_counter() - t0) * 1e6:,.0f} us")
    store.close()


def _polygon(rng: random.Random, vertices: int = 20) -> dict[str, object]:
    lon = CENTER_LON + rng.uniform(-1.5, 1.5)
    lat = CENTER_LAT + rng.uniform(-1.0, 1.0)
    radius = rng.uniform(0.002, 0.02)
    ring = []
    for i in range(vertices):
        angle = 2 * math.pi * i / vertices
        r = radius * rng.uniform(0.7, 1.0)
        ring.append([round(lon + r * math.cos(angle), 6), round(lat + r * math.sin(angle), 6)])
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def bench_geofences(workdir: Path, n: int) -> None:
    rng = random.Random(3)
    store = Store(workdir / "fences.sqlite")
    store.geofences.upsert_many((f"g{i}", {"name": f"fence {i}", "geometry": _polygon(rng)}, None)
                                for i in range(n))
    points = [(CENTER_LON + rng.uniform(-1.5, 1.5), CENTER_LAT + rng.uniform(-1.0, 1.0)) for _ in range(2000)]
    it = iter(points)
    samples = _time_per_call(lambda: store.geofences.containing_ids(*next(it)), len(points))
    p50, p99 = _percentiles(samples)
    it2 = iter(points)
    rtree = _time_per_call(lambda: store.query(
        "SELECT pkid FROM idx_geofences_geometry WHERE xmin <= ? AND xmax >= ? AND ymin <= ? AND ymax >= ?",
        (lambda p: (p[0], p[0], p[1], p[1]))(next(it2))), len(points))
    r50, r99 = _percentiles(rtree)
    print(f"which of {n:,} geofences (20 vertices) contain a point: p50 {p50:.1f} us, p99 {p99:.1f} us "
          f"(goal < 50 us)")
    print(f"  baseline bare R*Tree lookup of the same points:   p50 {r50:.1f} us, p99 {r99:.1f} us")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10x smaller data sets")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bench_inserts(workdir, 100_000 // scale)
        bench_bbox(workdir, 1_000_000 // scale)
        bench_geofences(workdir, 20_000 // scale)


if __name__ == "__main__":
    main()
