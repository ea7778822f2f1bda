"""Access tokens, refresh rotation, API keys as bearer tokens, tenant checks and the login rate limiter."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import jwt
import pytest

from server_stub import accounts, auth
from server_stub.auth import AuthError, LoginRateLimiter, Principal, RateLimited, require_tenant
from server_stub.config import Settings
from server_stub.db import Database

from .conftest import unique_email

pytestmark = pytest.mark.anyio


async def _user(db: Database, role: str = "dispatcher") -> accounts.User:
    tenant = await accounts.create_tenant(db, "Acme")
    return await accounts.create_user(db, unique_email(), "long enough", role, tenant.id)


async def test_access_token_resolves_to_the_user_principal(db: Database, settings: Settings) -> None:
    user = await _user(db)
    token, expires_in = auth.issue_access_token(settings, user)
    assert expires_in == 900
    principal = await auth.resolve_token(db, settings, token)
    assert principal == Principal(customer_id=user.customer_id, role="dispatcher", user_id=user.id)
    assert principal.can_read_fleet and principal.can_write_fleet


def test_expired_access_token_is_refused_as_expired(settings: Settings) -> None:
    user = accounts.User("u1", "t1", "a@b.co", "admin", False, accounts.utcnow())
    token, _ = auth.issue_access_token(settings, user, ttl=-1)
    with pytest.raises(AuthError, match="token expired") as caught:
        auth.verify_access_token(settings, token)
    assert caught.value.status == 401


@pytest.mark.parametrize("tamper", ["payload", "signature", "garbage", "other-key", "alg-none", "audience",
                                    "issuer", "unknown-kid"])
def test_tampered_access_token_is_a_bad_token(settings: Settings, tamper: str) -> None:
    user = accounts.User("u1", "t1", "a@b.co", "field", False, accounts.utcnow())
    token, _ = auth.issue_access_token(settings, user)
    header, body, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    key = auth._signing_key(settings.secret_key)
    kid = jwt.get_unverified_header(token)["kid"]
    if tamper == "payload":
        claims["role"] = "platform_admin"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{header}.{forged}.{signature}"
    elif tamper == "signature":
        token = f"{header}.{body}." + signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    elif tamper == "garbage":
        token = "not-a-token"
    elif tamper == "other-key":
        token, _ = auth.issue_access_token(replace(settings, secret_key="another-secret-" + "y" * 40), user)
    elif tamper == "alg-none":
        token = jwt.encode({**claims, "role": "platform_admin"}, None, algorithm="none", headers={"kid": kid})
    elif tamper == "audience":
        token = jwt.encode({**claims, "aud": "someone-else"}, key, algorithm="HS256", headers={"kid": kid})
    elif tamper == "issuer":
        token = jwt.encode({**claims, "iss": "someone-else"}, key, algorithm="HS256", headers={"kid": kid})
    else:
        token = jwt.encode(claims, key, algorithm="HS256", headers={"kid": "0123456789abcdef"})
    with pytest.raises(AuthError, match="bad token") as caught:
        auth.verify_access_token(settings, token)
    assert caught.value.status == 401


def test_access_tokens_are_standard_jwts_any_tool_can_verify(settings: Settings) -> None:
    user = accounts.User("u1", "t1", "a@b.co", "dispatcher", False, accounts.utcnow())
    token, lifetime = auth.issue_access_token(settings, user)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256" and header["typ"] == "JWT" and len(header["kid"]) == 16
    claims = jwt.decode(token, auth._signing_key(settings.secret_key), algorithms=["HS256"],
                        audience="webhost-fleet-api", issuer="webhost-fleet")
    assert (claims["sub"], claims["cid"], claims["role"], claims["typ"]) == ("u1", "t1", "dispatcher", "access")
    assert claims["exp"] - claims["iat"] == pytest.approx(lifetime, abs=1)


def test_a_token_of_the_previous_format_is_refused_like_an_expired_one(settings: Settings) -> None:
    payload = base64.urlsafe_b64encode(b'{"sub":"u1","cid":"t1","role":"admin","exp":9999999999,"typ":"access"}')
    old = payload.rstrip(b"=").decode() + ".c2lnbmF0dXJl"
    with pytest.raises(AuthError, match="token expired") as caught:
        auth.verify_access_token(settings, old)
    assert caught.value.status == 401


def test_tokens_signed_with_a_retired_secret_verify_until_they_expire(settings: Settings) -> None:
    user = accounts.User("u1", "t1", "a@b.co", "admin", False, accounts.utcnow())
    old_token, _ = auth.issue_access_token(settings, user)
    rotated = replace(settings, secret_key="the-new-secret-" + "z" * 40, previous_secret_keys=(settings.secret_key,))
    assert auth.verify_access_token(rotated, old_token).user_id == "u1"
    assert auth.verify_access_token(rotated, auth.issue_access_token(rotated, user)[0]).user_id == "u1"
    with pytest.raises(AuthError, match="bad token"):  # once the old secret is dropped, so are its tokens
        auth.verify_access_token(replace(rotated, previous_secret_keys=()), old_token)


async def test_disabled_user_or_tenant_loses_access_before_token_expiry(db: Database, settings: Settings) -> None:
    user = await _user(db)
    token, _ = auth.issue_access_token(settings, user)
    await accounts.disable_user(db, user.id)
    with pytest.raises(AuthError, match="account disabled") as caught:
        await auth.resolve_token(db, settings, token)
    assert caught.value.status == 403
    await accounts.disable_user(db, user.id, disabled=False)
    assert user.customer_id is not None
    await accounts.disable_tenant(db, user.customer_id)
    with pytest.raises(AuthError, match="account disabled"):
        await auth.resolve_token(db, settings, token)


async def test_role_change_applies_to_tokens_already_issued(db: Database, settings: Settings) -> None:
    user = await _user(db, "admin")
    token, _ = auth.issue_access_token(settings, user)
    await accounts.set_role(db, user.id, "field")
    principal = await auth.resolve_token(db, settings, token)
    assert principal.role == "field" and principal.can_read_fleet and not principal.can_write_fleet


async def test_password_reset_ends_every_earlier_access_and_refresh_token(db: Database, settings: Settings) -> None:
    user = await _user(db)
    access, _ = auth.issue_access_token(settings, user)
    refresh = await auth.issue_refresh_token(db, settings, user)
    rotated_access, rotated = await auth.rotate_refresh_token(db, settings, refresh)
    await accounts.reset_password(db, user.id, "a new long password")
    for token in (access, rotated_access):
        with pytest.raises(AuthError, match="session ended: the password was changed") as caught:
            await auth.resolve_token(db, settings, token)
        assert caught.value.status == 401
    with pytest.raises(AuthError) as refused:
        await auth.rotate_refresh_token(db, settings, rotated)  # the live end of the family, revoked too
    assert refused.value.status == 401
    # Tokens issued after the reset work, refresh included.
    fresh_user = await accounts.authenticate(db, user.email, "a new long password")
    fresh, _ = auth.issue_access_token(settings, fresh_user)
    assert (await auth.resolve_token(db, settings, fresh)).user_id == user.id
    fresh_refresh = await auth.issue_refresh_token(db, settings, fresh_user)
    assert (await auth.resolve_token(db, settings, (await auth.rotate_refresh_token(db, settings, fresh_refresh))[0])
            ).user_id == user.id


async def test_a_refresh_token_issued_before_a_reset_is_refused_even_if_not_revoked(db: Database,
                                                                                   settings: Settings) -> None:
    # tokens_valid_after alone ends it: a row the reset's revocation missed cannot outlive it.
    user = await _user(db)
    refresh = await auth.issue_refresh_token(db, settings, user)
    await accounts.reset_password(db, user.id, "a new long password")
    await db.execute("UPDATE refresh_tokens SET revoked_at = NULL WHERE user_id = ?", (user.id,))
    with pytest.raises(AuthError, match="session ended: the password was changed"):
        await auth.rotate_refresh_token(db, settings, refresh)


async def test_refresh_token_rotates_and_reuse_revokes_the_family(db: Database, settings: Settings) -> None:
    user = await _user(db)
    first = await auth.issue_refresh_token(db, settings, user)
    access, second = await auth.rotate_refresh_token(db, settings, first)
    assert second != first
    assert (await auth.resolve_token(db, settings, access)).user_id == user.id
    stored = await db.fetch("SELECT token_hash FROM refresh_tokens WHERE user_id = ?", (user.id,))
    assert first not in {row["token_hash"] for row in stored}
    with pytest.raises(AuthError, match="refresh token reused") as caught:
        await auth.rotate_refresh_token(db, settings, first)
    assert caught.value.status == 401
    # The leak revoked every session of the user, including the token rotated in good faith.
    with pytest.raises(AuthError, match="refresh token reused"):
        await auth.rotate_refresh_token(db, settings, second)


async def test_unknown_expired_and_signed_out_refresh_tokens_are_refused(db: Database, settings: Settings) -> None:
    user = await _user(db)
    with pytest.raises(AuthError, match="bad token"):
        await auth.rotate_refresh_token(db, settings, "whr_unknown")
    expired = await auth.issue_refresh_token(db, replace(settings, refresh_token_ttl=-1), user)
    with pytest.raises(AuthError, match="token expired"):
        await auth.rotate_refresh_token(db, settings, expired)
    signed_out = await auth.issue_refresh_token(db, settings, user)
    assert await auth.revoke_refresh_token(db, signed_out) is True
    assert await auth.revoke_refresh_token(db, signed_out) is False
    with pytest.raises(AuthError):
        await auth.rotate_refresh_token(db, settings, signed_out)


async def test_refresh_for_a_disabled_user_is_forbidden(db: Database, settings: Settings) -> None:
    user = await _user(db)
    refresh = await auth.issue_refresh_token(db, settings, user)
    await accounts.disable_user(db, user.id)
    with pytest.raises(AuthError, match="account disabled") as caught:
        await auth.rotate_refresh_token(db, settings, refresh)
    assert caught.value.status == 403


async def test_api_key_resolves_with_its_scopes_and_records_use(db: Database, settings: Settings) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    key, secret = await accounts.create_api_key(db, tenant.id, "gateway", ["read", "positions"])
    principal = await auth.resolve_token(db, settings, secret)
    assert principal == Principal(tenant.id, "dispatcher", None, key.id, frozenset({"read", "positions"}))
    assert principal.can_read_fleet and principal.can_ingest_positions and not principal.can_write_fleet
    assert [k.last_used_at is not None for k in await accounts.list_api_keys(db, tenant.id)] == [True]


async def test_revoked_or_unknown_api_key_is_refused(db: Database, settings: Settings) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    key, secret = await accounts.create_api_key(db, tenant.id, "gateway", ["read", "write"])
    assert (await auth.resolve_token(db, settings, secret)).can_write_fleet
    await accounts.revoke_api_key(db, tenant.id, key.id)
    with pytest.raises(AuthError, match="api key revoked") as caught:
        await auth.resolve_token(db, settings, secret)
    assert caught.value.status == 401
    with pytest.raises(AuthError, match="bad token"):
        await auth.resolve_token(db, settings, "whk_" + "A" * 43)


async def test_api_key_of_a_disabled_tenant_is_forbidden(db: Database, settings: Settings) -> None:
    tenant = await accounts.create_tenant(db, "Acme")
    _, secret = await accounts.create_api_key(db, tenant.id, "gateway", ["read"])
    await accounts.disable_tenant(db, tenant.id)
    with pytest.raises(AuthError, match="account disabled"):
        await auth.resolve_token(db, settings, secret)


def test_fleet_permissions_follow_role_and_key_scopes() -> None:
    assert Principal("t", "admin").can_write_fleet
    assert Principal(None, "platform_admin").can_write_fleet
    assert not Principal("t", "field").can_write_fleet
    assert Principal("t", "field").can_read_fleet and Principal("t", "field").can_ingest_positions
    assert Principal("t", "dispatcher", api_key_id="k", scopes=frozenset({"write"})).can_write_fleet
    assert not Principal("t", "dispatcher", api_key_id="k", scopes=frozenset({"read"})).can_write_fleet
    assert not Principal("t", "field", api_key_id="k", scopes=frozenset({"write"})).can_write_fleet
    assert not Principal("t", "admin", api_key_id="k", scopes=frozenset({"positions"})).can_read_fleet


def test_require_tenant_forbids_other_tenants_but_not_platform_admins() -> None:
    require_tenant(Principal("a", "admin"), "a")
    require_tenant(Principal(None, "platform_admin"), "b")
    with pytest.raises(AuthError) as caught:
        require_tenant(Principal("a", "admin"), "b")
    assert caught.value.status == 403
    with pytest.raises(AuthError):
        require_tenant(Principal("a", "admin", api_key_id="k", scopes=frozenset({"read"})), "b")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rate_limiter_blocks_the_sixth_attempt_until_the_window_passes() -> None:
    clock = FakeClock()
    limiter = LoginRateLimiter(clock=clock)
    for _ in range(5):
        await limiter.check("a@b.co", "10.0.0.1")
        await limiter.record_failure("A@b.co", "10.0.0.1")
        clock.now += 10
    with pytest.raises(RateLimited) as caught:
        await limiter.check("a@b.co", "10.0.0.1")
    assert 0 < caught.value.retry_after <= 300
    assert caught.value.retry_after == 300 - 50
    await limiter.check("a@b.co", "10.0.0.2")  # another address is not blocked
    await limiter.check("other@b.co", "10.0.0.1")  # nor another email
    clock.now += caught.value.retry_after
    await limiter.check("a@b.co", "10.0.0.1")


async def test_successful_login_clears_the_emails_failures() -> None:
    limiter = LoginRateLimiter(clock=FakeClock())
    for ip in ("10.0.0.1", "10.0.0.2"):
        for _ in range(5):
            await limiter.record_failure("a@b.co", ip)
    await limiter.record_success("A@B.CO")
    await limiter.check("a@b.co", "10.0.0.1")
    await limiter.check("a@b.co", "10.0.0.2")
