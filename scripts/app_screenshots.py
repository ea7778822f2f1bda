"""Screenshots of the dispatcher window (the demo fleet on the offline map) and the field window.

    xvfb-run -a python -m scripts.app_screenshots [--out test-artifacts]

Prints one JSON object: the map state of each window (markers, tiles drawn, layers) and pixel
statistics of each image, which tests/app/test_screenshots.py checks. Runs under a real X server
(Xvfb) so the screenshots are what a person would see; QT_QPA_PLATFORM=offscreen works too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def wait(app: Any, condition: Callable[[], bool], timeout: float = 60.0, step_ms: int = 50) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        from PySide6.QtCore import QEventLoop, QTimer

        loop = QEventLoop()
        QTimer.singleShot(step_ms, loop.quit)
        loop.exec()
    return condition()


def map_state(app: Any, view: Any) -> dict[str, Any]:
    box: list[dict[str, Any]] = []
    view.request_state(box.append)
    wait(app, lambda: bool(box), 10)
    return box[0] if box else {}


def pixel_stats(image: Any) -> dict[str, Any]:
    """How many distinct colours a sample of pixels has: a blank or failed map has one or two."""
    colours = set()
    width, height = image.width(), image.height()
    for y in range(0, height, max(1, height // 60)):
        for x in range(0, width, max(1, width // 80)):
            colours.add(image.pixel(x, y))
    return {"width": width, "height": height, "distinct_colours": len(colours)}


def settle_map(app: Any, view: Any, *, markers: int) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def ready() -> bool:
        state.update(map_state(app, view))
        return state.get("markers", 0) >= markers and state.get("tilesLoaded", 0) >= 4 \
            and state.get("pendingMoves", 1) == 0

    wait(app, ready, 90)
    wait(app, lambda: False, 1.0)  # let the last tiles fade in before the picture
    return map_state(app, view)


def dispatcher_shot(app: Any, out: Path, workdir: Path) -> dict[str, Any]:
    from app.context import FleetContext
    from app.demo import populate
    from app.dispatcher import DispatcherWindow

    ctx = FleetContext.open(workdir / "dispatcher")
    demo = populate(ctx.mirror)
    window = DispatcherWindow(ctx)
    window.resize(1500, 900)
    window.show()
    tab = window.collection_tabs["vehicles"]
    wait(app, lambda: tab.model.rowCount() == len(demo.vehicle_ids), 30)
    assert demo.tracked_vehicle is not None and demo.track_span is not None
    tab.select_id(demo.tracked_vehicle)
    window.details.set_range(demo.track_span[0] - 60, demo.track_span[1] + 60)
    window.details.load_history()
    wait(app, lambda: window.details.track is not None, 30)
    window.details.move_cursor_to(len(window.details.track.points) // 2 if window.details.track else 0)
    state = settle_map(app, window.map, markers=len(demo.vehicle_ids))
    window.map.call("fitFleet")
    state = settle_map(app, window.map, markers=len(demo.vehicle_ids))
    image = window.grab().toImage()
    path = out / "dispatcher.png"
    image.save(str(path))
    map_image = window.map.grab().toImage()
    result = {"path": str(path), "map": state, "pixels": pixel_stats(image), "map_pixels": pixel_stats(map_image),
              "vehicles_rows": tab.model.rowCount(), "status": window.status.state.text(),
              "network_requests": window.map.recorder.requests()}
    window.close()
    window.deleteLater()
    ctx.close()
    return result


def field_shot(app: Any, out: Path, workdir: Path) -> dict[str, Any]:
    from app.context import FleetContext
    from app.demo import ROUTES, demo_track, populate
    from app.field import FieldWindow

    ctx = FleetContext.open(workdir / "field")
    demo = populate(ctx.mirror, with_track=False)
    window = FieldWindow(ctx)
    window.resize(1400, 860)
    window.show()
    wait(app, lambda: window.vehicle.count() > 0, 30)
    window.vehicle.setCurrentIndex(window.vehicle.findText("Van 01"))  # nothing is assigned to this user
    # Drive the first route, but veer off it in the middle: a corridor alert and a geofence entry.
    coords = ROUTES["Station - Hakaniemi"]
    fixes = list(demo_track(demo.vehicle_ids[0], coords, start=time.time() - 600, device_id="demo-00001"))
    middle = len(fixes) // 2
    import dataclasses

    for k in range(middle, middle + 6):
        fixes[k] = dataclasses.replace(fixes[k], lon=fixes[k].lon + 0.004)
    window.start_recording(fixes)
    wait(app, lambda: not window.recorder.recording and len(window.alert_texts) >= 2, 60)
    state = settle_map(app, window.map, markers=1)
    image = window.grab().toImage()
    path = out / "field.png"
    image.save(str(path))
    result = {"path": str(path), "map": state, "pixels": pixel_stats(image), "alerts": window.alert_texts,
              "speed": window.speed.text(), "outbox": window.outbox.text(),
              "edit_buttons_visible": any(tab.add_button.isVisibleTo(tab) for tab in window.collection_tabs.values()),
              "network_requests": window.map.recorder.requests()}
    window.close()
    window.deleteLater()
    ctx.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from app.env import prepare_qt

    prepare_qt()
    from PySide6.QtWidgets import QApplication

    from app.mapview import release_map_profile

    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        result = {"dispatcher": dispatcher_shot(app, args.out, Path(tmp)),
                  "field": field_shot(app, args.out, Path(tmp))}
    release_map_profile()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
