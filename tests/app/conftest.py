"""Qt runs offscreen (Picard's rule) with one QApplication for the session (pytest-qt's qapp), and
every profile, log and keyring look-up goes to a temporary home, never the developer's."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--disable-gpu --no-sandbox")
_HOME = tempfile.mkdtemp(prefix="webhost-app-tests-")
for _var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
    os.environ[_var] = os.path.join(_HOME, _var.lower())

from app.env import prepare_qt  # noqa: E402

prepare_qt(headless=True)  # the mbtiles: scheme must be registered before the QApplication exists

import gc  # noqa: E402
import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import keyring  # noqa: E402
import pytest  # noqa: E402
from keyring.backend import KeyringBackend  # noqa: E402
from pytestqt.qtbot import QtBot  # noqa: E402

from app.context import FleetContext  # noqa: E402
from app.mapview import MapView  # noqa: E402

MAP_TIMEOUT_MS = 60_000


@pytest.fixture(scope="session", autouse=True)
def _release_web_profile_last(qapp: Any) -> Iterator[None]:
    from app.collector import UiThreadCollector

    collector = UiThreadCollector()  # as the app does: no garbage collection in worker threads
    yield
    from app.mapview import release_map_profile

    release_map_profile()
    collector.stop()


@pytest.fixture(autouse=True)
def _collect_on_the_ui_thread(qapp: Any) -> Iterator[None]:
    """Each test's closed windows are freed here, on the UI thread, before the next test starts."""
    yield
    from PySide6.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


@pytest.fixture
def ctx(qapp: Any, tmp_path: Path) -> Iterator[FleetContext]:
    context = FleetContext.open(tmp_path / "profile")
    yield context
    context.close()


def map_state(qtbot: QtBot, view: MapView) -> dict[str, Any]:
    box: list[dict[str, Any]] = []
    view.request_state(box.append)
    qtbot.waitUntil(lambda: bool(box), timeout=10_000)
    return box[0]


def wait_map(qtbot: QtBot, view: MapView, check: Any, timeout: int = MAP_TIMEOUT_MS) -> dict[str, Any]:
    """Poll mapState() until check(state) holds; returns that state."""
    last: dict[str, Any] = {}

    def holds() -> bool:
        last.clear()
        last.update(map_state(qtbot, view))
        return bool(last) and bool(check(last))  # {} until the page has loaded

    qtbot.waitUntil(holds, timeout=timeout)
    return last


def evaluate(qtbot: QtBot, view: MapView, script: str) -> Any:
    box: list[Any] = []
    view.evaluate(script, box.append)
    qtbot.waitUntil(lambda: bool(box), timeout=10_000)
    value = box[0]
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


@pytest.fixture
def ready_map(qtbot: QtBot, qapp: Any) -> Iterator[MapView]:
    view = MapView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    if not view.is_ready:
        with qtbot.waitSignal(view.ready, timeout=MAP_TIMEOUT_MS):
            pass
    yield view


class MemoryKeyring(KeyringBackend):
    """A secure keyring held in memory: what a desktop with a working Secret Service offers."""

    priority = 5  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.values.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


class InsecureKeyring(MemoryKeyring):
    """What a vehicle PC without a Secret Service has: only a plain-text store (keyrings.alt's
    PlaintextKeyring and the like), which the app must not trust with a token."""

    priority = 0.5  # type: ignore[assignment]


@pytest.fixture
def no_secure_keyring() -> Iterator[InsecureKeyring]:
    previous = keyring.get_keyring()
    backend = InsecureKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)
