"""Position ingest benchmark: HTTP batches into Postgres end to end, beside a raw COPY of the same rows.

The server is a LiveServer (real uvicorn, real Postgres) in a child process, so the clients do
not share its interpreter. Several concurrent httpx clients post batches in the wire format (one
vehicle per batch, as each tracker's uploader sends them), with geofences in place so every fix
also goes through event detection. Then the table is emptied and the same rows are written with
one raw psycopg COPY into the same table, in the same run.

Run: .venv/bin/python -m bench.ingest_bench   (--fixes, --batch, --clients, --gzip; WEBHOST_TEST_PG_URL)
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import math
import multiprocessing
import os
import random
import secrets
import struct
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as EventType
from typing import Any

import httpx
import orjson
import psycopg

from server_stub.testing import LiveServer, provision_tenant, settings_for

PG_ADMIN_URL = os.environ.get("WEBHOST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CENTER_LON, CENTER_LAT = 13.40, 52.52  # Berlin


def _serve(database_url: str, ports: Any, stop: EventType) -> None:
    with LiveServer(settings_for(database_url)) as server:
        ports.put(server.port)
        stop.wait()


def _tracks(vehicles: list[str], per_vehicle: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """One fix a second per vehicle, a random walk at urban speeds, ending a minute ago."""
    rng = random.Random(seed)
    end = time.time() - 60
    tracks: dict[str, list[dict[str, Any]]] = {}
    for vehicle in vehicles:
        lon, lat, heading = CENTER_LON + rng.uniform(-0.3, 0.3), CENTER_LAT + rng.uniform(-0.2, 0.2), 0.0
        speed = rng.uniform(0, 50)  # km/h, drifting smoothly as real traffic does
        fixes = []
        for i in range(per_vehicle):
            heading += rng.gauss(0, 0.05)
            speed = min(max(speed + rng.gauss(0, 1.5), 0.0), 70.0)
            step = speed / 3.6 / 111_000  # degrees per second
            lon += step * math.cos(heading) / 0.61
            lat += step * math.sin(heading)
            t = round(end - per_vehicle + i, 3)
            fixes.append({"vehicle_id": vehicle, "fix_time": t, "lat": round(lat, 7), "lon": round(lon, 7),
                          "speed_kph": round(speed, 1), "course": round(math.degrees(heading) % 360, 1),
                          "accuracy": 5.0})
        tracks[vehicle] = fixes
    return tracks


def _ewkb_point(lon: float, lat: float) -> str:
    return struct.pack("<BIIdd", 1, 0x20000001, 4326, lon, lat).hex()


async def _post_all(url: str, token: str, bodies: list[bytes], clients: int, compress: bool) -> tuple[int, int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    totals = [0, 0]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if compress:
        headers["Content-Encoding"] = "gzip"

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            while not queue.empty():
                body = queue.get_nowait()
                response = await http.post("/api/v1/positions", content=body)
                response.raise_for_status()
                result = response.json()
                totals[0] += result["accepted"]
                totals[1] += len(result["rejected"])

    await asyncio.gather(*(worker() for _ in range(clients)))
    return totals[0], totals[1]


def _create_fleet(url: str, token: str, vehicles: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for i in range(vehicles):
            response = http.post("/api/v1/vehicles", json={"data": {"type": "vehicles", "attributes": {
                "name": f"Bench {i}", "device_id": f"bench-{i}", "speed_limit_kph": 50}}})
            response.raise_for_status()
            ids.append(response.json()["data"]["id"])
        rng = random.Random(3)
        for i in range(20):  # depots and customer sites across the area the tracks cover
            lon, lat = CENTER_LON + rng.uniform(-0.3, 0.3), CENTER_LAT + rng.uniform(-0.2, 0.2)
            half = rng.uniform(0.002, 0.01)
            ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
                    [lon - half, lat + half], [lon - half, lat - half]]
            http.post("/api/v1/geofences", json={"data": {"type": "geofences", "attributes": {
                "name": f"Site {i}", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "speed_limit_kph": 30}}}).raise_for_status()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixes", type=int, default=240_000)
    parser.add_argument("--batch", type=int, default=4000, help="fixes per request (one vehicle per request)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--gzip", action="store_true", help="send Content-Encoding: gzip bodies")
    parser.add_argument("--storage", choices=["both", "timescale", "partitioned"], default="both",
                        help="how gps_positions is stored (both: one run each, timescale where installed)")
    args = parser.parse_args()
    for storage in (["timescale", "partitioned"] if args.storage == "both" else [args.storage]):
        run(args, storage)


def run(args: argparse.Namespace, storage: str) -> None:
    name = f"webhost_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        if storage == "timescale" and not admin.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
            print("timescale: TimescaleDB is not installed on this server; skipped")
            return
        admin.execute(f'CREATE DATABASE "{name}"')
        if storage == "partitioned":  # read by the migration (docs/positions.md)
            admin.execute(f"ALTER DATABASE \"{name}\" SET webhost.timescale = 'off'")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    spawn = multiprocessing.get_context("spawn")
    ports: Any = spawn.Queue()
    stop = spawn.Event()
    server = spawn.Process(target=_serve, args=(url, ports, stop), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=120)
        base = f"http://127.0.0.1:{port}"
        tenant = provision_tenant(settings_for(url), "Bench Logistics")
        token = tenant.tokens["dispatcher"]
        vehicles = _create_fleet(base, token, max(1, args.fixes // args.batch))
        tracks = _tracks(vehicles, args.batch)
        total = sum(len(t) for t in tracks.values())
        bodies = [orjson.dumps({"positions": fixes}) for fixes in tracks.values()]
        if args.gzip:
            bodies = [gzip.compress(b, 5) for b in bodies]
        # Warm-up: connections, caches, the geofence index; then an empty table for both runs.
        warm = _tracks(vehicles[:1], 200, seed=99)[vehicles[0]]
        for fix in warm:
            fix["fix_time"] -= 86400 / 2
        asyncio.run(_post_all(base, token, [orjson.dumps({"positions": warm})], 1, False))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE gps_positions")

        t0 = time.perf_counter()
        accepted, rejected = asyncio.run(_post_all(base, token, bodies, args.clients, args.gzip))
        http_seconds = time.perf_counter() - t0
        assert accepted == total and rejected == 0, (accepted, rejected, total)

        with psycopg.connect(url, autocommit=True) as conn:
            stored = conn.execute("SELECT count(*) FROM gps_positions").fetchone()
            events = conn.execute("SELECT count(*) FROM geofence_events").fetchone()
            assert stored is not None and stored[0] == total
            conn.execute("TRUNCATE gps_positions")
            received = datetime.now(UTC)
            rows = [(tenant.id, f["vehicle_id"], None, datetime.fromtimestamp(f["fix_time"], UTC), received, f["lat"],
                     f["lon"], f["speed_kph"], f["course"], None, f["accuracy"], None, _ewkb_point(f["lon"], f["lat"]))
                    for fixes in tracks.values() for f in fixes]
            columns = ("customer_id, vehicle_id, device_id, fix_time, received_at, lat, lon, speed_kph, course, "
                       "altitude, accuracy, attributes, geom")
            t0 = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur, cur.copy(f"COPY gps_positions ({columns}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
            copy_seconds = time.perf_counter() - t0
            copied = conn.execute("SELECT count(*) FROM gps_positions").fetchone()
            assert copied is not None and copied[0] == total
    finally:
        stop.set()
        server.join(timeout=30)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    http_rate, copy_rate = total / http_seconds, total / copy_seconds
    print(f"[{storage}] {total} fixes, {len(bodies)} batches of {args.batch}, {args.clients} concurrent clients"
          f"{', gzip' if args.gzip else ''}; {events[0] if events else 0} geofence/overspeed events computed")
    print(f"  HTTP ingest (validate, COPY→INSERT, events, state): {http_rate:10,.0f} fixes/s  ({http_seconds:.2f} s)")
    print(f"  raw psycopg COPY of the same rows, same table:      {copy_rate:10,.0f} fixes/s  ({copy_seconds:.2f} s)")
    print(f"  ratio: {http_rate / copy_rate:.0%} of raw COPY (goal >= 50% and >= 50,000 fixes/s)")


if __name__ == "__main__":
    main()
