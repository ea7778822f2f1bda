"""Who is calling: JWT access tokens, rotating refresh tokens, API keys, and login rate limiting.

Every token resolution re-reads the user (or key) from the database: a disabled user, a revoked
key, a demotion, or a password reset (which moves the user's `tokens_valid_after` past every token
issued so far) takes effect on the next request. Open sockets are told at once through
`server_stub.revocation`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt

from server_stub import accounts
from server_stub.accounts import User
from server_stub.config import Settings
from server_stub.db import Database, parse_time, time_param, utcnow

log = logging.getLogger(__name__)

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
    """Too many failed logins for this account or from this address; retry after `retry_after` seconds."""

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


# Access tokens are JWTs (RFC 7519, HS256) that gateways and other tools can read and verify:
#   header  {"alg": "HS256", "typ": "JWT", "kid": <key id>}
#   claims  iss, aud, sub (user id), iat (to the microsecond), exp, cid (tenant id or null),
#           role, typ = "access"
# The key is derived from WEBHOST_SECRET_KEY for this one purpose, and `kid` names it, so a new
# secret can be rolled out while tokens signed with the previous one (WEBHOST_SECRET_KEY_PREVIOUS)
# still verify until they expire. docs/security.md documents the claims.
TOKEN_ISSUER = "webhost-fleet"
TOKEN_AUDIENCE = "webhost-fleet-api"
TOKEN_ALGORITHM = "HS256"


def _signing_key(secret: str) -> bytes:
    # Purpose-bound: the same secret signs admin sessions, and the two must never be interchangeable.
    return hashlib.sha256(b"webhost-fleet access token\0" + secret.encode()).digest()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"kid\0" + key).hexdigest()[:16]


def _verification_keys(settings: Settings) -> dict[str, bytes]:
    keys = [_signing_key(secret) for secret in (settings.secret_key, *settings.previous_secret_keys)]
    return {_key_id(key): key for key in keys}


def issue_access_token(settings: Settings, user: User, ttl: int | None = None) -> tuple[str, int]:
    """A signed JWT for the user and its lifetime in seconds."""
    lifetime = settings.access_token_ttl if ttl is None else ttl
    now = time.time()
    key = _signing_key(settings.secret_key)
    # iat to the microsecond (as the database keeps tokens_valid_after) lets a password reset end
    # every token issued before it.
    claims = {"iss": TOKEN_ISSUER, "aud": TOKEN_AUDIENCE, "sub": user.id, "iat": round(now, 6),
              "exp": int(now) + lifetime, "cid": user.customer_id, "role": user.role, "typ": "access"}
    token = jwt.encode(claims, key, algorithm=TOKEN_ALGORITHM, headers={"kid": _key_id(key)})
    return token, lifetime


def _claims(settings: Settings, token: str, *, allow_expired: bool = False) -> tuple[Principal, float]:
    """The principal a token names and when it was issued."""
    if token.count(".") == 1:
        # The signed format before JWTs: refused like an expired token, so clients refresh.
        raise AuthError(401, "token expired")
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = _verification_keys(settings).get(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthError(401, "bad token")
        payload = jwt.decode(
            token, key, algorithms=[TOKEN_ALGORITHM], audience=TOKEN_AUDIENCE, issuer=TOKEN_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "aud"], "verify_exp": not allow_expired},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "token expired") from None
    except jwt.PyJWTError:
        raise AuthError(401, "bad token") from None
    sub, cid, role, typ, issued_at = (payload.get(name) for name in ("sub", "cid", "role", "typ", "iat"))
    if (
        typ != "access"
        or not isinstance(sub, str)
        or not (cid is None or isinstance(cid, str))
        or role not in accounts.ROLES
        or not isinstance(issued_at, (int, float))
    ):
        raise AuthError(401, "bad token")
    return Principal(customer_id=cid, role=role, user_id=sub), float(issued_at)


def verify_access_token(settings: Settings, token: str) -> Principal:
    """The principal a token names; AuthError(401, "bad token" | "token expired") otherwise."""
    return _claims(settings, token)[0]


def _issued_before(issued_at: float | datetime | None, cutoff: datetime | None) -> bool:
    if cutoff is None:
        return False
    if issued_at is None:
        return True
    moment = issued_at.timestamp() if isinstance(issued_at, datetime) else issued_at
    return moment < cutoff.timestamp()


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
    """Trade a refresh token for (access token, new refresh token); the old one is revoked.

    A token issued before the user's `tokens_valid_after` (a password reset) is refused."""
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
    if _issued_before(parse_time(row["created_at"]), user.tokens_valid_after):
        raise AuthError(401, "session ended: the password was changed")
    async with db.transaction() as tx:
        # Only one of two concurrent rotations of the same token may win.
        revoked = await tx.execute(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time_param(db, now), row["id"]),
        )
        if revoked != 1:
            raise AuthError(401, "refresh token reused")
    new_refresh = await issue_refresh_token(db, settings, user)
    # A password reset that ran since the checks above revoked every refresh token but could not
    # see this new one: look again, so a rotation racing a reset cannot outlive it.
    latest, _ = await accounts.account_state(db, user.id)
    if latest.tokens_valid_after != user.tokens_valid_after:
        await revoke_refresh_token(db, new_refresh)
        raise AuthError(401, "session ended: the password was changed")
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


async def resolve_token(db: Database, settings: Settings, token: str, *, allow_expired: bool = False) -> Principal:
    """The principal behind an access token or an API key (`whk_…`); AuthError when unusable.

    `allow_expired` is for re-checking the credential of a socket that is already open: it was
    valid when the socket opened, and only a change to the account (not the clock) ends it."""
    if token.startswith(accounts.API_KEY_PREFIX):
        return await _resolve_api_key(db, token)
    claimed, issued_at = _claims(settings, token, allow_expired=allow_expired)
    assert claimed.user_id is not None
    try:
        user, active = await accounts.account_state(db, claimed.user_id)
    except accounts.NotFound:
        raise AuthError(401, "bad token") from None
    if not active:
        raise AuthError(403, "account disabled")
    if _issued_before(issued_at, user.tokens_valid_after):
        raise AuthError(401, "session ended: the password was changed")
    # Role and tenant come from the database, so a demotion takes effect before the token expires.
    return Principal(customer_id=user.customer_id, role=user.role, user_id=user.id)


# -- login rate limiting ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoginLimits:
    """How many failed sign-ins a window allows, per (account, address), per account, per address."""

    per_account_and_ip: int = 5
    per_account: int = 20
    per_ip: int = 20
    window_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        return cls(settings.login_max_failures, settings.login_max_failures_per_account,
                   settings.login_max_failures_per_ip, settings.login_window_seconds)


# Failures of one account: (time, address); failures from one address: times.
AccountFailures = list[tuple[float, str]]


class _MemoryFailures:
    """This process's failure windows (the fallback when Redis is absent or down)."""

    MAX_KEYS = 10_000

    def __init__(self, keep: int) -> None:
        self.keep = keep  # more entries than the largest limit never change an answer
        self.accounts: dict[str, deque[tuple[float, str]]] = {}
        self.ips: dict[str, deque[float]] = {}

    def read(self, account: str, ip: str, since: float) -> tuple[AccountFailures, list[float]]:
        return ([f for f in self.accounts.get(account, ()) if f[0] > since],
                [t for t in self.ips.get(ip, ()) if t > since])

    def add(self, account: str, ip: str, now: float, since: float) -> None:
        self.accounts.setdefault(account, deque(maxlen=self.keep)).append((now, ip))
        self.ips.setdefault(ip, deque(maxlen=self.keep)).append(now)
        if len(self.accounts) + len(self.ips) > self.MAX_KEYS:
            # Bound memory under a spray of distinct emails or addresses: forget windows that passed.
            self.accounts = {k: v for k, v in self.accounts.items() if v and v[-1][0] > since}
            self.ips = {k: v for k, v in self.ips.items() if v and v[-1] > since}

    def clear_account(self, account: str) -> None:
        self.accounts.pop(account, None)


class LoginRateLimiter:
    """Sliding windows of failed sign-ins: per (account, address), per account and per address.

    Per account and address stops guessing one password from one place; per account stops it
    from many places; per address stops one place from trying one password on many accounts.
    With Redis (the fan-out's connection) the windows are shared by every instance; while Redis
    is absent or unreachable each instance counts on its own.
    """

    def __init__(self, limits: LoginLimits | None = None, *, clock: Callable[[], float] = time.time,
                 redis: Callable[[], Any] | None = None, prefix: str = "webhost") -> None:
        self.limits = limits or LoginLimits()
        self._clock = clock
        self._redis = redis
        self._prefix = prefix
        keep = max(self.limits.per_account_and_ip, self.limits.per_account, self.limits.per_ip)
        self._memory = _MemoryFailures(keep)
        self._redis_failed_logged_at = 0.0

    @classmethod
    def for_settings(cls, settings: Settings, fanout: Any = None) -> LoginRateLimiter:
        """Limits from the settings, shared through the fan-out's Redis connection when it has one."""
        getter = getattr(fanout, "redis_client", None)
        return cls(LoginLimits.from_settings(settings), redis=getter if callable(getter) else None)

    # -- storage -------------------------------------------------------------------------------

    @staticmethod
    def _account(email: str) -> str:
        return email.strip().lower()

    def _redis_keys(self, account: str, ip: str) -> tuple[str, str]:
        # Hashed: Redis need not hold the email addresses people typed.
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        return f"{self._prefix}:login:account:{digest}", f"{self._prefix}:login:ip:{ip}"

    def _client(self) -> Any:
        return self._redis() if self._redis is not None else None

    def _redis_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._redis_failed_logged_at > 60:
            self._redis_failed_logged_at = now
            log.warning("login limits: Redis unreachable (%s); counting failures in this instance only", exc)

    async def _read(self, account: str, ip: str, now: float) -> tuple[AccountFailures, list[float]]:
        since = now - self.limits.window_seconds
        client = self._client()
        if client is not None:
            account_key, ip_key = self._redis_keys(account, ip)
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.zremrangebyscore(account_key, "-inf", since)
                    pipe.zremrangebyscore(ip_key, "-inf", since)
                    pipe.zrange(account_key, 0, -1, withscores=True)
                    pipe.zrange(ip_key, 0, -1, withscores=True)
                    *_, account_rows, ip_rows = await pipe.execute()
            except Exception as exc:
                self._redis_down(exc)
            else:
                failures = [(float(score), _member_ip(member)) for member, score in account_rows]
                return failures, [float(score) for _, score in ip_rows]
        return self._memory.read(account, ip, since)

    # -- the three calls -----------------------------------------------------------------------

    async def check(self, email: str, client_ip: str) -> None:
        """RateLimited when any of the three windows is full; retry_after is when all have room."""
        now = self._clock()
        account_failures, ip_failures = await self._read(self._account(email), client_ip, now)
        windows = [
            ([t for t, ip in account_failures if ip == client_ip], self.limits.per_account_and_ip),
            ([t for t, _ in account_failures], self.limits.per_account),
            (ip_failures, self.limits.per_ip),
        ]
        waits = []
        for times, limit in windows:
            times.sort()
            if len(times) >= limit:
                # Open again once the oldest failure that still counts leaves the window.
                oldest_counted = times[len(times) - limit]
                waits.append(max(1, math.ceil(oldest_counted + self.limits.window_seconds - now)))
        if waits:
            raise RateLimited(max(waits))

    async def record_failure(self, email: str, client_ip: str) -> None:
        now = self._clock()
        account = self._account(email)
        client = self._client()
        if client is not None:
            account_key, ip_key = self._redis_keys(account, client_ip)
            window = math.ceil(self.limits.window_seconds)
            nonce = secrets.token_hex(6)
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.zadd(account_key, {f"{client_ip} {nonce}": now})
                    pipe.zadd(ip_key, {nonce: now})
                    # Only the newest entries can change an answer; the keys expire with the window.
                    pipe.zremrangebyrank(account_key, 0, -(self._memory.keep + 1))
                    pipe.zremrangebyrank(ip_key, 0, -(self._memory.keep + 1))
                    pipe.expire(account_key, window)
                    pipe.expire(ip_key, window)
                    await pipe.execute()
                return
            except Exception as exc:
                self._redis_down(exc)
        self._memory.add(account, client_ip, now, now - self.limits.window_seconds)

    async def record_success(self, email: str) -> None:
        """A successful sign-in clears the account's failures (from every address), never an
        address's: one valid account must not reset the count of a spraying address."""
        account = self._account(email)
        self._memory.clear_account(account)
        client = self._client()
        if client is not None:
            try:
                await client.delete(self._redis_keys(account, "")[0])
            except Exception as exc:
                self._redis_down(exc)


def _member_ip(member: bytes | str) -> str:
    text = member.decode() if isinstance(member, bytes) else member
    return text.rsplit(" ", 1)[0]
