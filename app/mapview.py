"""The map widget: a QWebEngineView showing maps.page, fed through maps/bridge.js, with shapes drawn on
the map coming back over QWebChannel. Every page shares one off-the-record profile whose request
interceptor records (and, unless online tiles were chosen, blocks) any http(s) request."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from PySide6.QtCore import QObject, QUrl, Signal, Slot
from PySide6.QtWebChannel import QWebChannel
from PySide6.QtWebEngineCore import (
    QWebEnginePage,
    QWebEngineProfile,
    QWebEngineSettings,
    QWebEngineUrlRequestInfo,
    QWebEngineUrlRequestInterceptor,
)
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import QApplication, QWidget

from app.tiles import MBTilesSchemeHandler, install_tile_handler
from maps.assets import demo_mbtiles_path, resources_dir
from maps.mbtiles import MBTilesError, MBTilesReader
from maps.page import MapOptions, build_map_html

log = logging.getLogger(__name__)


class NetworkRecorder(QWebEngineUrlRequestInterceptor):
    """Notes every http(s) request a map page makes; blocks them while the map is offline-only."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.allow_network = False
        self._lock = threading.Lock()
        self._requests: list[str] = []

    def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
        url = info.requestUrl()
        if url.scheme() in ("http", "https", "ws", "wss"):
            with self._lock:
                self._requests.append(url.toString())
            if not self.allow_network:
                info.block(True)

    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


class _MapProfile:
    profile: QWebEngineProfile | None = None
    recorder: NetworkRecorder | None = None
    tiles: MBTilesSchemeHandler | None = None


def map_profile(tiles: Path | None = None) -> tuple[QWebEngineProfile, NetworkRecorder, MBTilesSchemeHandler]:
    """The process-wide map profile (in memory only: no cache or cookies on disk)."""
    if _MapProfile.profile is None:
        app = QApplication.instance()
        profile = QWebEngineProfile(app)  # no storage name: off the record
        recorder = NetworkRecorder(profile)
        profile.setUrlRequestInterceptor(recorder)
        _MapProfile.profile, _MapProfile.recorder = profile, recorder
        _MapProfile.tiles = install_tile_handler(profile, tiles or demo_mbtiles_path())
    elif tiles is not None:
        _MapProfile.tiles = install_tile_handler(_MapProfile.profile, tiles)
    assert _MapProfile.profile is not None and _MapProfile.recorder is not None and _MapProfile.tiles is not None
    return _MapProfile.profile, _MapProfile.recorder, _MapProfile.tiles


def release_map_profile() -> None:
    """Delete the shared profile once every page is gone (Chromium warns when a profile outlives
    nothing but dies before its pages)."""
    from PySide6.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    if _MapProfile.profile is not None:
        _MapProfile.profile.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    _MapProfile.profile = _MapProfile.recorder = _MapProfile.tiles = None


def options_for_tiles(path: Path, *, read_only: bool = False, online_tiles: bool = False) -> MapOptions:
    """Map options centred on what the MBTiles file covers."""
    try:
        reader = MBTilesReader(path)
    except MBTilesError:
        return MapOptions(read_only=read_only, online_tiles=online_tiles)
    info = reader.info
    reader.close()
    return MapOptions(center=(info.center[0], info.center[1]), zoom=min(max(info.center[2], info.min_zoom), 16),
                      min_zoom=3, tile_min_zoom=info.min_zoom, max_zoom=19,
                      max_native_zoom=info.max_zoom, tile_bounds=info.bounds, read_only=read_only,
                      online_tiles=online_tiles)


class MapBridge(QObject):
    """The object the page sees as `channel.objects.fleet`."""

    page_ready = Signal()
    shape_drawn = Signal(str, dict)  # kind ("geofence" | "route"), {"geometry", "radius_m"}
    shape_edited = Signal(str, str, dict)  # collection, record id, {"geometry", "radius_m"}
    shape_deleted = Signal(str, str)  # collection, record id
    vehicle_clicked = Signal(str)
    user_moved = Signal()  # the user dragged the map

    @Slot()
    def pageReady(self) -> None:
        self.page_ready.emit()

    @Slot(str, str)
    def shapeDrawn(self, kind: str, shape: str) -> None:
        self.shape_drawn.emit(kind, json.loads(shape))

    @Slot(str, str, str)
    def shapeEdited(self, collection: str, record_id: str, shape: str) -> None:
        self.shape_edited.emit(collection, record_id, json.loads(shape))

    @Slot(str, str)
    def shapeDeleted(self, collection: str, record_id: str) -> None:
        self.shape_deleted.emit(collection, record_id)

    @Slot(str)
    def vehicleClicked(self, vehicle_id: str) -> None:
        self.vehicle_clicked.emit(vehicle_id)

    @Slot()
    def userMoved(self) -> None:
        self.user_moved.emit()


class MapView(QWebEngineView):
    """Loads the offline map page and queues bridge calls until the page says it is ready."""

    ready = Signal()

    def __init__(self, options: MapOptions | None = None, *, tiles: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        tiles_path = tiles or demo_mbtiles_path()
        self.options = options or options_for_tiles(tiles_path)
        profile, self.recorder, self.tile_handler = map_profile(tiles_path)
        if self.options.online_tiles:
            self.recorder.allow_network = True
        self.setPage(QWebEnginePage(profile, self))
        # The page is a local file: Chromium treats the mbtiles: scheme as remote to it and would
        # refuse every tile without this. Real network requests stay blocked by the recorder.
        self.page().settings().setAttribute(QWebEngineSettings.WebAttribute.LocalContentCanAccessRemoteUrls, True)
        self.bridge = MapBridge(self)
        self.channel = QWebChannel(self.page())
        self.channel.registerObject("fleet", self.bridge)
        self.page().setWebChannel(self.channel)
        self.is_ready = False
        self._queue: list[str] = []
        self.bridge.page_ready.connect(self._on_ready)
        self.load_page()

    def load_page(self) -> None:
        self.is_ready = False
        base = QUrl.fromLocalFile(str(resources_dir()) + "/")
        self.setHtml(build_map_html(self.options), base)

    def _on_ready(self) -> None:
        self.is_ready = True
        queued, self._queue = self._queue, []
        for script in queued:
            self.page().runJavaScript(script)
        self.ready.emit()

    def call(self, function: str, *args: Any) -> None:
        """Call a bridge function with JSON arguments, now or as soon as the page is ready."""
        script = f"{function}({','.join(orjson.dumps(a).decode() for a in args)})"
        if self.is_ready:
            self.page().runJavaScript(script)
        else:
            self._queue.append(script)

    def evaluate(self, script: str, callback: Callable[[Any], None]) -> None:
        self.page().runJavaScript(script, 0, callback)

    def request_state(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """mapState() as a dict, delivered to callback."""
        def done(value: Any) -> None:
            callback(json.loads(value) if isinstance(value, str) else {})

        self.evaluate("typeof mapState === 'function' ? mapState() : '{}'", done)
