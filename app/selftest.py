"""`webhost-desktop --self-test`: headless checks, one line each, non-zero exit when any fails.

The map check loads the real map page in an offscreen QWebEngineView whose request interceptor
records every http(s) request; the page must define Leaflet, draw tiles from the MBTiles file and
make no network request at all.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAP_TIMEOUT_S = 60.0


class Report:
    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.failures = 0
        self.out = out

    def line(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> None:
        self.failures += not ok
        tag = "FAIL" if not ok else ("warn" if warning else "ok  ")
        self.out(f"{tag} {name}: {detail}")


def run(out: Callable[[str], None] = print) -> int:
    from app.env import prepare_qt

    prepare_qt(headless=True)
    report = Report(out)
    _spatialite(report)
    _assets(report)
    _store(report)
    _keyring(report)
    _map_page(report)
    return 1 if report.failures else 0


def _spatialite(report: Report) -> None:
    from storage import Store, find_spatialite

    try:
        path = find_spatialite()
        # Opening a store loads the extension and runs the spatial migrations: proof it works.
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "probe.sqlite"):
            pass
        report.line("mod_spatialite loads", True, str(path))
    except Exception as exc:
        report.line("mod_spatialite loads", False, str(exc))


def _assets(report: Report) -> None:
    from maps.assets import LEAFLET_FILES, check_assets, demo_mbtiles_path
    from maps.mbtiles import MBTilesReader

    try:
        root = check_assets()
        version = (root / "leaflet" / "VERSIONS").read_text().split("\n")[0] \
            if (root / "leaflet" / "VERSIONS").exists() else ""
        report.line("Leaflet assets present", True, f"{len(LEAFLET_FILES)} files under {root / 'leaflet'} ({version})")
    except Exception as exc:
        report.line("Leaflet assets present", False, str(exc))
    try:
        reader = MBTilesReader(demo_mbtiles_path())
        count, info = reader.count(), reader.info
        reader.close()
        report.line("offline tiles present", count > 0,
                    f"{count} tiles, zoom {info.min_zoom}-{info.max_zoom}, {info.name}")
    except Exception as exc:
        report.line("offline tiles present", False, str(exc))


def _store(report: Report) -> None:
    from storage import Store

    try:
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "self-test.sqlite") as store:
            store.sync_log.set_meta("self_test", "1")
            ok = store.integrity_check() == "ok" and store.sync_log.get_meta("self_test") == "1"
            report.line("store is writable", ok, str(store.path))
    except Exception as exc:
        report.line("store is writable", False, str(exc))


def _keyring(report: Report) -> None:
    from app.accounts import keyring_status

    status = keyring_status()
    report.line("keyring backend", True, status.describe(), warning=not status.secure)


def _map_page(report: Report) -> None:
    from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.mapview import MapView, release_map_profile
    from maps.page import build_map_html, external_urls

    name = "map page loads without network"
    try:
        html_urls = external_urls(build_map_html())
        app = QApplication.instance() or QApplication(["webhost-desktop-self-test"])
        view = MapView()
        view.resize(900, 650)
        view.show()
        state: dict[str, Any] = {}
        typeof_l: list[Any] = []
        loop = QEventLoop()
        deadline = time.monotonic() + MAP_TIMEOUT_S

        def poll() -> None:
            if time.monotonic() > deadline:
                loop.quit()
                return
            if view.is_ready and not typeof_l:
                view.evaluate("typeof L", typeof_l.append)
            if view.is_ready:
                view.request_state(lambda s: state.update(s))
            if state.get("tilesLoaded", 0) > 0 and typeof_l:
                loop.quit()

        timer = QTimer()
        timer.setInterval(100)
        timer.timeout.connect(poll)
        timer.start()
        loop.exec()
        timer.stop()
        requests = view.recorder.requests()
        problems = []
        if html_urls:
            problems.append(f"the page names external URLs: {', '.join(html_urls[:3])}")
        if requests:
            problems.append(f"it requested {len(requests)} network URL(s): {', '.join(requests[:3])}")
        if not typeof_l or typeof_l[0] != "object":
            problems.append(f"typeof L is {typeof_l[0] if typeof_l else 'unknown (page never ready)'}")
        if state.get("tilesLoaded", 0) <= 0:
            problems.append(f"no offline tile rendered (tile errors: {state.get('tileErrors', '?')})")
        detail = "; ".join(problems) or (f"Leaflet loaded, {state['tilesLoaded']} offline tiles drawn, "
                                         "0 network requests")
        report.line(name, not problems, detail)
        view.close()
        view.deleteLater()
        release_map_profile()
        QCoreApplication.processEvents()
        del app
    except Exception as exc:
        report.line(name, False, f"{type(exc).__name__}: {exc}")
