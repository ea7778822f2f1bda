"""Geofence event detection benchmark: EventDetector.process over 20k fences of ~20 vertices.

Prints microseconds per fix for
- EventDetector.process on vehicle tracks (1 Hz, urban speeds; enter/exit/crossing/overspeed),
- GeofenceIndex.containing on random points (no cell-cache locality: the worst case),
- shapely's raw STRtree query of the same track points (Point + query with predicate),
next to the goal (< 30 us per fix).

Run: .venv/bin/python -m bench.geofence_bench   (add --quick for 2k fences)
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from typing import Any

import numpy as np
import shapely

from sync.geofencing import EventDetector, GeofenceIndex

CENTER_LON, CENTER_LAT = 13.40, 52.52  # Berlin; the same fence layout as bench.storage_bench
GOAL_US = 30.0


def _polygon(rng: random.Random, vertices: int = 20) -> dict[str, Any]:
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


def records(n: int, seed: int = 3) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    out: dict[str, dict[str, Any]] = {}
    for i in range(n):
        record: dict[str, Any] = {"name": f"fence {i}", "geometry": _polygon(rng)}
        if i % 10 == 0:
            record["speed_limit_kph"] = 30
        out[f"g{i}"] = record
    return out


def tracks(vehicles: int, fixes: int, seed: int = 5) -> list[tuple[str, float, float, float, float]]:
    """Interleaved 1 Hz tracks: random walks at up to 15 m/s, as vehicles report them."""
    rng = random.Random(seed)
    state = [(CENTER_LON + rng.uniform(-1.4, 1.4), CENTER_LAT + rng.uniform(-0.9, 0.9), rng.uniform(0, 6.3))
             for _ in range(vehicles)]
    out = []
    for t in range(fixes):
        for v in range(vehicles):
            lon, lat, heading = state[v]
            heading += rng.gauss(0, 0.2)
            step = rng.uniform(0, 15)
            lon += step * math.cos(heading) / (111_000 * 0.61)
            lat += step * math.sin(heading) / 111_000
            state[v] = (lon, lat, heading)
            out.append((f"v{v}", 1.7e9 + t, lon, lat, step * 3.6))
    return out


def _summary(samples: list[float]) -> str:
    samples = sorted(samples)
    return (f"mean {statistics.fmean(samples):.1f} us, p50 {statistics.median(samples):.1f} us, "
            f"p99 {samples[int(len(samples) * 0.99) - 1]:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2k fences and fewer fixes")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    t0 = time.perf_counter()
    index = GeofenceIndex.from_records(records(n))
    print(f"GeofenceIndex of {len(index):,} fences (20 vertices) built in {time.perf_counter() - t0:.2f} s")

    points = tracks(50, 400 if args.quick else 2000)
    detector = EventDetector(index)
    events = 0
    samples = []
    for vehicle, t, lon, lat, speed in points:
        s = time.perf_counter()
        events += len(detector.process(vehicle, t, lon, lat, speed, 90.0))
        samples.append((time.perf_counter() - s) * 1e6)
    print(f"EventDetector.process, {len(points):,} fixes of 50 vehicles ({events:,} events): {_summary(samples)}"
          f"  (goal < {GOAL_US:.0f} us)")

    raw = []
    geoms = index._geoms
    tree = shapely.STRtree(geoms)
    for _, _, lon, lat, _ in points:
        s = time.perf_counter()
        tree.query(shapely.Point(lon, lat), predicate="intersects")
        raw.append((time.perf_counter() - s) * 1e6)
    print(f"  baseline shapely STRtree.query(Point, predicate='intersects') of the same points: {_summary(raw)}")

    rng = random.Random(7)
    scattered = [(CENTER_LON + rng.uniform(-1.5, 1.5), CENTER_LAT + rng.uniform(-1.0, 1.0)) for _ in range(20_000)]
    cold = GeofenceIndex.from_records(records(n))
    random_samples = []
    for lon, lat in scattered:
        s = time.perf_counter()
        cold.containing(lon, lat)
        random_samples.append((time.perf_counter() - s) * 1e6)
    print(f"GeofenceIndex.containing on scattered random points (cold cell cache): {_summary(random_samples)}")
    hits = np.mean([len(index.containing(lon, lat)) for lon, lat in scattered[:2000]])
    print(f"  (~{hits:.2f} fences contain a random point)")


if __name__ == "__main__":
    main()
