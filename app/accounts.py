"""Signing in: POST /api/v1/auth/token, the refresh token kept in the OS keyring (never in a file),
and the TokenSource the sync client, uploader and live feed share.

When no secure keyring backend exists (keyring's fail or null backends, or only plain-text ones),
no token is stored: the app says so and asks for the password at every start. When the server
cannot be reached, the login dialog can open a profile offline with its verifier
(app/offline_sign_in.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.offline_sign_in import (
    OfflineProfile,
    OfflineSignInFailed,
    forget_if_matches,
    make_verifier,
    open_offline,
)
from app.ops import Ops

log = logging.getLogger(__name__)

KEYRING_SERVICE = "webhost-fleet"
TOKEN_PATH = "/api/v1/auth/token"
NO_KEYRING_TEXT = ("No secure password store (keyring) is available on this system, so your sign-in is not "
                   "saved: you will be asked for your password at every start.")
UNAVAILABLE_STATUSES = (502, 503, 504)  # a proxy answering for a server that is down

OfflineCandidates = Callable[[str, str], list[Path]]  # (server, email) -> profiles that may open offline


class SignInFailed(Exception):
    """The server refused the sign-in, or could not be reached; the message says which."""


class ServerUnreachable(SignInFailed):
    """No answer from the server (network down, server stopped, proxy says it is unavailable)."""

    def __init__(self, server_url: str, cause: str) -> None:
        super().__init__(f"cannot reach {server_url}: {cause}")
        self.server_url = server_url
        self.cause = cause


class SignInRefused(SignInFailed):
    """The server answered: this email and password are not accepted (or the account is disabled)."""


@dataclass(frozen=True)
class KeyringStatus:
    secure: bool
    name: str

    def describe(self) -> str:
        return self.name if self.secure else f"none ({self.name}) — passwords asked each start"


def keyring_status() -> KeyringStatus:
    """Whether a secure backend is there: plain-text and failing backends do not count."""
    try:
        import keyring
        from keyring.backends import chainer, fail
    except Exception as exc:  # keyring missing or broken: behave as if there were none
        return KeyringStatus(False, f"keyring unavailable: {exc}")
    backend = keyring.get_keyring()
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    if isinstance(backend, fail.Keyring):
        return KeyringStatus(False, name)
    if isinstance(backend, chainer.ChainerBackend):
        secure = [b for b in backend.backends if _secure(b)]
        return KeyringStatus(bool(secure), ", ".join(type(b).__name__ for b in secure) or name)
    return KeyringStatus(_secure(backend), name)


def _secure(backend: Any) -> bool:
    try:
        priority = float(backend.priority)
    except Exception:
        return False
    module = type(backend).__module__
    return priority >= 1 and "plaintext" not in type(backend).__name__.lower() and "null" not in module


def _account(server_url: str, email: str) -> str:
    return f"{server_url.rstrip('/')}|{email}"


def save_refresh_token(server_url: str, email: str, token: str) -> bool:
    if not keyring_status().secure:
        return False
    import keyring

    try:
        keyring.set_password(KEYRING_SERVICE, _account(server_url, email), token)
    except Exception as exc:
        log.warning("could not store the sign-in in the keyring: %s", exc)
        return False
    return True


def load_refresh_token(server_url: str, email: str) -> str | None:
    if not keyring_status().secure:
        return None
    import keyring

    try:
        value = keyring.get_password(KEYRING_SERVICE, _account(server_url, email))
    except Exception as exc:
        log.warning("could not read the keyring: %s", exc)
        return None
    return value


def forget_refresh_token(server_url: str, email: str) -> None:
    if not keyring_status().secure:
        return
    import keyring

    try:
        keyring.delete_password(KEYRING_SERVICE, _account(server_url, email))
    except Exception:
        log.debug("nothing to forget in the keyring")


def token_payload(token: str) -> dict[str, Any]:
    """The claims of an access token (a JWT): sub, cid (tenant), role, exp. Not verified: the
    server does that; the app only reads who it signed in as."""
    try:
        decoded = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


@dataclass(frozen=True)
class Credentials:
    access_token: str
    refresh_token: str | None
    tenant_id: str
    user_id: str
    role: str


def _credentials(answer: dict[str, Any]) -> Credentials:
    access = answer.get("access_token")
    if not isinstance(access, str):
        raise SignInFailed("the server's answer holds no access token")
    claims = token_payload(access)
    if not claims.get("cid"):
        raise SignInFailed("this account belongs to no tenant (platform users cannot use the desktop app)")
    return Credentials(access, answer.get("refresh_token"), str(claims["cid"]), str(claims.get("sub", "")),
                       str(claims.get("role", "")))


def _post_token(server_url: str, body: dict[str, Any], transport: httpx.BaseTransport | None) -> Credentials:
    try:
        with httpx.Client(base_url=server_url.rstrip("/"), timeout=15, transport=transport) as http:
            response = http.post(TOKEN_PATH, json=body)
    except httpx.HTTPError as exc:
        raise ServerUnreachable(server_url, str(exc) or type(exc).__name__) from exc
    if response.status_code in (401, 403):
        detail = _error_detail(response)
        raise SignInRefused(detail or "email or password not accepted")
    if response.status_code in UNAVAILABLE_STATUSES:
        raise ServerUnreachable(server_url, f"it answered HTTP {response.status_code}")
    if response.status_code == 429:
        raise SignInFailed("too many attempts; wait a few minutes and try again")
    if response.status_code >= 400:
        raise SignInFailed(f"the server answered HTTP {response.status_code}: {_error_detail(response)}")
    return _credentials(response.json())


def _error_detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return str(errors[0].get("detail") or errors[0].get("title") or "") if errors else ""
    except (ValueError, AttributeError):
        return response.text[:200]


def sign_in(server_url: str, email: str, password: str, *,
            transport: httpx.BaseTransport | None = None) -> Credentials:
    return _post_token(server_url, {"email": email, "password": password}, transport)


@dataclass(frozen=True)
class SignInResult:
    credentials: Credentials
    verifier: str | None = None  # online: a fresh verifier of the password, for the profile
    offline: OfflineProfile | None = None  # offline: the profile the password opened


def sign_in_or_open_offline(server_url: str, email: str, password: str, *,
                            profiles: OfflineCandidates | None = None, allow_offline: bool = False,
                            transport: httpx.BaseTransport | None = None) -> SignInResult:
    """Sign in online and make a new verifier of the password. When the server cannot be reached
    (and allow_offline), open the profile whose verifier the password matches instead; when the
    server refuses the password, a verifier that still accepts it is forgotten. Worker thread only:
    argon2 is slow on purpose."""
    try:
        credentials = sign_in(server_url, email, password, transport=transport)
    except ServerUnreachable as exc:
        if not allow_offline or profiles is None:
            raise
        reason = f"The server {server_url} cannot be reached ({exc.cause})"
        try:
            opened = open_offline(server_url, email, password, profiles(server_url, email), reason)
        except OfflineSignInFailed as failed:
            raise SignInFailed(str(failed)) from exc
        s = opened.settings
        return SignInResult(Credentials("", None, s.tenant_id or "", s.user_id or "", s.role or ""), None, opened)
    except SignInRefused:
        if profiles is not None:
            forget_if_matches(profiles(server_url, email), password)
        raise
    return SignInResult(credentials, make_verifier(password))


def refresh_sign_in(server_url: str, refresh_token: str, *,
                    transport: httpx.BaseTransport | None = None) -> Credentials:
    return _post_token(server_url, {"grant_type": "refresh_token", "refresh_token": refresh_token}, transport)


class SessionTokens:
    """A TokenSource: the current access token, refreshed with the refresh token (rotated on use,
    so the new one replaces the old one in the keyring)."""

    def __init__(self, server_url: str, email: str, credentials: Credentials, *, remember: bool) -> None:
        self.server_url = server_url
        self.email = email
        self._access = credentials.access_token
        self._refresh = credentials.refresh_token
        self.remember = remember
        self._lock = threading.Lock()
        self._refreshing: asyncio.Lock | None = None
        self.generation = 0  # how many refreshes succeeded

    @property
    def current(self) -> str:
        with self._lock:
            return self._access

    def replace(self, credentials: Credentials, *, remember: bool) -> None:
        """New credentials after the user signed in again."""
        with self._lock:
            self._access, self._refresh = credentials.access_token, credentials.refresh_token
            self.generation += 1
        self.remember = remember

    async def access_token(self) -> str:
        return self.current

    async def refresh(self) -> bool:
        # One refresh at a time: refresh tokens rotate, and presenting a used one makes the server
        # revoke them all. A caller that waited while another refreshed just takes the new token.
        seen = self.generation
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if self.generation != seen:
                return True
            with self._lock:
                refresh = self._refresh
            if not refresh:
                return False
            try:
                credentials = await asyncio.to_thread(refresh_sign_in, self.server_url, refresh)
            except SignInFailed as exc:
                log.info("token refresh failed: %s", exc)
                return False
            with self._lock:
                self._access, self._refresh = credentials.access_token, credentials.refresh_token
                self.generation += 1
        if self.remember and credentials.refresh_token:
            save_refresh_token(self.server_url, self.email, credentials.refresh_token)
        return True


class LoginDialog(QDialog):
    """Server URL, email and password; signs in on a worker thread, never on the UI thread.

    profiles: where this (server, email) has verifiers. With allow_offline, an unreachable server
    opens the matching profile offline (`offline_profile` is then set and `credentials` hold no
    token); after an online sign-in, `verifier` holds a new verifier for the caller to store."""

    signed_in = Signal(object)  # Credentials

    def __init__(self, server_url: str = "", email: str = "", *, message: str = "",
                 profiles: OfflineCandidates | None = None, allow_offline: bool = False,
                 transport: httpx.BaseTransport | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in to WebHost Fleet")
        self.setObjectName("login_dialog")
        self.credentials: Credentials | None = None
        self.verifier: str | None = None
        self.offline_profile: OfflineProfile | None = None
        self.keyring = keyring_status()
        self.remembered = False
        self._profiles = profiles
        self._allow_offline = allow_offline
        self._transport = transport
        self._ops = Ops(self)
        layout = QVBoxLayout(self)
        if message:
            note = QLabel(message)
            note.setWordWrap(True)
            layout.addWidget(note)
        form = QFormLayout()
        self.server = QLineEdit(server_url)
        self.server.setObjectName("login_server")
        self.server.setPlaceholderText("https://fleet.example.com")
        self.email = QLineEdit(email)
        self.email.setObjectName("login_email")
        self.password = QLineEdit()
        self.password.setObjectName("login_password")
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Server", self.server)
        form.addRow("Email", self.email)
        form.addRow("Password", self.password)
        layout.addLayout(form)
        self.keyring_note = QLabel(
            f"Your sign-in is kept in the system keyring ({self.keyring.name})." if self.keyring.secure
            else NO_KEYRING_TEXT)
        self.keyring_note.setObjectName("keyring_note")
        self.keyring_note.setWordWrap(True)
        if not self.keyring.secure:
            self.keyring_note.setStyleSheet("color: #8d6e00;")
        layout.addWidget(self.keyring_note)
        self.error = QLabel("")
        self.error.setObjectName("login_error")
        self.error.setStyleSheet("color: #b71c1c;")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.error)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Sign in")
        ok.setObjectName("login_sign_in")
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        (self.password if server_url and email else self.server).setFocus()

    def submit(self) -> None:
        server, email, password = self.server.text().strip(), self.email.text().strip(), self.password.text()
        missing = [name for name, value in (("server", server), ("email", email), ("password", password)) if not value]
        if missing:
            self.error.setText("Please fill in: " + ", ".join(missing))
            return
        if not server.startswith(("http://", "https://")):
            self.error.setText("The server address must start with http:// or https://")
            return
        self.error.setText("Signing in…")
        self.buttons.setEnabled(False)
        transport, profiles, allow_offline = self._transport, self._profiles, self._allow_offline
        self._ops.read(lambda: sign_in_or_open_offline(server, email, password, profiles=profiles,
                                                       allow_offline=allow_offline, transport=transport),
                       self._done, self._failed)

    def _done(self, result: SignInResult) -> None:
        self.buttons.setEnabled(True)
        credentials = result.credentials
        self.credentials = credentials
        self.verifier = result.verifier
        self.offline_profile = result.offline
        self.password.clear()  # the password is not kept, not even in memory
        if credentials.refresh_token:
            self.remembered = save_refresh_token(self.server.text().strip(), self.email.text().strip(),
                                                 credentials.refresh_token)
        self.error.setText("")
        self.signed_in.emit(credentials)
        self.accept()

    def _failed(self, exc: BaseException) -> None:
        self.buttons.setEnabled(True)
        self.error.setText(str(exc) if isinstance(exc, SignInFailed) else f"Sign-in failed: {exc}")
