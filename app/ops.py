"""Background work with results back on the UI thread (Anki's CollectionOp and QueryOp).

Writes run one at a time, in order, on a single worker; reads run on a small pool. Success and
failure callbacks always run on the UI thread, so widgets are only ever touched there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from storage import StoreClosed

log = logging.getLogger(__name__)

T = TypeVar("T")


class Cancelled(Exception):
    """The user cancelled a long operation."""


class Progress:
    """Handed to long operations: report progress, and check whether the user cancelled."""

    def __init__(self, relay: _Relay) -> None:
        self._relay = relay
        self._cancel = threading.Event()

    def report(self, done: int, total: int, text: str = "") -> None:
        self._relay.progress.emit(done, total, text)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled")


class _Relay(QObject):
    done = Signal(object)
    failed = Signal(object)
    progress = Signal(int, int, str)


def _run_job(job: list[Callable[[], Any]], relay: _Relay) -> None:
    """Runs job[0] and lets go of it before reporting: the UI thread empties the list, so the
    closure (and any widget it captured) is freed there, never in this worker. PySide defers a
    widget freed in another thread to an arbitrary later moment on the UI thread, which can
    deadlock inside a Qt callback (see app.collector)."""
    fn = job[0]
    try:
        result = fn()
    except BaseException as exc:  # delivered to the UI thread, never lost in the worker
        del fn
        relay.failed.emit(exc)
    else:
        del fn
        relay.done.emit(result)


class Op(QObject, Generic[T]):
    """One submitted operation; `finished` fires on the UI thread after the callbacks ran."""

    finished = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.relay = _Relay(self)
        self.progress = Progress(self.relay)
        self.result: T | None = None
        self.error: BaseException | None = None
        self.is_done = False


def _widget_gone(exc: RuntimeError) -> bool:
    """A callback reached a widget (or emitted a signal of an object) that was closed and deleted
    while the work ran. PySide words it two ways: "Internal C++ object (…) already deleted" for a
    call, "Signal source has been deleted" for an emit."""
    text = str(exc)
    return "already deleted" in text or "has been deleted" in text


class Ops(QObject):
    """The workers are Python thread pools, not QThreadPools: a QThreadPool destroyed by the
    garbage collector waits for its jobs while holding the GIL those jobs need (a deadlock)."""

    def __init__(self, parent: QObject | None = None, *, readers: int = 2) -> None:
        super().__init__(parent)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-write")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="ops-read")
        self._futures: set[Future[None]] = set()
        self._futures_lock = threading.Lock()
        self._inflight: set[Op[Any]] = set()

    def write(self, fn: Callable[[], T], on_done: Callable[[T], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None) -> Op[T]:
        """A change to the store, after every earlier write."""
        return self._submit(self._writer, lambda _p: fn(), on_done, on_error)

    def read(self, fn: Callable[[], T], on_done: Callable[[T], None] | None = None,
             on_error: Callable[[BaseException], None] | None = None) -> Op[T]:
        return self._submit(self._readers, lambda _p: fn(), on_done, on_error)

    def long(self, fn: Callable[[Progress], T], on_done: Callable[[T], None] | None = None,
             on_error: Callable[[BaseException], None] | None = None, *, writes: bool = True) -> Op[T]:
        """A long operation that reports progress and may be cancelled (imports, exports)."""
        return self._submit(self._writer if writes else self._readers, fn, on_done, on_error)

    def _submit(self, pool: ThreadPoolExecutor, fn: Callable[[Progress], T], on_done: Callable[[T], None] | None,
                on_error: Callable[[BaseException], None] | None) -> Op[T]:
        op: Op[T] = Op()
        self._inflight.add(op)
        progress = op.progress

        job: list[Callable[[], Any]] = [lambda: fn(progress)]

        @Slot(object)
        def done(result: T) -> None:
            job.clear()
            op.result, op.is_done = result, True
            try:
                if on_done is not None:
                    on_done(result)
            except RuntimeError as exc:
                if not _widget_gone(exc):
                    raise
                log.debug("result dropped: its widget was closed meanwhile")
            finally:
                self._finish(op)

        @Slot(object)
        def failed(exc: BaseException) -> None:
            job.clear()
            op.error, op.is_done = exc, True
            try:
                if isinstance(exc, StoreClosed):
                    log.debug("dropped a background operation: the store closed first")
                elif on_error is not None:
                    try:
                        on_error(exc)
                    except RuntimeError as late:
                        if not _widget_gone(late):
                            raise
                elif not isinstance(exc, Cancelled):
                    log.error("background operation failed", exc_info=exc)
            finally:
                self._finish(op)

        op.relay.done.connect(done)
        op.relay.failed.connect(failed)
        relay = op.relay
        try:
            future = pool.submit(_run_job, job, relay)
        except RuntimeError:  # shut down: the context closed, and a late timer asked for more
            log.debug("dropped work submitted after shutdown")
            self._inflight.discard(op)
            return op
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return op

    def _forget(self, future: Future[None]) -> None:
        with self._futures_lock:
            self._futures.discard(future)

    def _finish(self, op: Op[Any]) -> None:
        op.finished.emit()
        # Dropped on the next turn of the event loop, never inside its own signal: the Op and its
        # relay have no Qt parent, so Python frees them once nothing refers to them. (Parenting
        # them and calling deleteLater() crashed PySide 6.11 when a test waited on a signal.)
        QTimer.singleShot(0, lambda: self._inflight.discard(op))

    def shutdown(self) -> None:
        """Let the worker threads end once their queued work is done (no waiting here)."""
        self._writer.shutdown(wait=False)
        self._readers.shutdown(wait=False)

    def busy(self) -> bool:
        return any(not op.is_done for op in self._inflight)

    def wait_idle(self, timeout_ms: int = 30_000) -> bool:
        """Block until the workers are idle (shutdown and tests); callbacks still need the event loop."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            with self._futures_lock:
                pending = list(self._futures)
            if not pending:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait(pending, timeout=remaining)
