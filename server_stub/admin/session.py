"""The admin page's session: a signed cookie (HMAC-SHA256 with a key derived from the server secret).

The cookie holds the session id, the signed-in user, a fingerprint of that user's password hash,
the per-session CSRF token, the time it was issued and pending flash messages. Nothing is kept on
the server except the ids of sessions signed out before they expired (per instance, in memory).
Every request re-reads the user, so disabling, demoting or resetting the password of a user ends
their sessions at once; a session also ends `SESSION_SECONDS` after sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from server_stub.config import Settings

COOKIE = "webhost_admin"
COOKIE_PATH = "/admin"
SESSION_SECONDS = 8 * 3600
# A visitor who has not signed in still gets a session: it carries the login form's CSRF token.
ANONYMOUS_SECONDS = 3600
MAX_FLASHES = 5


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(settings: Settings, purpose: bytes) -> bytes:
    # Purpose-bound keys: a session cookie can never pass for an access token or vice versa.
    return hashlib.sha256(b"webhost-fleet admin " + purpose + b"\0" + settings.secret_key.encode()).digest()


def password_fingerprint(settings: Settings, password_hash: str) -> str:
    """Changes whenever the password does; not reversible and not the hash itself."""
    digest = hmac.new(_key(settings, b"password"), password_hash.encode(), hashlib.sha256).digest()
    return _b64encode(digest[:16])


@dataclass
class Session:
    sid: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    user_id: str | None = None
    password: str | None = None  # password_fingerprint of the user when they signed in
    issued: int = field(default_factory=lambda: int(time.time()))
    flashes: list[tuple[str, str]] = field(default_factory=list)
    dirty: bool = True  # a new session must be sent to the browser

    @property
    def expires(self) -> int:
        return self.issued + (SESSION_SECONDS if self.user_id else ANONYMOUS_SECONDS)

    def flash(self, kind: str, message: str) -> None:
        self.flashes = [*self.flashes, (kind, message)][-MAX_FLASHES:]
        self.dirty = True

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        if taken:
            self.dirty = True
        return taken


def encode(settings: Settings, session: Session) -> str:
    payload = {"sid": session.sid, "csrf": session.csrf, "uid": session.user_id, "pw": session.password,
               "iat": session.issued, "fl": session.flashes}  # fmt: skip
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    signature = _b64encode(hmac.new(_key(settings, b"session"), body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def decode(settings: Settings, value: str, now: float | None = None) -> Session | None:
    """The session a cookie value holds; None when it is forged, malformed or expired."""
    body, dot, signature = value.partition(".")
    expected = _b64encode(hmac.new(_key(settings, b"session"), body.encode(), hashlib.sha256).digest())
    if not dot or not hmac.compare_digest(expected.encode(), signature.encode()):
        return None
    try:
        payload: dict[str, Any] = json.loads(_b64decode(body))
        session = Session(
            sid=str(payload["sid"]), csrf=str(payload["csrf"]), user_id=payload["uid"], password=payload["pw"],
            issued=int(payload["iat"]), flashes=[(str(k), str(m)) for k, m in payload.get("fl", [])][-MAX_FLASHES:],
            dirty=False,
        )  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None
    if not (session.user_id is None or isinstance(session.user_id, str)):
        return None
    current = time.time() if now is None else now
    if session.expires <= current or session.issued > current + 60:
        return None
    return session


class RevokedSessions:
    """Sessions signed out before they expired, forgotten once they would have expired anyway."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}

    def revoke(self, session: Session) -> None:
        now = time.time()
        self._until = {sid: until for sid, until in self._until.items() if until > now}
        self._until[session.sid] = session.expires

    def __contains__(self, sid: object) -> bool:
        return isinstance(sid, str) and sid in self._until


def csrf_matches(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), str(presented).encode())
