"""From command-line options to an open window: pick the profile, sign in when a server is used,
open the store, start sync in the background and show the dispatcher or field window."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QDialog, QMainWindow

from app.accounts import (
    NO_KEYRING_TEXT,
    Credentials,
    LoginDialog,
    SessionTokens,
    keyring_status,
    load_refresh_token,
    token_payload,
)
from app.context import FleetContext
from app.demo import is_empty, populate
from app.dispatcher import DispatcherWindow
from app.field import FieldWindow
from app.profiles import (
    ProfileSettings,
    last_profile,
    local_profile_dir,
    profile_dir_for,
    remember_last_profile,
)
from app.sync_thread import SyncThread
from sync.client import SyncState, SyncStatus

log = logging.getLogger(__name__)


@dataclass
class Session:
    server_url: str
    tenant_id: str
    tokens: SessionTokens


def _from_credentials(server: str, email: str, credentials: Credentials, remember: bool) -> Session:
    return Session(server, credentials.tenant_id, SessionTokens(server, email, credentials, remember=remember))


def sign_in(server: str, settings: ProfileSettings) -> tuple[Session, ProfileSettings] | None:
    """A session for the server: from the keyring's refresh token when there is one (refreshed on
    first use, in the sync thread), else through the login dialog. None when the user cancels."""
    email = settings.email or ""
    if settings.server_url == server and email and settings.tenant_id:
        refresh = load_refresh_token(server, email)
        if refresh:
            stale = Credentials("", refresh, settings.tenant_id, settings.user_id or "", settings.role or "")
            return _from_credentials(server, email, stale, True), settings
    message = "" if keyring_status().secure else NO_KEYRING_TEXT
    dialog = LoginDialog(server, email or os.environ.get("WEBHOST_EMAIL", ""), message=message)
    password = os.environ.get("WEBHOST_PASSWORD")
    if password and dialog.email.text():
        # Scripted start (`make demo`): sign in with the given password, still on the dialog's
        # worker; a refusal leaves the dialog open with the reason.
        dialog.password.setText(password)
        QTimer.singleShot(0, dialog.submit)
    if dialog.exec() != QDialog.DialogCode.Accepted or dialog.credentials is None:
        return None
    credentials = dialog.credentials
    email = dialog.email.text().strip()
    server = dialog.server.text().strip()
    claims = token_payload(credentials.access_token)
    updated = ProfileSettings(server_url=server, email=email, tenant_id=credentials.tenant_id,
                              user_id=credentials.user_id, role=str(claims.get("role") or credentials.role),
                              online_tiles=settings.online_tiles, vehicle_id=settings.vehicle_id)
    return _from_credentials(server, email, credentials, dialog.remembered), updated


class SessionKeeper(QObject):
    """When the server stops accepting the sign-in (password changed, account disabled, refresh
    token revoked), ask for the password again and restart sync with the new tokens."""

    def __init__(self, window: FieldWindow | DispatcherWindow, session: Session, sync: SyncThread,
                 *, upload_positions: bool, live: bool) -> None:
        super().__init__(window)
        self.window = window
        self.session = session
        self.sync = sync
        self.upload_positions = upload_positions
        self.live = live
        self.dialog: LoginDialog | None = None
        sync.status_changed.connect(self._status)

    def _status(self, status: SyncStatus) -> None:
        if status.state != SyncState.SIGN_IN_REQUIRED or self.dialog is not None:
            return
        message = f"The server asks you to sign in again ({status.detail or 'credentials rejected'})."
        if not keyring_status().secure:
            message += " " + NO_KEYRING_TEXT
        dialog = LoginDialog(self.session.server_url, self.session.tokens.email, message=message, parent=self.window)
        dialog.server.setReadOnly(True)
        dialog.signed_in.connect(self._signed_in)
        dialog.finished.connect(lambda _r: self._closed(dialog))
        self.dialog = dialog
        dialog.open()

    def _closed(self, dialog: LoginDialog) -> None:
        if self.dialog is dialog:
            self.dialog = None
        dialog.deleteLater()

    def _signed_in(self, credentials: Credentials) -> None:
        if credentials.tenant_id != self.session.tenant_id:
            log.warning("signed in to another tenant; this profile keeps its own")
            return
        remember = self.dialog.remembered if self.dialog is not None else False
        self.session.tokens.replace(credentials, remember=remember)
        self.sync.stop()
        self.sync = SyncThread(self.window.ctx, self.session.server_url, self.session.tenant_id, self.session.tokens,
                               upload_positions=self.upload_positions, live=self.live, parent=self.window)
        self.sync.status_changed.connect(self._status)
        self.window.attach_sync(self.sync)
        self.sync.start()


def open_window(profile: str | None, server: str | None, field: bool) -> QMainWindow | None:
    profile_dir = Path(profile).expanduser() if profile else (last_profile() or local_profile_dir())
    settings = ProfileSettings.load(profile_dir)
    server_url = server or settings.server_url
    session: Session | None = None
    if server_url:
        signed = sign_in(server_url, settings)
        if signed is None:
            return None
        session, settings = signed
        if not profile:
            assert settings.email and settings.tenant_id
            profile_dir = profile_dir_for(session.server_url, settings.tenant_id, settings.email)
        settings.save(profile_dir)
    read_only = field or settings.read_only
    ctx = FleetContext.open(profile_dir, read_only=read_only, settings=settings)
    remember_last_profile(profile_dir)
    if session is None and is_empty(ctx.store):
        # A local-only profile starts with the demo fleet on the offline map, so there is
        # something to look at; with a server, the tenant's data arrives by sync instead.
        populate(ctx.mirror)
    window: FieldWindow | DispatcherWindow
    if field:
        window = FieldWindow(ctx, has_server=session is not None)
    else:
        def history_session() -> tuple[str, str] | None:
            if session is None or not session.tokens.current:
                return None
            return session.server_url, session.tokens.current

        window = DispatcherWindow(ctx, has_server=session is not None, server=history_session)
    if session is not None:
        sync = SyncThread(ctx, session.server_url, session.tenant_id, session.tokens, upload_positions=field,
                          live=not field, parent=window)
        window.attach_sync(sync)
        window.session_keeper = SessionKeeper(window, session, sync, upload_positions=field, live=not field)
        sync.start()
    log.info("opened profile %s (%s, %s)", profile_dir, "field" if field else "dispatcher",
             session.server_url if session else "local only")
    return window
