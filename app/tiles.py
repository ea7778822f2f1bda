"""Offline tiles for the map page: a Qt URL scheme handler serving `mbtiles:///{z}/{x}/{y}.png` from an
MBTiles file (read by maps.mbtiles), so Leaflet gets tiles with no network at all."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject
from PySide6.QtWebEngineCore import (
    QWebEngineProfile,
    QWebEngineUrlRequestJob,
    QWebEngineUrlScheme,
    QWebEngineUrlSchemeHandler,
)

from maps.mbtiles import MBTilesError, MBTilesReader

log = logging.getLogger(__name__)

SCHEME = b"mbtiles"
_TILE_PATH = re.compile(r"/?(\d+)/(\d+)/(\d+)(?:\.\w+)?$")


def register_scheme() -> None:
    """Declare the scheme to Chromium; must run before the QApplication exists (Qt's rule)."""
    if QWebEngineUrlScheme.schemeByName(SCHEME).name() == SCHEME:
        return
    scheme = QWebEngineUrlScheme(SCHEME)
    scheme.setSyntax(QWebEngineUrlScheme.Syntax.Path)
    scheme.setFlags(
        QWebEngineUrlScheme.Flag.SecureScheme
        | QWebEngineUrlScheme.Flag.LocalAccessAllowed
        | QWebEngineUrlScheme.Flag.CorsEnabled
    )
    QWebEngineUrlScheme.registerScheme(scheme)


class MBTilesSchemeHandler(QWebEngineUrlSchemeHandler):
    """Answers tile requests from one MBTiles file; a missing tile is a 404, never an exception."""

    def __init__(self, path: Path | None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.reader: MBTilesReader | None = None
        self.served = 0
        self.missing = 0
        if path is not None:
            self.set_file(path)

    def set_file(self, path: Path) -> None:
        try:
            self.reader = MBTilesReader(path)
        except MBTilesError as exc:
            log.warning("offline tiles unavailable: %s", exc)
            self.reader = None

    def requestStarted(self, job: QWebEngineUrlRequestJob) -> None:
        match = _TILE_PATH.search(job.requestUrl().path())
        data = None
        if match is not None and self.reader is not None:
            z, x, y = (int(v) for v in match.groups())
            data = self.reader.tile(z, x, y)
        if data is None:
            self.missing += 1
            job.fail(QWebEngineUrlRequestJob.Error.UrlNotFound)
            return
        buffer = QBuffer(job)  # owned by the job, freed with it
        buffer.setData(QByteArray(data))
        buffer.open(QIODevice.OpenModeFlag.ReadOnly)
        self.served += 1
        job.reply(b"image/png", buffer)


def install_tile_handler(profile: QWebEngineProfile, path: Path | None) -> MBTilesSchemeHandler:
    """The profile's tile handler, installed once per profile (several windows share it)."""
    existing = profile.urlSchemeHandler(SCHEME)
    if isinstance(existing, MBTilesSchemeHandler):
        if path is not None and (existing.reader is None or existing.reader.path != path.resolve()):
            existing.set_file(path)
        return existing
    handler = MBTilesSchemeHandler(path, profile)
    profile.installUrlSchemeHandler(SCHEME, handler)
    return handler
