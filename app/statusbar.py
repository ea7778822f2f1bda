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
        store = self.ctx.store

        def load() -> tuple[int, OutboxCounts]:
            return store.sync_log.pending_count(), store.positions.counts()

        self.ctx.ops.read(load, self._counts, lambda _e: setattr(self, "_loading", False))

    def _counts(self, result: tuple[int, OutboxCounts]) -> None:
        self._loading = False
        pending, outbox = result
        if self.status is None or self.status.pending is not None:
            self.pending.setText(f"Pending changes: {pending}")
        else:
            self.pending.setText("Pending changes: unknown")
        failed = f", {outbox.failed} failed" if outbox.failed else ""
        self.fixes.setText(f"Pending fixes: {outbox.pending}{failed}")
