"""Noisy neighbour: tenant B's durable-ack latency while tenant A floods the same server.

Run: .venv/bin/python -m bench.noisy_neighbour_bench [--database-url postgresql://…] [--quick]

One `webhost-server serve` process (embedded SpatiaLite by default). Tenant B, at a steady rate,
connects, syncs, writes one record and waits for COMMITTED, measuring the whole round. First B runs alone
(the baseline, same run), then again while tenant A's sockets each send a burst of updates as
fast as the socket takes them. The goal (issue #12): B's p99 under load stays under 3x its solo
p99. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pycrdt import Doc, Map
from websockets.asyncio.client import connect

from bench.fanout_bench import Server, handshake, start_ours
from sync import protocol


def record_writer() -> tuple[Doc, Map]:
    doc: Doc = Doc()
    vehicles = doc.get("vehicles", type=Map)
    record = Map()
    vehicles[str(uuid.uuid4())] = record
    record["name"] = "Bench van"
    return doc, record


async def steady_writer(server: Server, tenant: str, token: str, rate: float, seconds: float) -> list[float]:
    """`rate` times a second for `seconds`: connect, sync, write one record, wait for COMMITTED.
    Returns each round's connect-plus-ack time in seconds (what a reconnecting client feels)."""
    latencies: list[float] = []
    url = f"{server.url}/{tenant}?token={token}&acks=1"
    start = time.perf_counter()
    rounds = 0
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        async with connect(url, max_size=None, ping_interval=None, close_timeout=1) as ws:
            await handshake(ws)
            doc, record = record_writer()
            record["plate"] = f"B-{rounds}"
            await ws.send(protocol.update_message(doc.get_update()))
            while True:
                message = protocol.parse(await ws.recv())  # type: ignore[arg-type]
                if message.kind == protocol.MessageKind.ACK_COMMITTED:
                    break
        latencies.append(time.perf_counter() - began)
        rounds += 1
        await asyncio.sleep(max(0.0, start + rounds / rate - time.perf_counter()))
    return latencies


async def flooder(server: Server, tenant: str, token: str, updates: int, stop: asyncio.Event) -> int:
    """Create `updates` new vehicle records (one update each, with a route-sized value) as fast as
    the socket takes them, so A's room, log and projection all work hard; how many were acked."""
    url = f"{server.url}/{tenant}?token={token}&acks=1"
    acked = 0
    async with connect(url, max_size=None, ping_interval=None, close_timeout=1) as ws:
        await handshake(ws)
        doc = Doc()
        vehicles = doc.get("vehicles", type=Map)
        state = doc.get_state()

        async def read_acks() -> None:
            nonlocal acked
            async for frame in ws:
                message = protocol.parse(frame)  # type: ignore[arg-type]
                if message.kind == protocol.MessageKind.ACK_COMMITTED:
                    acked = message.count

        reader = asyncio.create_task(read_acks())
        for i in range(updates):
            if stop.is_set():
                break
            record = Map()
            vehicles[str(uuid.uuid4())] = record
            record["name"] = f"Flood {i}"
            record["notes"] = "x" * 400
            await ws.send(protocol.update_message(doc.get_update(state)))
            state = doc.get_state()
        await stop.wait()
        reader.cancel()
    return acked


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float]) -> str:
    return (f"n={len(latencies)} p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


async def run(args: argparse.Namespace, server: Server, tenants: list[str], tokens: list[str],
              database_url: str) -> None:
    noisy, quiet = (tenants[0], tokens[0]), (tenants[1], tokens[1])
    try:
        solo = await steady_writer(server, *quiet, rate=args.rate, seconds=args.seconds)
        stop = asyncio.Event()
        floods = [asyncio.create_task(flooder(server, *noisy, args.flood_updates, stop))
                  for _ in range(args.flood_sockets)]
        await asyncio.sleep(0.5)  # the flood is under way before B measures
        loaded = await steady_writer(server, *quiet, rate=args.rate, seconds=args.seconds)
        stop.set()
        acked = await asyncio.gather(*floods)
        # A has left; whatever backlog it caused (projection) must not hold B up either.
        after = await steady_writer(server, *quiet, rate=args.rate, seconds=args.seconds / 2)
    finally:
        server.stop()
    ratio = percentile(loaded, 0.99) / percentile(solo, 0.99)
    print(f"backend: {database_url.split(':', 1)[0]}; B writes {args.rate:g}/s for {args.seconds:g} s")
    print(f"B alone:            {summary(solo)}")
    print(f"B while A floods:   {summary(loaded)}")
    print(f"B after A left:     {summary(after)}")
    print(f"A: {args.flood_sockets} sockets x {args.flood_updates} updates, acked while B measured: {sum(acked)}")
    print(f"B p99 under load / alone: {ratio:.2f}x (goal < 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="postgresql://… (default: a fresh embedded SpatiaLite file)")
    parser.add_argument("--rate", type=float, default=10.0, help="tenant B's updates a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flood-sockets", type=int, default=5)
    parser.add_argument("--flood-updates", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="a short run for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.flood_updates = 3.0, 2_000
    database_url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'noisy.sqlite'}"
    server, tenants, tokens = start_ours(database_url, tenants=2)  # provisions with its own event loop
    asyncio.run(run(args, server, tenants, tokens, database_url))


if __name__ == "__main__":
    main()
