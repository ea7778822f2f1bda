"""Admin pages for accounts: sign-in, tenants, users, API keys and vehicle devices."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response

from server_stub import accounts
from server_stub import devices as device_ids
from server_stub.accounts import AccountError, User
from server_stub.admin import session as sessions
from server_stub.admin.web import PREFIX, Ctx, Refused, page, revoked, safe_next, session_user
from server_stub.auth import RateLimited
from server_stub.http_auth import client_ip
from server_stub.revocation import credentials_changed
from sync.services import RecordNotFound, update_record
from sync.validation import ValidationError

PROJECTION_WAIT_SECONDS = 10.0


# -- sign-in ---------------------------------------------------------------------------------


@page(signed_in=False)
async def login_form(ctx: Ctx) -> Response:
    ctx.user = await session_user(ctx.db, ctx.settings, ctx.session)
    if ctx.user is not None:
        return ctx.redirect("/")
    return ctx.render("login.html", next=safe_next(ctx.request.query_params.get("next")), email="")


@page(signed_in=False)
async def login(ctx: Ctx) -> Response:
    email, password = ctx.field("email"), ctx.form.get("password", "")
    target = safe_next(ctx.field("next"))
    limiter = ctx.request.app.state.rate_limiter
    ip = client_ip(ctx.request)

    def again(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        ctx.session.flash("error", message)
        return ctx.render("login.html", status=status, headers=headers, next=target, email=email)

    if not email or not password:
        return again(400, "Enter your email and password.")
    try:
        await limiter.check(email, ip)
    except RateLimited as exc:
        raise Refused(429, "Too many attempts", str(exc), {"Retry-After": str(exc.retry_after)}) from None
    try:
        user = await accounts.authenticate(ctx.db, email, password)
    except accounts.InvalidCredentials:
        await limiter.record_failure(email, ip)
        return again(401, "Wrong email or password.")
    except accounts.AccountDisabled as exc:
        raise Refused(403, "Account disabled", str(exc)) from None
    await limiter.record_success(email)
    if user.role not in ("platform_admin", "admin"):
        raise Refused(403, "Not allowed", "Only platform and tenant administrators can use the admin page. "
                      "Dispatchers and field staff use the desktop application.")
    row = await ctx.db.fetchone("SELECT password_hash FROM users WHERE id = ?", (user.id,))
    assert row is not None
    # A fresh session (new id, new CSRF token) on sign-in: a planted session id is worthless.
    ctx.session = sessions.Session(user_id=user.id,
                                   password=sessions.password_fingerprint(ctx.settings, row["password_hash"]))
    return ctx.redirect(target.removeprefix(PREFIX) or "/")


@page(signed_in=False)
async def logout(ctx: Ctx) -> Response:
    revoked(ctx.request).revoke(ctx.session)
    ctx.session = sessions.Session()
    ctx.session.flash("info", "You are signed out.")
    return ctx.redirect("/login")


@page()
async def home(ctx: Ctx) -> Response:
    assert ctx.user is not None
    if ctx.platform:
        return ctx.redirect("/tenants")
    return ctx.redirect(f"/tenants/{ctx.user.customer_id}/users")


# -- tenants (platform admins) ---------------------------------------------------------------


@page(platform_only=True)
async def tenants(ctx: Ctx) -> Response:
    listed = await accounts.list_tenants(ctx.db)
    return ctx.render("tenants.html", tenants=listed, plans=accounts.PLANS)


@page(platform_only=True)
async def create_tenant(ctx: Ctx) -> Response:
    try:
        tenant = await accounts.create_tenant(ctx.db, ctx.field("name"), ctx.field("plan", "hobby"))
    except AccountError as exc:
        return ctx.redirect("/tenants", "error", str(exc))
    return ctx.redirect(f"/tenants/{tenant.id}/users", "ok", f"Tenant {tenant.name} created. Add its first admin.")


@page(platform_only=True)
async def set_plan(ctx: Ctx) -> Response:
    try:
        tenant = await accounts.set_plan(ctx.db, ctx.tenant_id, ctx.field("plan"))
    except AccountError as exc:
        return ctx.redirect("/tenants", "error", str(exc))
    return ctx.redirect("/tenants", "ok", f"{tenant.name} is now on the {tenant.plan} plan.")


@page(platform_only=True)
async def disable_tenant(ctx: Ctx) -> Response:
    disabled = ctx.field("disabled", "1") != "0"
    tenant = await accounts.disable_tenant(ctx.db, ctx.tenant_id, disabled)
    await credentials_changed(ctx.request.app.state, tenant_id=tenant.id)  # its open sockets close now
    state = "disabled: its users can no longer sign in" if disabled else "enabled again"
    return ctx.redirect("/tenants", "ok", f"{tenant.name} is {state}.")


@page()
async def tenant_home(ctx: Ctx) -> Response:
    return ctx.redirect(f"/tenants/{ctx.tenant_id}/users")


# -- users -----------------------------------------------------------------------------------


@page()
async def users(ctx: Ctx) -> Response:
    listed = await accounts.list_users(ctx.db, ctx.tenant_id)
    return ctx.render("users.html", users=listed, roles=accounts.TENANT_ROLES)


async def _tenant_user(ctx: Ctx) -> User:
    """The user the path names, which must belong to the path's tenant (404 otherwise)."""
    try:
        target = await accounts.get_user(ctx.db, str(ctx.request.path_params["user_id"]))
    except accounts.NotFound:
        target = None
    if target is None or target.customer_id != ctx.tenant_id:
        raise Refused(404, "Not found", "There is no such user in this tenant.")
    return target


def _not_yourself(ctx: Ctx, target: User, what: str) -> None:
    assert ctx.user is not None
    if target.id == ctx.user.id:
        raise Refused(409, "Not on yourself", f"You cannot {what} your own account here; ask another administrator.")


@page()
async def create_user(ctx: Ctx) -> Response:
    back = f"/tenants/{ctx.tenant_id}/users"
    role = ctx.field("role", "dispatcher")
    if role not in accounts.TENANT_ROLES:
        return ctx.redirect(back, "error", f"Choose one of the roles {', '.join(accounts.TENANT_ROLES)}.")
    try:
        user = await accounts.create_user(ctx.db, ctx.field("email"), ctx.form.get("password", ""), role, ctx.tenant_id)
    except AccountError as exc:
        return ctx.redirect(back, "error", str(exc))
    return ctx.redirect(back, "ok", f"User {user.email} ({user.role}) created.")


@page()
async def set_role(ctx: Ctx) -> Response:
    back = f"/tenants/{ctx.tenant_id}/users"
    target = await _tenant_user(ctx)
    _not_yourself(ctx, target, "change the role of")
    role = ctx.field("role")
    if role not in accounts.TENANT_ROLES:
        return ctx.redirect(back, "error", f"Choose one of the roles {', '.join(accounts.TENANT_ROLES)}.")
    user = await accounts.set_role(ctx.db, target.id, role)
    await credentials_changed(ctx.request.app.state, user_id=user.id)  # a demoted writer's sockets turn read-only
    return ctx.redirect(back, "ok", f"{user.email} is now {user.role}.")


@page()
async def reset_password(ctx: Ctx) -> Response:
    back = f"/tenants/{ctx.tenant_id}/users"
    target = await _tenant_user(ctx)
    try:
        await accounts.reset_password(ctx.db, target.id, ctx.form.get("password", ""))
    except AccountError as exc:
        return ctx.redirect(back, "error", str(exc))
    await credentials_changed(ctx.request.app.state, user_id=target.id)  # their open sockets close now
    return ctx.redirect(back, "ok", f"The password of {target.email} was reset; all their sessions have ended.")


@page()
async def disable_user(ctx: Ctx) -> Response:
    back = f"/tenants/{ctx.tenant_id}/users"
    target = await _tenant_user(ctx)
    _not_yourself(ctx, target, "disable")
    disabled = ctx.field("disabled", "1") != "0"
    user = await accounts.disable_user(ctx.db, target.id, disabled)
    await credentials_changed(ctx.request.app.state, user_id=user.id)  # their open sockets close now
    return ctx.redirect(back, "ok", f"{user.email} is {'disabled' if disabled else 'enabled again'}.")


# -- API keys --------------------------------------------------------------------------------


@page()
async def api_keys(ctx: Ctx) -> Response:
    keys = await accounts.list_api_keys(ctx.db, ctx.tenant_id)
    return ctx.render("api_keys.html", keys=keys, scopes=accounts.SCOPES, roles=accounts.TENANT_ROLES)


@page()
async def create_api_key(ctx: Ctx) -> Response:
    scopes = [s for s in accounts.SCOPES if ctx.form.get(f"scope_{s}")]
    try:
        key, secret = await accounts.create_api_key(ctx.db, ctx.tenant_id, ctx.field("name"), scopes,
                                                    ctx.field("role", "dispatcher"))
    except AccountError as exc:
        return ctx.redirect(f"/tenants/{ctx.tenant_id}/api-keys", "error", str(exc))
    # Rendered straight into this response (never stored, never redirected): shown exactly once.
    return ctx.render("api_key_created.html", key=key, secret=secret)


@page()
async def revoke_api_key(ctx: Ctx) -> Response:
    back = f"/tenants/{ctx.tenant_id}/api-keys"
    try:
        key = await accounts.revoke_api_key(ctx.db, ctx.tenant_id, str(ctx.request.path_params["key_id"]))
    except accounts.NotFound:
        raise Refused(404, "Not found", "There is no such API key in this tenant.") from None
    await credentials_changed(ctx.request.app.state, api_key_id=key.id)  # its open sockets close now
    return ctx.redirect(back, "ok", f"API key {key.name} ({key.prefix}…) is revoked.")


# -- devices (vehicle device ids) ------------------------------------------------------------


async def vehicle_rows(ctx: Ctx) -> list[dict[str, Any]]:
    async with ctx.db.transaction(customer_id=ctx.tenant_id) as tx:
        return await tx.fetch(
            "SELECT id, name, plate, device_id, status, projection_error FROM vehicles WHERE customer_id = ?"
            " ORDER BY name, id", (ctx.tenant_id,),
        )  # fmt: skip


@page()
async def devices(ctx: Ctx) -> Response:
    return ctx.render("devices.html", vehicles=await vehicle_rows(ctx))


@page()
async def set_device(ctx: Ctx) -> Response:
    assert ctx.user is not None
    back = f"/tenants/{ctx.tenant_id}/devices"
    vehicle_id = str(ctx.request.path_params["vehicle_id"])
    device_id = ctx.field("device_id") or None
    state = ctx.request.app.state
    try:
        await device_ids.claim(ctx.db, ctx.tenant_id, device_id)  # unique across tenants
    except device_ids.DeviceTaken as exc:
        return ctx.redirect(back, "error", str(exc))
    # Through the tenant document, exactly like a REST write: every client sees the change.
    room = await state.rooms.get(ctx.tenant_id)
    try:
        await room.transact(lambda doc: update_record(doc, "vehicles", vehicle_id, {"device_id": device_id}),
                            user_id=ctx.user.id)
    except RecordNotFound:
        raise Refused(404, "Not found", "There is no such vehicle in this tenant.") from None
    except ValidationError as exc:
        return ctx.redirect(back, "error", "; ".join(f"{p.field}: {p.reason}" for p in exc.problems))
    await asyncio.wait_for(state.projector.flush(), PROJECTION_WAIT_SECONDS)
    shown = device_id or "nothing"
    return ctx.redirect(back, "ok", f"The vehicle's device id is now {shown}.")
