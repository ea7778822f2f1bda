"""Who is calling: signed access tokens, rotating refresh tokens, API keys, and login rate limiting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from server_stub import accounts
from server_stub.accounts import User
from server_stub.config import Settings
from server_stub.db import Database, parse_time, time_param, utcnow

WRITER_ROLES = frozenset({"platform_admin", "admin", "dispatcher"})
REFRESH_PREFIX = "whr_"
# last_used_at is informational; writing it on every request would turn each read into a write.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)


class AuthError(Exception):
    """The request is not authenticated (401) or not allowed (403); `reason` is safe to show."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RateLimited(Exception):
    """Too many failed logins for this email from this address; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-in attempts; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """The caller: a user (user_id) or an API key (api_key_id), acting in a tenant with a role."""

    customer_id: str | None
    role: str
    user_id: str | None = None
    api_key_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_platform_admin(self) -> bool:
        return self.role == "platform_admin" and self.api_key_id is None

    @property
    def can_read_fleet(self) -> bool:
        if self.api_key_id is not None:
            return bool(self.scopes & {"read", "write"})
        return self.role in accounts.ROLES

    @property
    def can_write_fleet(self) -> bool:
        # A key needs the "write" scope and a writing role: scopes narrow a role, never widen it.
        if self.api_key_id is not None:
            return "write" in self.scopes and self.role in WRITER_ROLES
        return self.role in WRITER_ROLES

    @property
    def can_ingest_positions(self) -> bool:
        if self.api_key_id is not None:
            return bool(self.scopes & {"positions", "write"})
        return self.role in accounts.ROLES


def require_tenant(principal: Principal, tenant_id: str) -> None:
    """AuthError(403) unless the principal belongs to tenant_id (platform admins may enter any)."""
    if principal.is_platform_admin:
        return
    if principal.customer_id != tenant_id:
        raise AuthError(403, "this token does not belong to that tenant")


# -- access tokens ---------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(settings: Settings, body: str) -> str:
    # Derive a purpose-bound key so the secret can sign other things without tokens being interchangeable.
    key = hashlib.sha256(b"webhost-fleet access token\0" + settings.secret_key.encode()).digest()
    return _b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest())


def issue_access_token(settings: Settings, user: User, ttl: int | None = None) -> tuple[str, int]:
    """A signed `payload.signature` token for the user and its lifetime in seconds."""
    lifetime = settings.access_token_ttl if ttl is None else ttl
    payload = {"sub": user.id, "cid": user.customer_id, "role": user.role, "exp": int(time.time()) + lifetime,
               "typ": "access"}  # fmt: skip
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_signature(settings, body)}", lifetime


def verify_access_token(settings: Settings, token: str) -> Principal:
    """The principal a token names; AuthError(401, "bad token" | "token expired") otherwise."""
    body, dot, signature = token.partition(".")
    if not dot or not hmac.compare_digest(_signature(settings, body).encode(), signature.encode()):
        raise AuthError(401, "bad token")
    try:
        payload = json.loads(_b64decode(body))
        sub, cid, role, exp, typ = payload["sub"], payload["cid"], payload["role"], payload["exp"], payload["typ"]
    except (ValueError, KeyError, TypeError):
        raise AuthError(401, "bad token") from None
    if (
        typ != "access"
        or not isinstance(sub, str)
        or not (cid is None or isinstance(cid, str))
        or role not in accounts.ROLES
        or not isinstance(exp, int)
    ):
        raise AuthError(401, "bad token")
    if exp <= time.time():
        raise AuthError(401, "token expired")
    return Principal(customer_id=cid, role=role, user_id=sub)


# -- refresh tokens --------------------------------------------------------------------------


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue_refresh_token(db: Database, settings: Settings, user: User) -> str:
    """A new refresh secret for the user; only its hash is stored."""
    secret = REFRESH_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    await db.execute(
        "INSERT INTO refresh_tokens (id, user_id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        (str(uuid.uuid4()), user.id, _hash(secret), time_param(db, now),
         time_param(db, now + timedelta(seconds=settings.refresh_token_ttl))),
    )  # fmt: skip
    return secret


async def rotate_refresh_token(db: Database, settings: Settings, refresh: str) -> tuple[str, str]:
    """Trade a refresh token for (access token, new refresh token); the old one is revoked."""
    row = await db.fetchone("SELECT * FROM refresh_tokens WHERE token_hash = ?", (_hash(refresh),))
    if row is None:
        raise AuthError(401, "bad token")
    now = utcnow()
    if row["revoked_at"] is not None:
        # A rotated token coming back means it leaked: end every session of this user.
        await db.execute(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
            (time_param(db, now), row["user_id"]),
        )
        raise AuthError(401, "refresh token reused")
    expires_at = parse_time(row["expires_at"])
    if expires_at is None or expires_at <= now:
        raise AuthError(401, "token expired")
    try:
        user, active = await accounts.account_state(db, row["user_id"])
    except accounts.NotFound:
        raise AuthError(401, "bad token") from None
    if not active:
        raise AuthError(403, "account disabled")
    async with db.transaction() as tx:
        # Only one of two concurrent rotations of the same token may win.
        revoked = await tx.execute(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time_param(db, now), row["id"]),
        )
        if revoked != 1:
            raise AuthError(401, "refresh token reused")
    new_refresh = await issue_refresh_token(db, settings, user)
    access, _ = issue_access_token(settings, user)
    return access, new_refresh


async def revoke_refresh_token(db: Database, refresh: str) -> bool:
    """Revoke a refresh token (sign-out); False when it was unknown or already revoked."""
    changed = await db.execute(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
        (time_param(db, utcnow()), _hash(refresh)),
    )
    return changed == 1


# -- any bearer credential -------------------------------------------------------------------


async def _resolve_api_key(db: Database, secret: str) -> Principal:
    key = await accounts.find_api_key(db, secret)
    if key is None:
        raise AuthError(401, "bad token")
    if key.revoked:
        raise AuthError(401, "api key revoked")
    tenant = await accounts.get_tenant(db, key.customer_id)
    if tenant.disabled:
        raise AuthError(403, "account disabled")
    if key.last_used_at is None or utcnow() - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        await accounts.touch_api_key(db, key)
    return Principal(key.customer_id, key.role, None, key.id, frozenset(key.scopes))


async def resolve_token(db: Database, settings: Settings, token: str) -> Principal:
    """The principal behind an access token or an API key (`whk_…`); AuthError when unusable."""
    if token.startswith(accounts.API_KEY_PREFIX):
        return await _resolve_api_key(db, token)
    claimed = verify_access_token(settings, token)
    assert claimed.user_id is not None
    try:
        user, active = await accounts.account_state(db, claimed.user_id)
    except accounts.NotFound:
        raise AuthError(401, "bad token") from None
    if not active:
        raise AuthError(403, "account disabled")
    # Role and tenant come from the database, so a demotion takes effect before the token expires.
    return Principal(customer_id=user.customer_id, role=user.role, user_id=user.id)


# -- login rate limiting ---------------------------------------------------------------------


class LoginRateLimiter:
    """Sliding window of failed logins per (email, client ip), kept in memory."""

    def __init__(
        self, max_failures: int = 5, window_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, email: str, client_ip: str) -> None:
        """RateLimited when this email from this address has failed too often within the window."""
        now = self._clock()
        times = self._recent((email.strip().lower(), client_ip), now)
        if len(times) >= self.max_failures:
            # Open again once the oldest failure that still counts leaves the window.
            oldest_counted = times[len(times) - self.max_failures]
            raise RateLimited(max(1, math.ceil(oldest_counted + self.window - now)))

    def record_failure(self, email: str, client_ip: str) -> None:
        now = self._clock()
        key = (email.strip().lower(), client_ip)
        times = self._recent(key, now)
        times.append(now)
        self._failures[key] = times
        if len(self._failures) > 10_000:
            # Bound memory under a spray of distinct emails: forget entries whose window has passed.
            self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}

    def record_success(self, email: str) -> None:
        """A successful login clears that email's failures from every address."""
        email = email.strip().lower()
        for key in [k for k in self._failures if k[0] == email]:
            del self._failures[key]
