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
from app.offline_sign_in import candidate_profiles, save_verifier
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

OFFLINE_TEXT = "Sync paused — signed in offline"
OFFLINE_DETAIL = ("The server could not be reached, so this profile was opened with the password of your last "
                  "online sign-in on this computer. Fleet data is read-only; recorded fixes wait in the outbox. "
                  "Sign in to sync when the server is back.")


@dataclass
class Session:
    server_url: str
    tenant_id: str
    tokens: SessionTokens
    offline: bool = False  # opened with the profile's verifier: no token, nothing syncs
    profile_dir: Path | None = None  # offline: the profile the password opened
    verifier: str | None = None  # online: a new verifier of the password, for the profile


def _from_credentials(server: str, email: str, credentials: Credentials, remember: bool) -> Session:
    return Session(server, credentials.tenant_id, SessionTokens(server, email, credentials, remember=remember))


def sign_in(server: str, settings: ProfileSettings,
            profile: Path | None = None) -> tuple[Session, ProfileSettings] | None:
    """A session for the server: from the keyring's refresh token when there is one (refreshed on
    first use, in the sync thread), else through the login dialog, which opens a profile offline
    when the server cannot be reached. None when the user cancels. `profile`: an explicit
    --profile folder (the only one that may open offline then)."""
    email = settings.email or ""
    if settings.server_url == server and email and settings.tenant_id:
        refresh = load_refresh_token(server, email)
        if refresh:
            stale = Credentials("", refresh, settings.tenant_id, settings.user_id or "", settings.role or "")
            return _from_credentials(server, email, stale, True), settings
    message = "" if keyring_status().secure else NO_KEYRING_TEXT
    # A scripted start names its user; otherwise the profile's own user, if it is of this server.
    hint = os.environ.get("WEBHOST_EMAIL") or (email if settings.server_url == server else "")
    dialog = LoginDialog(server, hint, message=message,
                         profiles=lambda s, e: candidate_profiles(s, e, profile), allow_offline=True)
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
    opened = dialog.offline_profile
    if opened is not None:
        session = _from_credentials(server, email, credentials, False)
        session.offline, session.profile_dir = True, opened.profile_dir
        return session, opened.settings
    claims = token_payload(credentials.access_token)
    updated = ProfileSettings(server_url=server, email=email, tenant_id=credentials.tenant_id,
                              user_id=credentials.user_id, role=str(claims.get("role") or credentials.role),
                              online_tiles=settings.online_tiles)
    session = _from_credentials(server, email, credentials, dialog.remembered)
    session.verifier = dialog.verifier
    return session, updated


class SessionKeeper(QObject):
    """When the server stops accepting the sign-in (password changed, account disabled, refresh
    token revoked), or the profile was opened offline, ask for the password and (re)start sync
    with the new tokens. Each online sign-in replaces the profile's offline verifier."""

    def __init__(self, window: FieldWindow | DispatcherWindow, session: Session, sync: SyncThread | None,
                 *, upload_positions: bool, live: bool) -> None:
        super().__init__(window)
        self.window = window
        self.session = session
        self.sync = sync
        self.upload_positions = upload_positions
        self.live = live
        self.dialog: LoginDialog | None = None
        if sync is not None:
            sync.status_changed.connect(self._status)
        window.status.sign_in_requested.connect(
            lambda: self.ask("Sign in to start syncing: recorded fixes and changes are sent once you are online."))

    def _status(self, status: SyncStatus) -> None:
        if status.state != SyncState.SIGN_IN_REQUIRED or self.dialog is not None:
            return
        self.ask(f"The server asks you to sign in again ({status.detail or 'credentials rejected'}).")

    def ask(self, message: str) -> None:
        if self.dialog is not None:
            self.dialog.raise_()
            return
        if not keyring_status().secure:
            message += " " + NO_KEYRING_TEXT
        profile_dir = self.window.ctx.profile_dir
        dialog = LoginDialog(self.session.server_url, self.session.tokens.email, message=message,
                             profiles=lambda _s, _e: [profile_dir], parent=self.window)
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
        dialog = self.dialog
        remember = dialog.remembered if dialog is not None else False
        if dialog is not None and dialog.verifier:
            save_verifier(self.window.ctx.profile_dir, self.session.server_url, self.session.tokens.email,
                          dialog.verifier)
        self.session.tokens.replace(credentials, remember=remember)
        self.session.offline = False
        if self.sync is not None:
            self.sync.stop()
        self.sync = SyncThread(self.window.ctx, self.session.server_url, self.session.tenant_id, self.session.tokens,
                               upload_positions=self.upload_positions, live=self.live, parent=self.window)
        self.sync.status_changed.connect(self._status)
        self.window.attach_sync(self.sync)
        self.sync.start()


def open_window(profile: str | None, server: str | None, field: bool) -> QMainWindow | None:
    explicit = Path(profile).expanduser() if profile else None
    profile_dir = explicit or last_profile() or local_profile_dir()
    settings = ProfileSettings.load(profile_dir)
    server_url = server or settings.server_url
    session: Session | None = None
    if server_url:
        signed = sign_in(server_url, settings, explicit)
        if signed is None:
            return None
        session, settings = signed
        if session.offline:
            assert session.profile_dir is not None
            profile_dir = session.profile_dir
        else:
            if explicit is None:
                assert settings.email and settings.tenant_id
                profile_dir = profile_dir_for(session.server_url, settings.tenant_id, settings.email)
            settings.save(profile_dir)
            if session.verifier:
                save_verifier(profile_dir, session.server_url, session.tokens.email, session.verifier)
    offline = session is not None and session.offline
    # Opened offline, the password was only checked locally: the profile can be read and fixes
    # recorded, but nothing is changed or sent until an online sign-in.
    read_only = field or settings.read_only or offline
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
        sync: SyncThread | None = None
        if offline:
            window.status.set_paused(OFFLINE_TEXT, OFFLINE_DETAIL)
        else:
            sync = SyncThread(ctx, session.server_url, session.tenant_id, session.tokens, upload_positions=field,
                              live=not field, parent=window)
            window.attach_sync(sync)
        window.session_keeper = SessionKeeper(window, session, sync, upload_positions=field, live=not field)
        if sync is not None:
            sync.start()
    log.info("opened profile %s (%s, %s)", profile_dir, "field" if field else "dispatcher",
             "local only" if session is None else f"{session.server_url}{', offline' if offline else ''}")
    return window
