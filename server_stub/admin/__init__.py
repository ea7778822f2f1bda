"""The admin web page at `/admin`: server-rendered (Jinja2), every asset served by this server.

See docs/admin.md. `routes` is one Mount for the app's route list.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server_stub.admin import pages, status

STATIC = Path(__file__).parent / "static"


def leaflet_dir() -> Path:
    """Where the bundled Leaflet dist files are: WEBHOST_LEAFLET_DIR, the source tree's
    `resources/leaflet`, or `<prefix>/share/webhost-fleet/leaflet` (the container image)."""
    source_tree = Path(__file__).resolve().parents[2] / "resources" / "leaflet"
    candidates = [source_tree, Path(sys.prefix) / "share" / "webhost-fleet" / "leaflet"]
    if os.environ.get("WEBHOST_LEAFLET_DIR"):
        candidates.insert(0, Path(os.environ["WEBHOST_LEAFLET_DIR"]))
    for candidate in candidates:
        if (candidate / "leaflet.js").is_file():
            return candidate
    return source_tree


_admin_routes: list[BaseRoute] = [
    Route("/", pages.home, methods=["GET"]),
    Route("/login", pages.login_form, methods=["GET"]),
    Route("/login", pages.login, methods=["POST"]),
    Route("/logout", pages.logout, methods=["POST"]),
    Route("/tenants", pages.tenants, methods=["GET"]),
    Route("/tenants", pages.create_tenant, methods=["POST"]),
    Route("/tenants/{tenant_id}", pages.tenant_home, methods=["GET"]),
    Route("/tenants/{tenant_id}/plan", pages.set_plan, methods=["POST"]),
    Route("/tenants/{tenant_id}/disable", pages.disable_tenant, methods=["POST"]),
    Route("/tenants/{tenant_id}/users", pages.users, methods=["GET"]),
    Route("/tenants/{tenant_id}/users", pages.create_user, methods=["POST"]),
    Route("/tenants/{tenant_id}/users/{user_id}/role", pages.set_role, methods=["POST"]),
    Route("/tenants/{tenant_id}/users/{user_id}/password", pages.reset_password, methods=["POST"]),
    Route("/tenants/{tenant_id}/users/{user_id}/disable", pages.disable_user, methods=["POST"]),
    Route("/tenants/{tenant_id}/api-keys", pages.api_keys, methods=["GET"]),
    Route("/tenants/{tenant_id}/api-keys", pages.create_api_key, methods=["POST"]),
    Route("/tenants/{tenant_id}/api-keys/{key_id}/revoke", pages.revoke_api_key, methods=["POST"]),
    Route("/tenants/{tenant_id}/devices", pages.devices, methods=["GET"]),
    Route("/tenants/{tenant_id}/devices/{vehicle_id}", pages.set_device, methods=["POST"]),
    Route("/tenants/{tenant_id}/sync", status.tenant_sync, methods=["GET"]),
    Route("/tenants/{tenant_id}/sync/compact", status.compact, methods=["POST"]),
    Route("/tenants/{tenant_id}/map", status.live_map, methods=["GET"]),
    Route("/sync", status.sync_overview, methods=["GET"]),
    Route("/health", status.health, methods=["GET"]),
    Route("/live-token", status.live_token, methods=["POST"]),
    Mount("/static", StaticFiles(directory=STATIC), name="admin-static"),
    Mount("/leaflet", StaticFiles(directory=leaflet_dir(), check_dir=False), name="admin-leaflet"),
]

routes: list[BaseRoute] = [Mount("/admin", routes=_admin_routes)]

__all__ = ["leaflet_dir", "routes"]
