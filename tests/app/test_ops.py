"""Background operations: results arrive on the UI thread, and a result for a widget that was
closed meanwhile is dropped quietly instead of raising inside the Qt event loop."""

from __future__ import annotations

import threading
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from app.ops import Ops


class Announcer(QObject):
    pushed = Signal(str)


def test_results_arrive_on_the_ui_thread(qtbot: QtBot, qapp: Any) -> None:
    ops = Ops()
    seen: list[tuple[int, bool]] = []
    on_ui_thread = threading.main_thread()
    op = ops.read(lambda: 41 + 1, lambda value: seen.append((value, threading.current_thread() is on_ui_thread)))
    qtbot.waitUntil(lambda: op.is_done)
    assert seen == [(42, True)]
    ops.shutdown()


def test_a_result_for_a_deleted_widget_or_signal_source_is_dropped(qtbot: QtBot, qapp: Any) -> None:
    ops = Ops()
    gate = threading.Event()
    label, announcer = QLabel(), Announcer()
    to_label = ops.read(lambda: gate.wait(10) and "late", label.setText)
    to_signal = ops.read(lambda: gate.wait(10) and "moves", announcer.pushed.emit)
    shiboken6.delete(label)  # the window closed while the work ran
    shiboken6.delete(announcer)
    gate.set()
    # pytest-qt fails the test if either callback raised inside the event loop.
    qtbot.waitUntil(lambda: to_label.is_done and to_signal.is_done)
    assert to_label.error is None and to_signal.error is None
    ops.shutdown()
