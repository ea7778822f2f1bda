"""The position uploader against a real local HTTP endpoint speaking the ingest wire format.

`PositionsPeer` is a protocol peer written for these tests (Starlette + uvicorn on an ephemeral
port), not the project's server: it implements `POST /api/v1/positions` exactly as the contract
says (gzip JSON in, counts out, dedupe by (device_id, fix_time)) and can misbehave on demand.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage import Store
from storage.positions import Fix
from sync.client import StaticToken
from sync.uploader import (
    PositionUploader,
    UploadState,
    UploadStatus,
    encode_batch,
    format_fix_time,
    parse_retry_after,
    wire_position,
)

from .conftest import eventually, run

TOKEN = "field-token"
T0 = 1_700_000_000.0
FIX_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
WIRE_KEYS = {"device_id", "vehicle_id", "fix_time", "lat", "lon", "speed_kph", "course", "altitude", "accuracy",
             "attributes"}


class PositionsPeer:
    """The ingest endpoint as the contract describes it, with switches for failure modes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.token = TOKEN
        self.fail_rate = 0.0  # answer 503 before storing anything
        self.lose_answer_rate = 0.0  # store the batch, then answer 503 (the answer "got lost")
        self.scripted: list[tuple[int, dict[str, str]]] = []  # statuses to answer next, in order
        self.poison_device: str | None = None  # a batch containing it is refused as a whole (400)
        self.rng = random.Random(4)
        self.app = Starlette(routes=[Route("/api/v1/positions", self.ingest, methods=["POST"])])

    async def ingest(self, request: Request) -> Response:
        raw = await request.body()
        with self.lock:
            self.requests.append({"headers": dict(request.headers), "raw": raw})
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return JSONResponse({"detail": "invalid or expired token"}, status_code=401)
            if self.scripted:
                status, headers = self.scripted.pop(0)
                return JSONResponse({"detail": "scripted"}, status_code=status, headers=headers)
            if request.headers.get("content-encoding") != "gzip":
                return JSONResponse({"detail": "gzip expected"}, status_code=415)
            if request.headers.get("content-type") != "application/json":
                return JSONResponse({"detail": "JSON expected"}, status_code=415)
            positions = json.loads(gzip.decompress(raw))["positions"]
            self.requests[-1]["positions"] = positions
            if self.rng.random() < self.fail_rate:
                return JSONResponse({"detail": "busy"}, status_code=503)
            if self.poison_device and any(p["device_id"] == self.poison_device for p in positions):
                return JSONResponse({"detail": "malformed batch"}, status_code=400)
            accepted = duplicates = 0
            rejected = []
            for index, p in enumerate(positions):
                reason = self.problem(p)
                if reason:
                    rejected.append({"index": index, "reason": reason})
                    continue
                key = (p["device_id"], p["fix_time"])
                if key in self.stored:
                    duplicates += 1
                else:
                    self.stored[key] = p
                    accepted += 1
            if self.rng.random() < self.lose_answer_rate:
                return JSONResponse({"detail": "gateway timeout"}, status_code=503)
            return JSONResponse({"accepted": accepted, "duplicates": duplicates, "rejected": rejected})

    @staticmethod
    def problem(p: dict[str, Any]) -> str | None:
        if set(p) != WIRE_KEYS:
            return f"wrong fields {sorted(set(p) ^ WIRE_KEYS)}"
        if not isinstance(p["fix_time"], str) or not FIX_TIME_RE.match(p["fix_time"]):
            return "bad fix_time"
        if not -90 <= p["lat"] <= 90:
            return "lat out of range"
        if not -180 <= p["lon"] <= 180:
            return "lon out of range"
        return None

    def batch_sizes(self) -> list[int]:
        return [len(r["positions"]) for r in self.requests if "positions" in r]


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 in a thread; can be stopped and started on the same port."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = 0
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reserve_port(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def start(self) -> None:
        if not self.port:
            self.reserve_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", loop="asyncio", http="h11",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "test server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)
        if self.sock is not None:
            self.sock.close()
        self.server = self.thread = self.sock = None


@pytest.fixture
def peer() -> PositionsPeer:
    return PositionsPeer()


@pytest.fixture
def server(peer: PositionsPeer) -> Iterator[ServerThread]:
    thread = ServerThread(peer.app)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def make_fixes(n: int, device: str = "gps-1", start: float = T0) -> list[Fix]:
    return [Fix(device, start + i + 0.123, 52.5 + i * 1e-5, 13.4 + i * 1e-5, "truck-1", speed_kph=36.0 + i % 7,
                course=float(i % 360), altitude=40.0, accuracy=4.5, attributes={"hdop": 0.9, "satellites": 8})
            for i in range(n)]


def uploader(store: Store, server: ServerThread, **options: Any) -> PositionUploader:
    defaults: dict[str, Any] = {"batch_size": 100, "min_backoff": 0.01, "max_backoff": 0.05, "idle_interval": 0.05,
                                "timeout": 5.0, "rng": random.Random(1)}
    return PositionUploader(store, server.url, StaticToken(TOKEN), **{**defaults, **options})


def failed_reasons(store: Store) -> dict[str, str]:
    rows = store.query("SELECT fix_time, last_error FROM positions WHERE upload_state = 'failed'")
    return {format_fix_time(row[0]): row[1] for row in rows}


async def run_until_drained(up: PositionUploader, timeout: float = 30.0) -> list[UploadStatus]:
    statuses: list[UploadStatus] = []
    up.on_status(statuses.append)
    task = asyncio.create_task(up.run())
    try:
        await eventually(lambda: up.counts().pending == 0 or task.done(), timeout, "outbox drained")
    finally:
        await up.stop()
        await asyncio.wait_for(task, 10)
    return statuses


# -- the wire format -----------------------------------------------------------------------------

def test_fix_time_is_iso_utc_with_milliseconds() -> None:
    assert format_fix_time(1_700_000_000.123) == "2023-11-14T22:13:20.123Z"
    assert format_fix_time(1_700_000_000.0) == "2023-11-14T22:13:20.000Z"
    assert format_fix_time(1_700_000_000.9996) == "2023-11-14T22:13:21.000Z"  # rounded, not truncated
    assert format_fix_time(0.5) == "1970-01-01T00:00:00.500Z"


def test_wire_position_and_gzip_body() -> None:
    fix = Fix("gps-1", 1_700_000_000.25, 52.5, 13.4, None, speed_kph=None, course=12.0, attributes={"hdop": 1.2})
    assert wire_position(fix) == {
        "device_id": "gps-1", "vehicle_id": None, "fix_time": "2023-11-14T22:13:20.250Z", "lat": 52.5, "lon": 13.4,
        "speed_kph": None, "course": 12.0, "altitude": None, "accuracy": None, "attributes": {"hdop": 1.2},
    }
    assert json.loads(gzip.decompress(encode_batch([fix]))) == {"positions": [wire_position(fix)]}


def test_retry_after_header() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = datetime.fromtimestamp(T0 + 30, UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=T0) == pytest.approx(30.0)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=T0 + 60) == 0.0


# -- against the endpoint ------------------------------------------------------------------------

def test_batches_gzip_on_the_wire_and_counts(store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    fixes = make_fixes(234)
    store.positions.add_many(fixes)

    async def body() -> list[int]:
        up = uploader(store, server)
        sent = [await up.upload_once() for _ in range(4)]
        await up.aclose()
        return sent

    assert run(body()) == [100, 100, 34, 0]
    assert peer.batch_sizes() == [100, 100, 34]
    first = peer.requests[0]
    assert first["headers"]["content-encoding"] == "gzip"
    assert first["headers"]["content-type"] == "application/json"
    assert first["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert first["raw"][:2] == b"\x1f\x8b"  # gzip magic: compressed on the wire
    assert first["positions"][0] == {
        "device_id": "gps-1", "vehicle_id": "truck-1", "fix_time": "2023-11-14T22:13:20.123Z", "lat": 52.5,
        "lon": 13.4, "speed_kph": 36.0, "course": 0.0, "altitude": 40.0, "accuracy": 4.5,
        "attributes": {"hdop": 0.9, "satellites": 8},
    }
    counts = store.positions.counts()
    assert (counts.pending, counts.uploaded, counts.failed) == (0, 234, 0)
    assert len(peer.stored) == 234


def test_rejected_fixes_are_kept_with_their_reason_and_never_retried(
        store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    fixes = make_fixes(10)
    fixes[3] = Fix("gps-1", fixes[3].fix_time, 95.0, 13.4)  # the outbox takes it; the server does not
    fixes[7] = Fix("gps-1", fixes[7].fix_time, 52.5, 200.0)
    store.positions.add_many(fixes)

    async def body() -> None:
        up = uploader(store, server)
        assert await up.upload_once() == 10
        assert await up.upload_once() == 0
        await up.aclose()
        statuses = await run_until_drained(uploader(store, server))
        assert statuses[-1].state == UploadState.STOPPED

    run(body())
    counts = store.positions.counts()
    assert (counts.pending, counts.uploaded, counts.failed) == (0, 8, 2)
    assert failed_reasons(store) == {format_fix_time(fixes[3].fix_time): "lat out of range",
                                     format_fix_time(fixes[7].fix_time): "lon out of range"}
    assert len(peer.requests) == 1  # never sent again


def test_flaky_server_loses_nothing_and_duplicates_nothing(
        store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    peer.fail_rate = 0.3
    peer.lose_answer_rate = 0.3  # stored, but the client hears 503 and sends the batch again
    fixes = make_fixes(1000)
    store.positions.add_many(fixes)

    up = uploader(store, server, batch_size=50)
    statuses = run(run_until_drained(up), timeout=60)

    counts = store.positions.counts()
    assert (counts.pending, counts.uploaded, counts.failed) == (0, 1000, 0)
    assert set(peer.stored) == {("gps-1", format_fix_time(f.fix_time)) for f in fixes}
    assert len(peer.stored) == 1000
    assert len(peer.batch_sizes()) > 20  # there were retries
    assert UploadState.RETRYING in {s.state for s in statuses}
    assert int(store.scalar("SELECT max(attempts) FROM positions")) >= 1
    # A batch whose answer was lost came back as duplicates and still counts as uploaded.
    resent = [r for r in peer.requests if r.get("positions")]
    assert len({tuple(p["fix_time"] for p in r["positions"]) for r in resent}) < len(resent)


def test_backoff_grows_and_respects_retry_after(store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    store.positions.add_many(make_fixes(5))
    peer.scripted = [(503, {}), (503, {}), (503, {}), (429, {"Retry-After": "0.4"})]

    up = uploader(store, server, min_backoff=0.05, max_backoff=1.0, rng=random.Random(0))
    statuses = run(run_until_drained(up))

    retries = [s for s in statuses if s.state == UploadState.RETRYING]
    delays = [s.retry_in for s in retries]
    assert [s.detail.split(":")[0] for s in retries] == ["HTTP 503", "HTTP 503", "HTTP 503", "HTTP 429"]
    assert delays[3] == 0.4  # what the server asked for
    assert 0.025 <= delays[0] <= 0.05 and 0.05 <= delays[1] <= 0.1 and 0.1 <= delays[2] <= 0.2  # 2^n, jittered
    assert len(peer.requests) == 5
    assert store.positions.counts().uploaded == 5
    assert int(store.scalar("SELECT max(attempts) FROM positions")) == 4


def test_server_down_then_up(store: Store, peer: PositionsPeer) -> None:
    server = ServerThread(peer.app)
    server.reserve_port()  # nothing listens there yet
    store.positions.add_many(make_fixes(120))

    async def body() -> list[UploadStatus]:
        up = uploader(store, server, batch_size=50)
        statuses: list[UploadStatus] = []
        up.on_status(statuses.append)
        task = asyncio.create_task(up.run())
        await eventually(lambda: up.attempts >= 3, 10, "failed attempts while the server is down")
        assert up.status.state == UploadState.RETRYING and "network error" in up.status.detail
        await asyncio.to_thread(server.start)
        try:
            await eventually(lambda: up.counts().pending == 0, 20, "uploaded once the server is up")
        finally:
            await up.stop()
            await asyncio.wait_for(task, 10)
        return statuses

    try:
        statuses = run(body())
        # Stop it again mid-way through a second load, and start it once more.
        store.positions.add_many(make_fixes(60, start=T0 + 10_000))
        server.stop()
        up = uploader(store, server, batch_size=50)
        with pytest.raises(Exception, match="network error"):
            run(up.upload_once())
        server.start()
        run(run_until_drained(uploader(store, server, batch_size=50)))
    finally:
        server.stop()
    assert statuses[-1].state == UploadState.STOPPED
    assert store.positions.counts().uploaded == 180
    assert len(peer.stored) == 180


def test_restart_in_the_middle(tmp_path: Path, peer: PositionsPeer, server: ServerThread) -> None:
    path = tmp_path / "field.sqlite"
    store = Store(path)
    fixes = make_fixes(500)
    store.positions.add_many(fixes)

    async def part_one() -> None:
        up = uploader(store, server)
        await up.upload_once()
        await up.upload_once()
        await up.aclose()

    run(part_one())
    assert store.positions.counts().uploaded == 200
    store.close()  # the app quits (or is killed) with 300 fixes still to send

    store = Store(path)
    try:
        store.positions.add_many(make_fixes(50, start=T0 + 5000))  # recorded after the restart
        assert store.positions.counts().pending == 350
        run(run_until_drained(uploader(store, server)))
        counts = store.positions.counts()
        assert (counts.pending, counts.uploaded, counts.failed) == (0, 550, 0)
    finally:
        store.close()
    assert len(peer.stored) == 550
    assert sum(peer.batch_sizes()) == 550  # nothing was sent twice


def test_rejected_credentials_stop_and_ask_to_sign_in(
        store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    peer.token = "rotated"
    store.positions.add_many(make_fixes(10))
    up = uploader(store, server)
    statuses = run(run_until_drained(up))
    assert statuses[-1].state == UploadState.SIGN_IN_REQUIRED
    assert statuses[-1].detail.startswith("sign in again")
    assert store.positions.counts().pending == 10
    assert int(store.scalar("SELECT max(attempts) FROM positions")) == 0  # not the fixes' fault
    assert len(peer.requests) == 1


def test_token_refresh_on_401(store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    class Refreshing:
        def __init__(self) -> None:
            self.token = "expired"
            self.refreshes = 0

        async def access_token(self) -> str:
            return self.token

        async def refresh(self) -> bool:
            self.refreshes += 1
            self.token = TOKEN
            return True

    tokens = Refreshing()
    store.positions.add_many(make_fixes(10))
    up = PositionUploader(store, server.url, tokens, idle_interval=0.05)
    run(run_until_drained(up))
    assert tokens.refreshes == 1
    assert store.positions.counts().uploaded == 10


def test_a_batch_refused_as_a_whole_is_narrowed_down_to_the_bad_fix(
        store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    fixes = make_fixes(40)
    fixes[13] = Fix("poison", fixes[13].fix_time, 52.5, 13.4)
    store.positions.add_many(fixes)
    peer.poison_device = "poison"
    run(run_until_drained(uploader(store, server, batch_size=40)))
    counts = store.positions.counts()
    assert (counts.pending, counts.uploaded, counts.failed) == (0, 39, 1)
    assert failed_reasons(store) == {format_fix_time(fixes[13].fix_time): "HTTP 400: malformed batch"}
    assert len(peer.stored) == 39


def test_unexpected_status_is_retried_not_rejected(store: Store, peer: PositionsPeer, server: ServerThread) -> None:
    store.positions.add_many(make_fixes(3))
    peer.scripted = [(404, {}), (502, {})]
    run(run_until_drained(uploader(store, server)))
    assert store.positions.counts().uploaded == 3
