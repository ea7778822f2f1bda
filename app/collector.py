"""Garbage collection on the UI thread only (Anki's GarbageCollector rule).

Python's cyclic collector runs in whichever thread happens to allocate when a threshold is
crossed. When that is a worker thread and the garbage holds Qt widgets, PySide defers their C++
deletion to the UI thread's next Python call, which can be inside a Qt callback holding a Qt
mutex (a QWebEngine request interceptor, for one): the widget's destructor then waits on that
mutex forever. So automatic collection is switched off and a timer collects on the UI thread.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

CHECK_INTERVAL_MS = 1000


class UiThreadCollector(QObject):
    """Create once on the UI thread, after the QApplication; collects by the usual thresholds."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_INTERVAL_MS)
        self._timer.timeout.connect(self.check)
        self._timer.start()

    def check(self) -> int:
        """Collect the oldest generation whose allocation count passed its threshold; 0 if none."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self._thresholds[generation]:
                return gc.collect(generation)
        return 0

    def collect_now(self) -> int:
        return gc.collect()

    def stop(self) -> None:
        """Back to Python's automatic collection (at shutdown, or when tests are done)."""
        self._timer.stop()
        gc.enable()
