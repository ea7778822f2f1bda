"""Process set-up that must happen before the QApplication exists: the tile URL scheme, and the
Chromium flags QtWebEngine needs headless or as root."""

from __future__ import annotations

import os


def prepare_qt(*, headless: bool = False) -> None:
    if headless:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Chromium refuses to sandbox as root (containers, CI); the page is local and trusted.
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        flags = os.environ.get("QTWEBENGINE_CHROMIUM_FLAGS", "")
        for flag in ("--disable-gpu", "--no-sandbox"):
            if flag == "--no-sandbox" and os.environ.get("QTWEBENGINE_DISABLE_SANDBOX") != "1":
                continue
            if flag not in flags:
                flags = f"{flags} {flag}".strip()
        os.environ["QTWEBENGINE_CHROMIUM_FLAGS"] = flags
    from app.tiles import register_scheme

    register_scheme()
