"""Tenants, users and API keys: creation, changes, listing, credential checks and every named error."""

from __future__ import annotations

import hashlib

import pytest

from server_stub import accounts
from server_stub.accounts import (
    AccountDisabled,
    DuplicateEmail,
    InvalidCredentials,
    InvalidInput,
    InvalidRole,
    NotFound,
    WeakPassword,
)
from server_stub.db import Database

from .conftest import unique_email

pytestmark = pytest.mark.anyio


async def test_tenant_is_created_listed_replanned_and_disabled(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "  Acme Haulage ", "starter")
    assert (tenant.name, tenant.plan, tenant.disabled) == ("Acme Haulage", "starter", False)
    assert tenant in await accounts.list_tenants(db)
    assert (await accounts.set_plan(db, tenant.id, "pro")).plan == "pro"
    assert (await accounts.disable_tenant(db, tenant.id)).disabled is True
    assert (await accounts.disable_tenant(db, tenant.id, disabled=False)).disabled is False


async def test_tenant_errors_are_named(db: Database) -> None:
    with pytest.raises(InvalidInput, match="unknown plan 'gold'"):
        await accounts.create_tenant(db, "Acme", "gold")
    with pytest.raises(InvalidInput, match="non-empty name"):
        await accounts.create_tenant(db, "  ")
    with pytest.raises(NotFound, match="tenant missing not found"):
        await accounts.set_plan(db, "missing", "pro")
    with pytest.raises(NotFound):
        await accounts.disable_tenant(db, "missing")


async def test_user_email_is_stored_lower_case_with_an_argon2_hash(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    email = unique_email("Dispatch").upper()
    user = await accounts.create_user(db, f"  {email} ", "correct horse", "dispatcher", tenant.id)
    assert (user.email, user.role, user.customer_id, user.disabled) == (email.lower(), "dispatcher", tenant.id, False)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = ?", (user.id,))
    assert stored.startswith("$argon2")
    assert "correct horse" not in stored
    assert await accounts.list_users(db, tenant.id) == [user]


async def test_platform_admin_has_no_tenant_and_tenant_roles_need_one(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    admin = await accounts.create_user(db, unique_email("root"), "long enough", "platform_admin")
    assert admin.customer_id is None
    with pytest.raises(InvalidRole, match="platform_admin belongs to no tenant"):
        await accounts.create_user(db, unique_email(), "long enough", "platform_admin", tenant.id)
    with pytest.raises(InvalidRole, match="field user belongs to a tenant"):
        await accounts.create_user(db, unique_email(), "long enough", "field")
    with pytest.raises(InvalidRole, match="unknown role 'owner'"):
        await accounts.create_user(db, unique_email(), "long enough", "owner", tenant.id)


async def test_user_creation_errors_are_named(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    email = unique_email()
    await accounts.create_user(db, email, "long enough", "admin", tenant.id)
    with pytest.raises(DuplicateEmail, match=f"a user with email {email} already exists"):
        await accounts.create_user(db, email.upper(), "long enough", "field", tenant.id)
    with pytest.raises(WeakPassword, match="at least 8 characters"):
        await accounts.create_user(db, unique_email(), "short", "admin", tenant.id)
    with pytest.raises(InvalidInput, match="not a valid email"):
        await accounts.create_user(db, "not-an-email", "long enough", "admin", tenant.id)
    with pytest.raises(NotFound, match="tenant nope not found"):
        await accounts.create_user(db, unique_email(), "long enough", "admin", "nope")


async def test_role_changes_respect_the_tenant_rule(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    user = await accounts.create_user(db, unique_email(), "long enough", "field", tenant.id)
    assert (await accounts.set_role(db, user.id, "admin")).role == "admin"
    with pytest.raises(InvalidRole):
        await accounts.set_role(db, user.id, "platform_admin")
    with pytest.raises(NotFound):
        await accounts.set_role(db, "missing", "admin")


async def test_authenticate_accepts_the_password_and_refuses_everything_else(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    email = unique_email()
    user = await accounts.create_user(db, email, "first password", "dispatcher", tenant.id)
    assert await accounts.authenticate(db, email.upper(), "first password") == user
    with pytest.raises(InvalidCredentials, match="wrong email or password"):
        await accounts.authenticate(db, email, "wrong password")
    with pytest.raises(InvalidCredentials, match="wrong email or password"):
        await accounts.authenticate(db, unique_email("nobody"), "first password")
    await accounts.reset_password(db, user.id, "second password")
    with pytest.raises(InvalidCredentials):
        await accounts.authenticate(db, email, "first password")
    assert (await accounts.authenticate(db, email, "second password")).id == user.id
    with pytest.raises(WeakPassword):
        await accounts.reset_password(db, user.id, "short")
    with pytest.raises(NotFound):
        await accounts.reset_password(db, "missing", "long enough")


async def test_disabled_user_or_tenant_cannot_sign_in(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    email = unique_email()
    user = await accounts.create_user(db, email, "long enough", "admin", tenant.id)
    await accounts.disable_user(db, user.id)
    with pytest.raises(AccountDisabled, match="disabled"):
        await accounts.authenticate(db, email, "long enough")
    await accounts.disable_user(db, user.id, disabled=False)
    await accounts.disable_tenant(db, tenant.id)
    with pytest.raises(AccountDisabled):
        await accounts.authenticate(db, email, "long enough")
    # A wrong password never reveals that the account is disabled.
    with pytest.raises(InvalidCredentials):
        await accounts.authenticate(db, email, "not the password")
    with pytest.raises(NotFound):
        await accounts.disable_user(db, "missing")


async def test_api_key_secret_is_shown_once_and_only_its_hash_is_stored(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    key, secret = await accounts.create_api_key(db, tenant.id, "tracker gateway", ["read", "positions"])
    assert secret.startswith("whk_") and len(secret) == 4 + 43
    assert (key.prefix, key.scopes, key.role, key.revoked) == (secret[:8], ("read", "positions"), "dispatcher", False)
    async with db.transaction(tenant.id) as tx:
        row = await tx.fetchone("SELECT * FROM api_keys WHERE id = ?", (key.id,))
    assert row is not None
    assert secret not in {str(value) for value in row.values()}
    assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert await accounts.find_api_key(db, secret) == key
    assert await accounts.find_api_key(db, secret + "x") is None


async def test_api_keys_are_listed_per_tenant_and_revoked(db: Database) -> None:
    acme = await accounts.create_tenant(db, "Acme")
    other = await accounts.create_tenant(db, "Other")
    key, _ = await accounts.create_api_key(db, acme.id, "one", ["read", "write"], role="admin")
    await accounts.create_api_key(db, other.id, "theirs", ["read"])
    assert [k.id for k in await accounts.list_api_keys(db, acme.id)] == [key.id]
    revoked = await accounts.revoke_api_key(db, acme.id, key.id)
    assert revoked.revoked and revoked.revoked_at is not None
    assert (await accounts.revoke_api_key(db, acme.id, key.id)).revoked_at == revoked.revoked_at
    with pytest.raises(NotFound, match="not found in tenant"):
        await accounts.revoke_api_key(db, other.id, key.id)


async def test_api_key_errors_are_named(db: Database) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    with pytest.raises(InvalidInput, match="scopes must be"):
        await accounts.create_api_key(db, tenant.id, "k", ["read", "admin"])
    with pytest.raises(InvalidInput, match="scopes must be"):
        await accounts.create_api_key(db, tenant.id, "k", [])
    with pytest.raises(InvalidRole, match="not 'platform_admin'"):
        await accounts.create_api_key(db, tenant.id, "k", ["read"], role="platform_admin")
    with pytest.raises(InvalidInput, match="non-empty name"):
        await accounts.create_api_key(db, tenant.id, " ", ["read"])
    with pytest.raises(NotFound):
        await accounts.create_api_key(db, "missing", "k", ["read"])
