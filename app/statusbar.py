"""The status bar: online/offline/syncing, pending changes, pending fixes and the last sync time."""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QLabel, QStatusBar

from app.context import FleetContext
from app.models import format_time
from app.signals import Touched
from app.sync_thread import describe_state
from storage.positions import OutboxCounts
from sync.client import SyncStatus

COUNTS_INTERVAL_MS = 3000


class FleetStatus(QObject):
    def __init__(self, ctx: FleetContext, bar: QStatusBar, *, has_server: bool) -> None:
        super().__init__(bar)
        self.ctx = ctx
        self.has_server = has_server
        self.status: SyncStatus | None = None
        self._status_seen = 0  # sync statuses received so far: tells a count read before one apart
        self.state = QLabel()
        self.pending = QLabel()
        self.fixes = QLabel()
        self.synced = QLabel()
        for name, label in (("sync", self.state), ("pending", self.pending), ("fixes", self.fixes),
                            ("last_synced", self.synced)):
            label.setObjectName(f"status_{name}")
            bar.addPermanentWidget(label)
        self.state.setText(describe_state(None, has_server=has_server))
        last = ctx.store.sync_log.get_meta("last_synced_at")
        self._last_synced = float(last) if last else None
        self.synced.setText(f"Last synced: {format_time(self._last_synced)}")
        self._loading = False
        self._timer = QTimer(self)
        self._timer.setInterval(COUNTS_INTERVAL_MS)
        self._timer.timeout.connect(self.refresh_counts)
        self._timer.start()
        ctx.signals.changed.connect(self._on_changed)
        self.refresh_counts()

    def set_sync_status(self, status: SyncStatus) -> None:
        self.status = status
        self._status_seen += 1
        self.state.setText(f"{describe_state(status, has_server=self.has_server)} — {status.describe()}")
        if status.pending is not None:
            self.pending.setText(f"Pending changes: {status.pending}")
        if status.last_synced_at is not None:
            self._last_synced = status.last_synced_at
            self.synced.setText(f"Last synced: {format_time(status.last_synced_at)}")

    def _on_changed(self, _origin: str, _touched: Touched) -> None:
        self.refresh_counts()

    def refresh_counts(self) -> None:
        if self._loading:
            return
        self._loading = True
        store, started_at = self.ctx.store, self._status_seen

        def load() -> tuple[int, OutboxCounts]:
            return store.sync_log.pending_count(), store.positions.counts()

        self.ctx.ops.read(load, lambda result: self._counts(result, started_at),
                          lambda _e: setattr(self, "_loading", False))

    def _counts(self, result: tuple[int, OutboxCounts], started_at: int) -> None:
        self._loading = False
        pending, outbox = result
        if started_at != self._status_seen:
            # The sync client reported (an ack, say) while this count was read: the count may be
            # older than what the label shows now, so read again rather than step back.
            self.refresh_counts()
        elif self.status is None or self.status.pending is not None:
            self.pending.setText(f"Pending changes: {pending}")
        else:
            self.pending.setText("Pending changes: unknown")
        failed = f", {outbox.failed} failed" if outbox.failed else ""
        self.fixes.setText(f"Pending fixes: {outbox.pending}{failed}")
