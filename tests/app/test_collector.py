"""Garbage is collected on the UI thread only: allocation in a worker never runs the collector."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

from app.collector import UiThreadCollector


class Node:
    def __init__(self) -> None:
        self.other: Any = self  # a reference cycle: only the cyclic collector frees it


def test_worker_threads_never_collect_and_the_ui_thread_does(qapp: Any) -> None:
    collector = UiThreadCollector()
    try:
        assert not gc.isenabled()
        gc.collect()
        garbage = Node()
        alive = weakref.ref(garbage)
        del garbage

        kept: list[list[int]] = []

        def allocate() -> None:
            kept.extend([index] for index in range(200_000))  # far past every generation's threshold

        worker = threading.Thread(target=allocate)
        worker.start()
        worker.join()
        assert alive() is not None  # the worker's allocations did not trigger a collection
        assert gc.get_count()[0] > gc.get_threshold()[0]
        collector.check()  # what the UI-thread timer does every second
        assert alive() is None
    finally:
        collector.stop()
    assert gc.isenabled()
