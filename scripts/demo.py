"""`make demo`: the whole system on one machine, with nothing to install by hand.

Loads the demo tenant into an embedded store of its own, starts the server, drives the demo
fleet through the real ingest API and (unless --headless) opens the desktop app signed in as the
dispatcher. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import platformdirs

from server_stub import demo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _pick_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}; see the lines above")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer {url}/health within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--headless", action="store_true", help="server and simulator only, no desktop app")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("WEBHOST_DEMO_DIR") or platformdirs.user_data_dir("webhost-fleet"))
                        / "demo", help="where the demo's embedded store lives")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--run-seconds", type=float, default=0, help="stop by itself after this long (0: never)")
    args = parser.parse_args()

    args.data_dir.mkdir(parents=True, exist_ok=True)
    port = _pick_port(args.port)
    url = f"http://127.0.0.1:{port}"
    # The demo runs in development mode, said explicitly: the server keeps a generated secret next
    # to the demo store instead of requiring WEBHOST_SECRET_KEY, as it would by default.
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{args.data_dir / 'fleet-server.sqlite'}",
           "HOST": "127.0.0.1", "PORT": str(port), "WEBHOST_ENV": "development"}
    loaded = subprocess.run([str(BIN / "webhost-server"), "demo-data"], env=env, capture_output=True, text=True)
    if loaded.returncode != 0:
        print(loaded.stderr, file=sys.stderr)
        return loaded.returncode
    print("WebHost Fleet demo")
    print(loaded.stdout.rstrip())
    print(f"  admin page: {url}/admin    API: {url}/api/openapi.json    health: {url}/health")

    server = subprocess.Popen([str(BIN / "webhost-server"), "serve", "--quiet"], env=env)
    desktop: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    try:
        _wait_healthy(url, server)
        print(f"  server: {url} (embedded store in {args.data_dir})")
        has_screen = any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
        if not args.headless and not has_screen and sys.platform.startswith("linux"):
            print("  desktop app: not started, there is no display (DISPLAY is unset); "
                  "run `make demo` in a desktop session, or use `make demo HEADLESS=1`")
        elif not args.headless:
            desktop_env = {**env, "WEBHOST_EMAIL": demo.USERS["dispatcher"], "WEBHOST_PASSWORD": demo.PASSWORD}
            desktop = subprocess.Popen([str(BIN / "webhost-desktop"), "--server", url,
                                        "--profile", str(args.data_dir / "desktop-dispatcher")], env=desktop_env)
            print("  desktop app: signed in as the dispatcher")
        print(f"  simulator: {demo.VEHICLE_COUNT} vehicles driving their tours (Ctrl-C stops the demo)")

        async def drive() -> None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, stop.set)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            if args.run_seconds:
                loop.call_later(args.run_seconds, stop.set)
            await demo.drive_fleet(url, demo.USERS["dispatcher"], demo.PASSWORD, stop=stop)

        asyncio.run(drive())
    finally:
        for process in (desktop, server):
            if process is not None and process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
