"""The admin page's request plumbing: who is signed in, CSRF checks, tenant access, rendering.

Every admin handler is wrapped by `page()`, which loads the session, re-reads the user from the
database, checks the CSRF token of every POST, refuses roles other than platform_admin and
admin, and resolves the `{tenant_id}` of the path: a tenant admin may only ever name their own
tenant (anything else is a 403), a platform admin may name any.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server_stub import __version__, accounts
from server_stub.accounts import Tenant, User
from server_stub.admin import session as sessions
from server_stub.admin.session import Session
from server_stub.config import Settings
from server_stub.db import Database, parse_time

PREFIX = "/admin"
ADMIN_ROLES = ("platform_admin", "admin")
TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_FIELDS = 50

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: Any) -> str:
    """A stored time (datetime, unix seconds or ISO text) for people: `2024-05-01 08:00:00 UTC`."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    moment = parse_time(value)
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                        trim_blocks=True, lstrip_blocks=True)
templates.filters["when"] = _when


class Refused(Exception):
    """Answer with an error page (403 by default) instead of running the handler."""

    def __init__(self, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.headers = status, title, message, headers or {}


@dataclass
class Ctx:
    """One admin request: the session, the signed-in user, the tenant of the path and the form."""

    request: Request
    session: Session
    user: User | None = None
    tenant: Tenant | None = None
    form: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        db: Database = self.request.app.state.db
        return db

    @property
    def settings(self) -> Settings:
        settings: Settings = self.request.app.state.settings
        return settings

    @property
    def platform(self) -> bool:
        return self.user is not None and self.user.role == "platform_admin"

    @property
    def tenant_id(self) -> str:
        if self.tenant is None:
            raise Refused(404, "Not found", "This page belongs to a tenant.")
        return self.tenant.id

    def field(self, name: str, default: str = "") -> str:
        return self.form.get(name, default).strip()

    def render(self, name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> Response:
        html = templates.get_template(name).render(
            ctx=self, user=self.user, tenant=self.tenant, platform=self.platform, csrf=self.session.csrf,
            flashes=self.session.take_flashes(), version=__version__, prefix=PREFIX, **context,
        )  # fmt: skip
        return finish(self, HTMLResponse(html, status_code=status, headers=headers))

    def redirect(self, path: str, kind: str | None = None, message: str | None = None) -> Response:
        if kind and message:
            self.session.flash(kind, message)
        return finish(self, RedirectResponse(PREFIX + path, status_code=303))


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def finish(ctx: Ctx, response: Response) -> Response:
    """Security headers on every admin answer, and the session cookie when it changed."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if ctx.session.dirty:
        response.set_cookie(
            sessions.COOKIE, sessions.encode(ctx.settings, ctx.session), max_age=sessions.SESSION_SECONDS,
            path=sessions.COOKIE_PATH, secure=is_https(ctx.request), httponly=True, samesite="lax",
        )  # fmt: skip
        ctx.session.dirty = False
    return response


def revoked(request: Request) -> sessions.RevokedSessions:
    state = request.app.state
    store = getattr(state, "admin_revoked_sessions", None)
    if store is None:
        store = state.admin_revoked_sessions = sessions.RevokedSessions()
    return store


def load_session(request: Request) -> Session:
    raw = request.cookies.get(sessions.COOKIE)
    found = sessions.decode(request.app.state.settings, raw) if raw else None
    if found is None or found.sid in revoked(request):
        return Session()
    return found


async def session_user(db: Database, settings: Settings, session: Session) -> User | None:
    """The session's user while they may still act: not disabled, same password as at sign-in."""
    if session.user_id is None:
        return None
    row = await db.fetchone(
        "SELECT u.id, u.customer_id, u.email, u.role, u.disabled, u.created_at, u.password_hash,"
        " c.disabled AS tenant_disabled FROM users u LEFT JOIN customers c ON c.id = u.customer_id WHERE u.id = ?",
        (session.user_id,),
    )
    if row is None or row["disabled"] or row["tenant_disabled"]:
        return None
    if session.password != sessions.password_fingerprint(settings, row["password_hash"]):
        return None
    created = parse_time(row["created_at"])
    assert created is not None
    return User(row["id"], row["customer_id"], row["email"], row["role"], False, created)


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {}
    async with request.form(max_files=0, max_fields=MAX_FORM_FIELDS) as form:
        return {key: value for key, value in form.items() if isinstance(value, str)}


def error_page(ctx: Ctx, exc: Refused) -> Response:
    return ctx.render("error.html", status=exc.status, headers=exc.headers, title=exc.title, message=exc.message)


Handler = Callable[[Ctx], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def page(*, signed_in: bool = True, platform_only: bool = False) -> Callable[[Handler], Endpoint]:
    """Wrap an admin handler: session, user, CSRF (every POST), role and tenant checks."""

    def wrap(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            ctx = Ctx(request, load_session(request))
            try:
                if request.method == "POST":
                    ctx.form = await _form(request)
                    presented = request.headers.get("x-csrf-token") or ctx.form.get("csrf_token")
                    if not sessions.csrf_matches(ctx.session, presented):
                        raise Refused(403, "Form expired or forged",
                                      "The form's security token is missing or wrong. Reload the page and try again.")
                if signed_in:
                    ctx.user = await session_user(ctx.db, ctx.settings, ctx.session)
                    if ctx.user is None:
                        if ctx.session.user_id is not None:  # ended: disabled, password changed or expired
                            ctx.session = sessions.Session()
                        if request.method == "GET":
                            return ctx.redirect("/login?next=" + quote(request.url.path, safe="/"))
                        raise Refused(401, "Signed out", "Your session has ended. Sign in again.")
                    if ctx.user.role not in ADMIN_ROLES:
                        raise Refused(403, "Not allowed", "Only platform and tenant administrators can use this page.")
                    if platform_only and not ctx.platform:
                        raise Refused(403, "Not allowed", "Only platform administrators can do this.")
                    tenant_id = request.path_params.get("tenant_id")
                    if tenant_id is not None:
                        ctx.tenant = await _tenant_for(ctx, str(tenant_id))
                return await handler(ctx)
            except Refused as exc:
                return error_page(ctx, exc)

        return endpoint

    return wrap


async def _tenant_for(ctx: Ctx, tenant_id: str) -> Tenant:
    """The tenant a path names, if this user may act on it (tenant admins: only their own)."""
    assert ctx.user is not None
    if not ctx.platform and ctx.user.customer_id != tenant_id:
        raise Refused(403, "Not allowed", "You can only manage your own tenant.")
    try:
        return await accounts.get_tenant(ctx.db, tenant_id)
    except accounts.NotFound:
        raise Refused(404, "Not found", "There is no such tenant.") from None


def safe_next(path: str | None) -> str:
    """Where to go after sign-in: only a path inside the admin page (never another site)."""
    if path and path.startswith(PREFIX + "/") and not path.startswith("//") and "\\" not in path and ".." not in path:
        return path
    return PREFIX + "/"
