"""Sync server benchmark: fan-out latency and throughput, durable-ack latency, idle-socket memory.

Run: .venv/bin/python -m bench.fanout_bench [--quick]
Both servers run as their own processes on 127.0.0.1: ours (`webhost-server serve`, embedded
SpatiaLite or --database-url postgresql://…) and, as the baseline in the same run, the stock Node
server from npm (`@y/websocket-server` 0.1.1). Clients are raw y-websocket clients in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pycrdt import Doc, Map
from websockets.asyncio.client import ClientConnection, connect

from server_stub.testing import provision_tenant, settings_for
from sync import protocol

ROOT = Path(__file__).resolve().parents[1]
NODE_SERVER = ROOT / "tests" / "js" / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str  # ws://host:port/<prefix>
    token: str | None

    def room_url(self, room: str, *, acks: bool = False) -> str:
        query = [f"token={self.token}"] if self.token else []
        if acks:
            query.append("acks=1")
        return f"{self.url}/{room}" + ("?" + "&".join(query) if query else "")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_ours(database_url: str, tenants: int = 1) -> tuple[Server, list[str], list[str]]:
    settings = settings_for(database_url)
    provisioned = [provision_tenant(settings, f"Bench {i}") for i in range(tenants)]
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "WEBHOST_SECRET_KEY": settings.secret_key,
           "PORT": str(port), "HOST": "127.0.0.1"}
    process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "webhost-server"), "serve", "--no-migrate"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    server = Server("webhost", process, f"ws://127.0.0.1:{port}/sync", provisioned[0].tokens["dispatcher"])
    return server, [t.id for t in provisioned], [t.tokens["dispatcher"] for t in provisioned]


def start_node() -> Server:
    node = shutil.which("node")
    if node is None or not NODE_SERVER.exists():
        raise SystemExit("node and tests/js/node_modules are needed: run `make test` once to install them")
    port = free_port()
    process = subprocess.Popen([node, str(NODE_SERVER)], env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return Server("y-websocket-server (node)", process, f"ws://127.0.0.1:{port}", None)


async def handshake(ws: ClientConnection) -> None:
    """Send our (empty) state and wait for the server's step 2, as a real client does."""
    await ws.send(protocol.sync_step1(Doc().get_state()))
    while True:
        message = protocol.parse(await ws.recv())
        if message.kind == protocol.MessageKind.SYNC_STEP1:
            await ws.send(protocol.sync_step2(b"\x00\x00"))
        elif message.kind == protocol.MessageKind.SYNC_STEP2:
            return


async def receiver(ws: ClientConnection, sent_at: dict[int, float], latencies: list[float],
                   expected: int, done: asyncio.Event) -> None:
    doc = Doc()
    bench = doc.get("meta", type=Map)  # a root the value policy allows
    seen = 0
    while seen < expected:
        message = protocol.parse(await ws.recv())
        if message.kind not in (protocol.MessageKind.SYNC_UPDATE, protocol.MessageKind.SYNC_STEP2):
            continue
        doc.apply_update(message.payload)
        now = time.perf_counter()
        top = int(bench.get("seq", 0))
        for seq in range(seen + 1, top + 1):
            latencies.append(now - sent_at[seq])
        seen = max(seen, top)
    done.set()


async def fanout_round(server: Server, room: str, clients: int, updates: int, rate: float) -> dict[str, float]:
    sockets = [await connect(server.room_url(room), max_size=None, ping_interval=None) for _ in range(clients)]
    writer = await connect(server.room_url(room), max_size=None, ping_interval=None)
    await asyncio.gather(*(handshake(ws) for ws in [*sockets, writer]))
    source = Doc()
    bench = source.get("meta", type=Map)
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    events = [asyncio.Event() for _ in sockets]
    tasks = [asyncio.create_task(receiver(ws, sent_at, latencies, updates, ev)) for ws, ev in zip(sockets, events,
                                                                                                   strict=True)]
    frames = []
    for seq in range(1, updates + 1):
        state = source.get_state()
        bench["seq"] = seq
        frames.append(protocol.update_message(source.get_update(state)))
    started = time.perf_counter()
    for seq, frame in enumerate(frames, start=1):
        sent_at[seq] = time.perf_counter()
        await writer.send(frame)
        if rate:
            await asyncio.sleep(max(0.0, started + seq / rate - time.perf_counter()))
    await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in events)), timeout=120)
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    for ws in [*sockets, writer]:
        await ws.close()
    ordered = sorted(latencies)
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
            "delivered_per_s": len(latencies) / elapsed}


async def ack_latency(server: Server, room: str, updates: int) -> tuple[float, float]:
    ws = await connect(server.room_url(room, acks=True), max_size=None, ping_interval=None)
    await handshake(ws)
    source = Doc()
    bench = source.get("meta", type=Map)
    samples = []
    for seq in range(1, updates + 1):  # one write in flight at a time: the latency a user waits
        state = source.get_state()
        bench["seq"] = seq
        t0 = time.perf_counter()
        await ws.send(protocol.update_message(source.get_update(state)))
        while True:
            message = protocol.parse(await ws.recv())
            if message.kind == protocol.MessageKind.ACK_COMMITTED:
                break
        samples.append(time.perf_counter() - t0)
    await ws.close()
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.99) - 1] * 1000


async def idle_sockets(server: Server, rooms: list[str], tokens: list[str] | None, per_room: int) -> float:
    sockets = []
    for index, room in enumerate(rooms):
        for _ in range(per_room):
            url = f"{server.url}/{room}" + (f"?token={tokens[index]}" if tokens else "")
            ws = await connect(url, max_size=None, ping_interval=None)
            await handshake(ws)
            sockets.append(ws)
    await asyncio.sleep(1.0)  # let the servers settle after the burst of handshakes
    rss = rss_mb(server.process.pid)
    for ws in sockets:
        await ws.close()
    return rss


async def run(args: argparse.Namespace) -> None:
    sizes = [50, 200] if args.quick else [50, 200, 500]
    updates = 50 if args.quick else 200
    rate = 50.0
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        ours, tenants, tokens = await asyncio.to_thread(start_ours, database_url, 1 if args.quick else 100)
        node = start_node()
        try:
            print(f"fan-out: one writer, {updates} updates at {rate:.0f}/s, N receivers in one room "
                  f"(ours on {database_url.split(':')[0]}, durable: committed before broadcast)")
            for n in sizes:
                for label, pace in (("paced", rate), ("flat out", 0.0)):
                    mine = await fanout_round(ours, tenants[0], n, updates, pace)
                    stock = await fanout_round(node, f"room-{n}-{label.replace(' ', '-')}", n, updates, pace)
                    print(f"  N={n:>3} {label:>8}: ours p50 {mine['p50_ms']:6.1f} ms p99 {mine['p99_ms']:6.1f} ms "
                          f"{mine['delivered_per_s']:8,.0f} upd/s | node p50 {stock['p50_ms']:6.1f} ms "
                          f"p99 {stock['p99_ms']:6.1f} ms {stock['delivered_per_s']:8,.0f} upd/s | "
                          f"throughput {mine['delivered_per_s'] / stock['delivered_per_s']:.2f}x node")
            p50, p99 = await ack_latency(ours, tenants[0], 100 if args.quick else 500)
            print(f"durable ack (send -> committed ack): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            if not args.quick:
                rooms, per_room = tenants[:100], 10
                mine_rss = await idle_sockets(ours, rooms, tokens[:100], per_room)
                stock_rss = await idle_sockets(node, [f"idle-{i}" for i in range(100)], None, per_room)
                print(f"RSS with {len(rooms) * per_room} idle sockets across {len(rooms)} tenants: "
                      f"ours {mine_rss:.0f} MB, node {stock_rss:.0f} MB")
        finally:
            ours.stop()
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--database-url", help="postgresql://… to measure on Postgres (default: embedded)")
    asyncio.run(run(parser.parse_args()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
