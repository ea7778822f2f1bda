"""The one change signal: every committed change (local edit, remote CRDT update, new fixes, new events)
reaches the tables and the map as `StoreSignals.changed(origin, touched)` on the UI thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from sync.mirror import Mirror, MirrorChange

Touched = dict[str, set[str]]  # collection (or "latest_fixes", "events", "positions") -> record ids


class StoreSignals(QObject):
    """Anki's "operation did execute" hook: one signal for local and remote changes alike.

    Mirror listeners run on whichever thread committed (the sync thread for remote updates), so
    changes from other threads are re-emitted on this object's thread through a queued relay.
    """

    changed = Signal(str, object)  # origin ("local", "remote", "fixes", ...), Touched
    _relay = Signal(str, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._relay.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe: list[Callable[[], None]] = []

    def attach(self, mirror: Mirror) -> None:
        self._unsubscribe.append(mirror.subscribe(self._on_mirror_change))

    def detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _on_mirror_change(self, change: MirrorChange) -> None:
        self.notify(change.origin, {name: set(ids) for name, ids in change.touched.items() if ids})

    def notify(self, origin: str, touched: Mapping[str, Iterable[str]]) -> None:
        """Announce a change from any thread; receivers always hear it on the UI thread."""
        payload: Touched = {name: set(ids) for name, ids in touched.items()}
        if QThread.currentThread() is self.thread():
            self.changed.emit(origin, payload)
        else:
            self._relay.emit(origin, payload)

    @Slot(str, object)
    def _deliver(self, origin: str, touched: Touched) -> None:
        self.changed.emit(origin, touched)
