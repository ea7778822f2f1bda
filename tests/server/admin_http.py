"""An httpx browser stand-in for the admin page: signs in, keeps the session cookie, posts forms with CSRF."""

from __future__ import annotations

import asyncio
import html
import re
import secrets
from typing import Any

import httpx

from server_stub import accounts
from server_stub.db import open_database
from server_stub.testing import PASSWORD, LiveServer

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def create_platform_admin(server: LiveServer) -> str:
    """A new platform admin (password testing.PASSWORD); its email."""
    email = f"root-{secrets.token_hex(4)}@platform.example"

    async def make() -> None:
        db = await open_database(server.settings.database_url)
        try:
            await accounts.create_user(db, email, PASSWORD, "platform_admin")
        finally:
            await db.close()

    asyncio.run(make())
    return email


class AdminClient:
    """One browser: its own cookie jar, following nothing automatically so tests see each answer."""

    def __init__(self, server: LiveServer, headers: dict[str, str] | None = None) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=20, headers=headers or {})

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def csrf(self, path: str | None = None) -> str:
        """The CSRF token of this browser's session, read from a form on `path` (default: any page)."""
        response = self.http.get(path or "/admin/health")
        if path is None and response.status_code == 303:  # not signed in: the login form has one too
            response = self.http.get("/admin/login")
        found = CSRF_FIELD.search(response.text)
        assert found, f"no CSRF field on {path} ({response.status_code}): {response.text[:300]}"
        return html.unescape(found.group(1))

    def login(self, email: str, password: str = PASSWORD, **kwargs: Any) -> httpx.Response:
        token = self.csrf("/admin/login")
        return self.http.post("/admin/login", data={"email": email, "password": password, "csrf_token": token,
                                                    "next": "/admin/"}, **kwargs)

    def signed_in(self, email: str, password: str = PASSWORD) -> AdminClient:
        response = self.login(email, password)
        assert response.status_code == 303, f"sign-in of {email} failed: {response.status_code} {response.text[:500]}"
        return self

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool | str = True,
             **kwargs: Any) -> httpx.Response:
        """POST a form; with the session's CSRF token unless csrf=False (or a given token string)."""
        form = dict(data or {})
        if csrf is True:
            form["csrf_token"] = self.csrf()
        elif isinstance(csrf, str):
            form["csrf_token"] = csrf
        return self.http.post(path, data=form, **kwargs)

    def flash(self, response: httpx.Response) -> str:
        """Follow a 303 and return the page's flash messages."""
        assert response.status_code == 303, f"{response.status_code}: {response.text[:500]}"
        page = self.http.get(response.headers["location"])
        messages = re.findall(r'<p class="flash[^"]*" role="status">(.*?)</p>', page.text)
        return " ".join(html.unescape(m) for m in messages)
