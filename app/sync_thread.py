"""Sync in the app: the SyncClient (and, when asked, the position uploader and the live feed) on an
asyncio loop in a background thread. Status reaches the UI by queued signals; the UI thread never
waits on the network."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal, Slot

from app.context import FleetContext
from sync.client import SyncClient, SyncState, SyncStatus, TokenSource, websocket_connector

log = logging.getLogger(__name__)

STOP_GRACE_S = 2.0  # how long stop() lets the client finish by itself before cancelling it


class SyncThread(QObject):
    status_changed = Signal(object)  # SyncStatus, on the UI thread
    upload_status_changed = Signal(object)  # sync.uploader.UploadStatus
    stopped = Signal()
    _status_relay = Signal(object)
    _upload_relay = Signal(object)
    _stopped_relay = Signal()

    def __init__(self, ctx: FleetContext, server_url: str, tenant_id: str, tokens: TokenSource, *,
                 upload_positions: bool = False, live: bool = True, min_backoff: float = 0.5,
                 max_backoff: float = 30.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.server_url = server_url
        self.tenant_id = tenant_id
        self.tokens = tokens
        self.upload_positions = upload_positions
        self.live = live
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.client: SyncClient | None = None
        self.uploader: Any = None
        self.feed: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client_task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        last = ctx.store.sync_log.get_meta("last_synced_at")
        self.status = SyncStatus(SyncState.OFFLINE, ctx.store.sync_log.pending_count(),
                                 float(last) if last else None, "not started")
        self._status_relay.connect(self._deliver_status, Qt.ConnectionType.QueuedConnection)
        self._upload_relay.connect(self.upload_status_changed, Qt.ConnectionType.QueuedConnection)
        self._stopped_relay.connect(self.stopped, Qt.ConnectionType.QueuedConnection)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("the sync thread stopped with an error")
        finally:
            self._loop = None
            self._started.set()
            self._stopped_relay.emit()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        mirror = self.ctx.mirror
        self.client = SyncClient(mirror, websocket_connector(self.server_url, self.tenant_id, self.tokens),
                                 tokens=self.tokens, min_backoff=self.min_backoff, max_backoff=self.max_backoff)
        self.client.on_status(self._status_relay.emit)
        tasks = [asyncio.create_task(self.client.run(), name="sync-client")]
        if self.upload_positions:
            try:
                from sync.uploader import PositionUploader
            except ImportError:  # the field pipeline is optional; recording still works offline
                log.warning("sync.uploader is not available; fixes stay in the outbox")
            else:
                self.uploader = PositionUploader(self.ctx.store, self.server_url, self.tokens)
                self.uploader.on_status(self._upload_relay.emit)
                tasks.append(asyncio.create_task(self.uploader.run(), name="uploader"))
        if self.live:
            from app.live_feed import LiveFeed

            self.feed = LiveFeed(self.ctx.store, self.server_url, self.tokens,
                                 lambda touched: self.ctx.signals.notify("live", touched))
            tasks.append(asyncio.create_task(self.feed.run(), name="live-feed"))
        self._client_task = tasks[0]
        self._started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]  # the sync client decides when the session is over (stop or sign-in needed)
        for task in tasks[1:]:
            if self.uploader is not None:
                await self.uploader.stop()
            if self.feed is not None:
                await self.feed.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)

    @Slot(object)
    def _deliver_status(self, status: SyncStatus) -> None:
        self.status = status
        self.status_changed.emit(status)

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run a coroutine on the sync loop and wait for it (tests and shutdown only)."""
        if self._loop is None:
            coroutine.close()
            return None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _cancel_client(self) -> None:
        if self._client_task is not None:
            self._client_task.cancel()

    def wake_uploader(self) -> None:
        if self.uploader is not None:
            self.uploader.wake()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop syncing and wait for the thread; pending local changes stay in the log for next time."""
        loop, client = self._loop, self.client
        if loop is not None and client is not None and self.running:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(client.stop(), loop).result(timeout)
        if self._thread is not None:
            self._thread.join(STOP_GRACE_S)
            if self._thread.is_alive() and loop is not None:
                # A connection that opened just after stop() was asked for keeps the client in its
                # session (SyncClient only checks the flag between connections): end it here rather
                # than keep the closing window waiting.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._cancel_client)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the sync thread did not stop within %.0f s", timeout)
        self._thread = None


def describe_state(status: SyncStatus | None, *, has_server: bool = True) -> str:
    """Online, offline or syncing, in the words the status bar uses."""
    if not has_server:
        return "Offline (no server configured)"
    if status is None:
        return "Offline"
    return {
        SyncState.SYNCED: "Online",
        SyncState.UNKNOWN: "Online",
        SyncState.SYNCING: "Syncing",
        SyncState.CONNECTING: "Connecting",
        SyncState.OFFLINE: "Offline",
        SyncState.SIGN_IN_REQUIRED: "Sign-in required",
    }[status.state]
