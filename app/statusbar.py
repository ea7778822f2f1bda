"""The status bar: online/offline/syncing, pending changes, pending fixes and the last sync time.

It is the one reader of the pending counts: windows that show them elsewhere (the field window's
outbox line) take them from `counts_changed`, so two places never show two different numbers.
The state label stays short so it fits; the server's detail goes into its tooltip."""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QLabel, QStatusBar, QToolButton

from app.context import FleetContext
from app.models import format_time
from app.signals import Touched
from app.sync_thread import describe_state
from storage.positions import OutboxCounts
from sync.client import SyncState, SyncStatus

COUNTS_INTERVAL_MS = 3000


def state_text(status: SyncStatus | None, *, has_server: bool) -> str:
    """What the state label says: the state in a word or two, and whether this account may only
    look (the server's own wording of that goes to the tooltip)."""
    text = describe_state(status, has_server=has_server)
    if status is not None and status.read_only and status.state != SyncState.SIGN_IN_REQUIRED:
        text += " (view only)"
    return text


def state_tooltip(status: SyncStatus) -> str:
    lines = [f"Sync: {status.state.value}"]
    if status.detail:
        lines.append(status.detail)
    if status.read_only:
        lines.append("This account cannot change fleet data; it receives the fleet and sends recorded fixes.")
    return "\n".join(lines)


class FleetStatus(QObject):
    counts_changed = Signal(object)  # OutboxCounts, each time the pending counts were read
    sign_in_requested = Signal()  # the "Sign in to sync" button (shown while sync is paused)

    def __init__(self, ctx: FleetContext, bar: QStatusBar, *, has_server: bool) -> None:
        super().__init__(bar)
        self.ctx = ctx
        self.has_server = has_server
        self.status: SyncStatus | None = None
        self.paused = False
        self.outbox: OutboxCounts | None = None
        self._status_seen = 0  # sync statuses received so far: tells a count read before one apart
        self.state = QLabel()
        self.pending = QLabel()
        self.fixes = QLabel()
        self.synced = QLabel()
        self.sign_in = QToolButton()
        self.sign_in.setText("Sign in to sync…")
        self.sign_in.setObjectName("status_sign_in")
        self.sign_in.setVisible(False)
        self.sign_in.clicked.connect(self.sign_in_requested)
        for name, label in (("sync", self.state), ("pending", self.pending), ("fixes", self.fixes),
                            ("last_synced", self.synced)):
            label.setObjectName(f"status_{name}")
            bar.addPermanentWidget(label)
        bar.addPermanentWidget(self.sign_in)
        # A read-only window never makes changes: "Pending changes: 0" there is only noise.
        self.pending.setVisible(not ctx.read_only)
        self.state.setText(state_text(None, has_server=has_server))
        last = ctx.store.sync_log.get_meta("last_synced_at")
        self._last_synced = float(last) if last else None
        self.synced.setText(f"Last synced: {format_time(self._last_synced)}")
        self._loading = False
        self._dirty = False  # asked again while a read was running: read once more after it
        self._timer = QTimer(self)
        self._timer.setInterval(COUNTS_INTERVAL_MS)
        self._timer.timeout.connect(self.refresh_counts)
        self._timer.start()
        ctx.signals.changed.connect(self._on_changed)
        self.refresh_counts()

    def set_paused(self, text: str, detail: str) -> None:
        """No sync running on purpose (opened offline): say so, and offer to sign in."""
        self.paused = True
        self.state.setText(text)
        self.state.setToolTip(detail)
        self.sign_in.setVisible(True)

    def set_sync_status(self, status: SyncStatus) -> None:
        self.status = status
        self.paused = False
        self.sign_in.setVisible(False)
        self._status_seen += 1
        self.state.setText(state_text(status, has_server=self.has_server))
        self.state.setToolTip(state_tooltip(status))
        if status.pending is not None:
            self._show_pending(status.pending)
        if status.last_synced_at is not None:
            self._last_synced = status.last_synced_at
            self.synced.setText(f"Last synced: {format_time(status.last_synced_at)}")

    def _show_pending(self, pending: int | str) -> None:
        self.pending.setText(f"Pending changes: {pending}")
        if self.ctx.read_only:
            self.pending.setVisible(pending != 0)

    def _on_changed(self, _origin: str, _touched: Touched) -> None:
        self.refresh_counts()

    def refresh_counts(self) -> None:
        if self._loading:
            self._dirty = True
            return
        self._loading = True
        self._dirty = False
        store, started_at = self.ctx.store, self._status_seen

        def load() -> tuple[int, OutboxCounts]:
            return store.sync_log.pending_count(), store.positions.counts()

        self.ctx.ops.read(load, lambda result: self._counts(result, started_at),
                          lambda _e: setattr(self, "_loading", False))

    def _counts(self, result: tuple[int, OutboxCounts], started_at: int) -> None:
        self._loading = False
        pending, outbox = result
        if self._dirty:
            self.refresh_counts()
        if started_at != self._status_seen:
            # The sync client reported (an ack, say) while this count was read: the count may be
            # older than what the label shows now, so read again rather than step back.
            self.refresh_counts()
        elif self.status is None or self.status.pending is not None:
            self._show_pending(pending)
        else:
            self._show_pending("unknown")
        self.outbox = outbox
        failed = f", {outbox.failed} failed" if outbox.failed else ""
        self.fixes.setText(f"Pending fixes: {outbox.pending}{failed}")
        self.counts_changed.emit(outbox)
