"""Tenants, users and API keys: creation, roles, passwords (argon2) and credential checks."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server_stub.db import Database, UniqueViolation, json_param, parse_json, parse_time, time_param, utcnow

PLANS = ("hobby", "starter", "pro")
ROLES = ("platform_admin", "admin", "dispatcher", "field")
TENANT_ROLES = ("admin", "dispatcher", "field")
SCOPES = ("read", "write", "positions")
MIN_PASSWORD_CHARS = 8
API_KEY_PREFIX = "whk_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()


class AccountError(Exception):
    """Base of every account error; the message is meant for the person who caused it."""


class InvalidCredentials(AccountError):
    """Unknown email or wrong password (deliberately not saying which)."""


class AccountDisabled(AccountError):
    """The user or their tenant has been disabled."""


class DuplicateEmail(AccountError):
    """Another user already has this email."""


class NotFound(AccountError):
    """No tenant, user or API key with that id."""


class WeakPassword(AccountError):
    """The password is too short."""


class InvalidRole(AccountError):
    """Unknown role, or a role that does not fit the user's tenant (platform admins have none)."""


class InvalidInput(AccountError):
    """A malformed email, unknown plan or scope, or an empty name."""


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    plan: str
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class User:
    id: str
    customer_id: str | None
    email: str
    role: str
    disabled: bool
    created_at: datetime
    # Tokens issued before this moment are refused (set by a password reset); None: never reset.
    tokens_valid_after: datetime | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    customer_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _tenant(row: dict[str, Any]) -> Tenant:
    created = parse_time(row["created_at"])
    assert created is not None
    return Tenant(row["id"], row["name"], row["plan"], bool(row["disabled"]), created)


def _user(row: dict[str, Any]) -> User:
    created = parse_time(row["created_at"])
    assert created is not None
    return User(row["id"], row["customer_id"], row["email"], row["role"], bool(row["disabled"]), created,
                parse_time(row.get("tokens_valid_after")))


def _api_key(row: dict[str, Any]) -> ApiKey:
    created = parse_time(row["created_at"])
    assert created is not None
    return ApiKey(
        row["id"], row["customer_id"], row["name"], row["prefix"], tuple(parse_json(row["scopes"])), row["role"],
        created, parse_time(row["last_used_at"]), parse_time(row["revoked_at"]),
    )  # fmt: skip


# -- tenants ---------------------------------------------------------------------------------


def _check_plan(plan: str) -> None:
    if plan not in PLANS:
        raise InvalidInput(f"unknown plan {plan!r}; choose one of {', '.join(PLANS)}")


async def create_tenant(db: Database, name: str, plan: str = "hobby") -> Tenant:
    """A new customer (tenant) with a fresh id."""
    name = name.strip()
    if not name:
        raise InvalidInput("a tenant needs a non-empty name")
    _check_plan(plan)
    tenant_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO customers (id, name, plan, disabled, created_at) VALUES (?, ?, ?, ?, ?)",
        (tenant_id, name, plan, False, time_param(db, utcnow())),
    )
    return await get_tenant(db, tenant_id)


async def get_tenant(db: Database, tenant_id: str) -> Tenant:
    row = await db.fetchone("SELECT * FROM customers WHERE id = ?", (tenant_id,))
    if row is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return _tenant(row)


async def list_tenants(db: Database) -> list[Tenant]:
    return [_tenant(row) for row in await db.fetch("SELECT * FROM customers ORDER BY created_at, id")]


async def set_plan(db: Database, tenant_id: str, plan: str) -> Tenant:
    _check_plan(plan)
    if not await db.execute("UPDATE customers SET plan = ? WHERE id = ?", (plan, tenant_id)):
        raise NotFound(f"tenant {tenant_id} not found")
    return await get_tenant(db, tenant_id)


async def disable_tenant(db: Database, tenant_id: str, disabled: bool = True) -> Tenant:
    """Disable (or re-enable) a tenant: its users can no longer sign in and its tokens stop working."""
    if not await db.execute("UPDATE customers SET disabled = ? WHERE id = ?", (disabled, tenant_id)):
        raise NotFound(f"tenant {tenant_id} not found")
    return await get_tenant(db, tenant_id)


# -- users -----------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput(f"{email!r} is not a valid email address")
    return email


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"the password must be at least {MIN_PASSWORD_CHARS} characters long")


def _check_role(role: str, customer_id: str | None) -> None:
    if role not in ROLES:
        raise InvalidRole(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if role == "platform_admin" and customer_id is not None:
        raise InvalidRole("a platform_admin belongs to no tenant; omit the tenant")
    if role != "platform_admin" and customer_id is None:
        raise InvalidRole(f"a {role} user belongs to a tenant; give the tenant id")


async def _hash(password: str) -> str:
    # argon2 is deliberately slow (tens of ms): keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


def _verify_sync(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


async def create_user(db: Database, email: str, password: str, role: str, customer_id: str | None = None) -> User:
    """A user with an argon2 password hash; platform_admin has no tenant, every other role needs one."""
    email = normalize_email(email)
    _check_password(password)
    _check_role(role, customer_id)
    if customer_id is not None:
        await get_tenant(db, customer_id)
    if await db.fetchval("SELECT 1 FROM users WHERE email = ?", (email,)):
        raise DuplicateEmail(f"a user with email {email} already exists")
    user_id = str(uuid.uuid4())
    try:
        await db.execute(
            "INSERT INTO users (id, customer_id, email, password_hash, role, disabled, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user_id, customer_id, email, await _hash(password), role, False, time_param(db, utcnow())),
        )
    except UniqueViolation as exc:  # lost a race with another insert of the same email
        raise DuplicateEmail(f"a user with email {email} already exists") from exc
    return await get_user(db, user_id)


async def get_user(db: Database, user_id: str) -> User:
    row = await db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return _user(row)


async def list_users(db: Database, customer_id: str) -> list[User]:
    async with db.transaction(customer_id) as tx:
        rows = await tx.fetch("SELECT * FROM users WHERE customer_id = ? ORDER BY email", (customer_id,))
    return [_user(row) for row in rows]


async def set_role(db: Database, user_id: str, role: str) -> User:
    user = await get_user(db, user_id)
    _check_role(role, user.customer_id)
    await db.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))
    return await get_user(db, user_id)


async def reset_password(db: Database, user_id: str, password: str) -> None:
    """Set a new password and end every session of the user: access tokens issued until now are
    refused from the next request on (tokens_valid_after) and every refresh token is revoked."""
    _check_password(password)
    password_hash = await _hash(password)
    now = time_param(db, utcnow())
    async with db.transaction() as tx:
        changed = await tx.execute(
            "UPDATE users SET password_hash = ?, tokens_valid_after = ? WHERE id = ?", (password_hash, now, user_id)
        )
        if not changed:
            raise NotFound(f"user {user_id} not found")
        await tx.execute(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", (now, user_id)
        )


async def disable_user(db: Database, user_id: str, disabled: bool = True) -> User:
    if not await db.execute("UPDATE users SET disabled = ? WHERE id = ?", (disabled, user_id)):
        raise NotFound(f"user {user_id} not found")
    return await get_user(db, user_id)


async def account_state(db: Database, user_id: str) -> tuple[User, bool]:
    """The user and whether they may act now (neither they nor their tenant is disabled)."""
    row = await db.fetchone(
        "SELECT u.*, c.disabled AS tenant_disabled FROM users u"
        " LEFT JOIN customers c ON c.id = u.customer_id WHERE u.id = ?",
        (user_id,),
    )
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return _user(row), not (row["disabled"] or row["tenant_disabled"])


async def authenticate(db: Database, email: str, password: str) -> User:
    """The user with this email and password; InvalidCredentials or AccountDisabled otherwise."""
    row = await db.fetchone(
        "SELECT u.*, c.disabled AS tenant_disabled FROM users u"
        " LEFT JOIN customers c ON c.id = u.customer_id WHERE u.email = ?",
        (email.strip().lower(),),
    )
    if row is None:
        # Verify against a dummy hash so an unknown email takes as long as a wrong password.
        await asyncio.to_thread(_verify_sync, _dummy_hash(), password)
        raise InvalidCredentials("wrong email or password")
    if not await asyncio.to_thread(_verify_sync, row["password_hash"], password):
        raise InvalidCredentials("wrong email or password")
    if row["disabled"] or row["tenant_disabled"]:
        raise AccountDisabled("this account is disabled; ask your administrator to re-enable it")
    if _hasher.check_needs_rehash(row["password_hash"]):
        await db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (await _hash(password), row["id"]))
    return _user(row)


# -- API keys --------------------------------------------------------------------------------


def hash_api_key(secret: str) -> str:
    """What is stored for an API key: keys are long random secrets, so a fast hash suffices."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise InvalidInput(f"scopes must be a non-empty list of {', '.join(SCOPES)}; got {list(chosen)}")
    return chosen


async def create_api_key(
    db: Database, customer_id: str, name: str, scopes: Iterable[str], role: str = "dispatcher"
) -> tuple[ApiKey, str]:
    """A new key and its secret (`whk_…`); only the secret's sha256 is stored, so show it once."""
    name = name.strip()
    if not name:
        raise InvalidInput("an API key needs a non-empty name")
    chosen = _check_scopes(scopes)
    if role not in TENANT_ROLES:
        raise InvalidRole(f"an API key acts as one of {', '.join(TENANT_ROLES)}, not {role!r}")
    await get_tenant(db, customer_id)
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = str(uuid.uuid4())
    async with db.transaction(customer_id) as tx:
        await tx.execute(
            "INSERT INTO api_keys (id, customer_id, name, prefix, key_hash, scopes, role, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, customer_id, name, secret[:8], hash_api_key(secret), json_param(list(chosen)), role,
             time_param(db, utcnow())),
        )  # fmt: skip
        row = await tx.fetchone("SELECT * FROM api_keys WHERE id = ?", (key_id,))
    assert row is not None
    return _api_key(row), secret


async def list_api_keys(db: Database, customer_id: str) -> list[ApiKey]:
    async with db.transaction(customer_id) as tx:
        rows = await tx.fetch("SELECT * FROM api_keys WHERE customer_id = ? ORDER BY created_at", (customer_id,))
    return [_api_key(row) for row in rows]


async def revoke_api_key(db: Database, customer_id: str, key_id: str) -> ApiKey:
    """Revoke a key of this tenant; it is rejected from now on (revoking twice keeps the first time)."""
    async with db.transaction(customer_id) as tx:
        await tx.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? AND customer_id = ?",
            (time_param(db, utcnow()), key_id, customer_id),
        )
        row = await tx.fetchone("SELECT * FROM api_keys WHERE id = ? AND customer_id = ?", (key_id, customer_id))
    if row is None:
        raise NotFound(f"API key {key_id} not found in tenant {customer_id}")
    return _api_key(row)


async def find_api_key(db: Database, secret: str) -> ApiKey | None:
    """The key a presented secret belongs to (revoked ones included), looked up by hash across tenants."""
    row = await db.fetchone("SELECT * FROM api_keys WHERE key_hash = ?", (hash_api_key(secret),))
    return None if row is None else _api_key(row)


async def touch_api_key(db: Database, key: ApiKey) -> None:
    async with db.transaction(key.customer_id) as tx:
        await tx.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (time_param(db, utcnow()), key.id))
