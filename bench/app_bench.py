"""Desktop app benchmark: cold start to window shown, and UI event-loop latency with 5k vehicles
moving on the map at 1 Hz (goals: under 2 s and under 50 ms p99).

Run: .venv/bin/python -m bench.app_bench   (add --quick for a shorter run)

- Cold start: a fresh interpreter per run (`python -m bench.app_bench --child-start`) that imports
  the app, opens a profile and shows the dispatcher window; the parent times spawn -> "shown" (the
  first turn of the event loop after show()) and spawn -> "map ready" (Leaflet up, tiles drawn).
- Latency: a 10 ms QTimer probe on the UI thread records how late each tick fires, first with the
  5k-vehicle window idle (the same-run baseline), then while a feeder thread writes 5000 new latest
  fixes every second and announces them on the change signal, exactly as the live feed does; the
  map controller reads them on a worker and moves the markers through moveVehicles().
Runs offscreen (QT_QPA_PLATFORM=offscreen) unless a display is configured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VEHICLES = 5000


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- cold start --------------------------------------------------------------------------------------


def child_start(profile: str, t_spawn: float) -> int:
    """Runs in the fresh interpreter: everything from imports to the shown window is timed."""
    from app.env import prepare_qt

    prepare_qt()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.launch import open_window

    app = QApplication(sys.argv[:1])
    window = open_window(profile, None, False)
    assert window is not None
    window.show()

    def shown() -> None:
        print(f"shown {time.time() - t_spawn:.4f}", flush=True)
        poll()

    def poll() -> None:
        view = window.map  # type: ignore[attr-defined]

        def got(state: dict[str, Any]) -> None:
            if state.get("tilesLoaded", 0) > 0 and state.get("markers", 0) > 0:
                print(f"map {time.time() - t_spawn:.4f}", flush=True)
                app.quit()
            else:
                QTimer.singleShot(20, poll)

        if view.is_ready:
            view.request_state(got)
        else:
            QTimer.singleShot(20, poll)

    QTimer.singleShot(0, shown)
    QTimer.singleShot(60_000, app.quit)
    app.exec()
    window.ctx.close()  # type: ignore[attr-defined]
    return 0


def cold_start(runs: int) -> dict[str, list[float]]:
    env = {**os.environ}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory() as tmp:
        # Not XDG_CACHE_HOME: an empty fontconfig cache would be rebuilt on every run.
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
            env[var] = str(Path(tmp) / var.lower())
        profile = str(Path(tmp) / "profile")
        # The first run creates the profile and its demo fleet; it is not timed.
        subprocess.run([sys.executable, "-m", "bench.app_bench", "--child-start", profile, str(time.time())],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
        shown, mapped = [], []
        for _ in range(runs):
            t0 = time.time()
            result = subprocess.run([sys.executable, "-m", "bench.app_bench", "--child-start", profile, str(t0)],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
            marks = dict(line.split()[:2] for line in result.stdout.splitlines()
                         if line.split()[:1] in (["shown"], ["map"]))
            shown.append(float(marks["shown"]))
            mapped.append(float(marks["map"]))
    return {"shown": shown, "map": mapped}


# -- event-loop latency ------------------------------------------------------------------------------


def latency(seconds: float) -> dict[str, Any]:
    from app.env import prepare_qt

    prepare_qt(headless=True)
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.context import FleetContext
    from app.demo import BOUNDS, populate
    from app.dispatcher import DispatcherWindow
    from app.mapview import release_map_profile
    from storage.vehicles import LatestFix, VehicleId

    _app = QApplication.instance() or QApplication(sys.argv[:1])  # kept alive for the whole run

    def spin(condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            loop = QEventLoop()
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        return condition()

    with tempfile.TemporaryDirectory() as tmp:
        ctx = FleetContext.open(Path(tmp) / "profile")
        demo = populate(ctx.mirror, vehicles=VEHICLES, with_track=False, with_invalid=False)
        ids = demo.vehicle_ids
        window = DispatcherWindow(ctx)
        window.resize(1400, 860)
        window.show()
        state: dict[str, Any] = {}
        view = window.map

        def markers_up() -> bool:
            view.request_state(lambda s: state.update(s))
            return state.get("markers") == len(ids)

        assert spin(markers_up, 120), f"the map never showed {len(ids)} markers: {state}"

        def probe(duration: float) -> list[float]:
            lateness: list[float] = []
            clock = QElapsedTimer()
            timer = QTimer()
            timer.setInterval(10)
            last = [0.0]

            def tick() -> None:
                now = clock.nsecsElapsed() / 1e6
                lateness.append(max(0.0, now - last[0] - 10.0))
                last[0] = now

            timer.timeout.connect(tick)
            clock.start()
            timer.start()
            spin(lambda: False, duration)
            timer.stop()
            return lateness[1:]

        baseline = probe(min(10.0, seconds))
        stop = threading.Event()
        rounds = [0]
        write_ms: list[float] = []
        rng = random.Random(3)

        def feed() -> None:
            next_at = time.monotonic()
            while not stop.is_set():
                t = time.time()
                started = time.perf_counter()
                ctx.store.vehicles.record_fixes(
                    LatestFix(VehicleId(vid), t, round(rng.uniform(BOUNDS[0], BOUNDS[2]), 6),
                              round(rng.uniform(BOUNDS[1], BOUNDS[3]), 6), 30.0, None) for vid in ids)
                write_ms.append((time.perf_counter() - started) * 1000)
                ctx.signals.notify("live", {"latest_fixes": set(ids)})
                rounds[0] += 1
                next_at += 1.0
                stop.wait(max(0.0, next_at - time.monotonic()))

        feeder = threading.Thread(target=feed, daemon=True)
        before = dict(state)
        feeder.start()
        loaded = probe(seconds)
        stop.set()
        feeder.join()
        final: dict[str, Any] = {}

        def settled() -> bool:
            fresh: dict[str, Any] = {}
            view.request_state(fresh.update)
            spin(lambda: bool(fresh), 5)
            final.update(fresh)
            return fresh.get("pendingMoves") == 0

        spin(settled, 30)
        window.close()
        window.deleteLater()
        ctx.close()
        release_map_profile()
    return {"baseline": baseline, "loaded": loaded, "rounds": rounds[0], "write_ms": write_ms,
            "moves_applied": final.get("movesApplied", 0) - before.get("movesApplied", 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument("--child-start", nargs=2, metavar=("PROFILE", "T0"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_start:
        return child_start(args.child_start[0], float(args.child_start[1]))
    runs, seconds = (3, 10.0) if args.quick else (7, 30.0)
    start = cold_start(runs)
    print(f"cold start to window shown:  median {statistics.median(start['shown']) * 1000:7.0f} ms   "
          f"max {max(start['shown']) * 1000:7.0f} ms   (goal < 2000 ms; {runs} runs)")
    print(f"cold start to map drawn:     median {statistics.median(start['map']) * 1000:7.0f} ms   "
          f"max {max(start['map']) * 1000:7.0f} ms   (Leaflet up, offline tiles and markers drawn)")
    lat = latency(seconds)
    base, loaded = lat["baseline"], lat["loaded"]
    print(f"UI event-loop lateness, {VEHICLES} vehicles idle:        p50 {_pct(base, .5):5.1f} ms   "
          f"p99 {_pct(base, .99):5.1f} ms   max {max(base):6.1f} ms   (baseline)")
    print(f"UI event-loop lateness, {VEHICLES} vehicles moving 1 Hz: p50 {_pct(loaded, .5):5.1f} ms   "
          f"p99 {_pct(loaded, .99):5.1f} ms   max {max(loaded):6.1f} ms   (goal p99 < 50 ms)")
    print(f"  {lat['rounds']} rounds of {VEHICLES} fixes; {lat['moves_applied']} marker moves applied in the page; "
          f"store write per round median {statistics.median(lat['write_ms']):.0f} ms (feeder thread)")
    if args.json:
        print(json.dumps({"cold_start": start, "latency": {k: v for k, v in lat.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
