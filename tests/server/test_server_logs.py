"""Tokens never reach the server's logs: a real `webhost-server serve` subprocess with its access
log on, real HTTP and websocket clients that put their token in the query string."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from .conftest import ROOT, run_cli


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_tokens_in_query_strings_are_scrubbed_from_the_access_log(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'server' / 'fleet-server.sqlite'}"
    assert run_cli("migrate", database_url=database_url, tmp_path=tmp_path).returncode == 0
    tenant = run_cli("create-tenant", "Logged Lorries", database_url=database_url, tmp_path=tmp_path).stdout.strip()
    email, password = f"dispatcher-{secrets.token_hex(4)}@example.com", "correct horse battery"
    created = run_cli("create-user", email, "--role", "dispatcher", "--tenant", tenant, "--password", password,
                      database_url=database_url, tmp_path=tmp_path)
    assert created.returncode == 0, created.stderr

    port = free_port()
    script = Path(sys.executable).parent / "webhost-server"
    env = {**os.environ, "DATABASE_URL": database_url, "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "WEBHOST_ENV": "development", "PYTHONUNBUFFERED": "1"}
    env.pop("WEBHOST_SECRET_KEY", None)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([str(script), "serve", "--port", str(port), "--no-migrate"], env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        signed_in = httpx.post(f"{base}/api/v1/auth/token", json={"email": email, "password": password}, timeout=15)
        token = signed_in.json()["access_token"]
        forged = "forged-" + secrets.token_urlsafe(24)

        with ws_connect(f"ws://127.0.0.1:{port}/sync/{tenant}?token={token}&acks=1", open_timeout=10) as sync:
            sync.recv(timeout=10)
        with ws_connect(f"ws://127.0.0.1:{port}/api/v1/live?token={token}", open_timeout=10) as live:
            live.recv(timeout=10)
        try:
            with ws_connect(f"ws://127.0.0.1:{port}/api/v1/live?token={forged}", open_timeout=10):
                pass
        except InvalidStatus:
            pass  # refused, and logged as refused
        assert httpx.get(f"{base}/api/v1/vehicles", params={"token": token}, timeout=15).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    output = log_path.read_text()
    assert "/api/v1/vehicles?token=***" in output  # the lines are there, with the value scrubbed
    assert f"/sync/{tenant}?token=***&acks=1" in output
    assert "/api/v1/live?token=***" in output
    assert token not in output
    assert forged not in output
