"""The Starlette application: wiring of database, rooms, projection and every route."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from server_stub import __version__, admin, openapi, positions_api, rest
from server_stub.auth import LoginRateLimiter
from server_stub.config import Settings
from server_stub.db import open_database
from server_stub.db.base import Database
from server_stub.db.migrations import migrate
from server_stub.fanout import UNREACHABLE, create_fanout
from server_stub.http_auth import token_endpoint
from server_stub.persistence import DatabasePersistence
from server_stub.projection import Projector
from server_stub.rooms import RoomManager
from server_stub.sync_route import sync_endpoint

log = logging.getLogger(__name__)


async def health(request: Request) -> Response:
    state = request.app.state
    try:
        await state.db.fetchval("SELECT 1")
        extensions = await state.db.extensions()
    except Exception as exc:
        return JSONResponse({"status": "error", "database": f"unreachable: {exc}", "version": __version__},
                            status_code=503)
    redis = await state.fanout.health()  # "ok", "unreachable" or "not configured"
    return JSONResponse({
        # Without Redis an instance still serves its own clients: degraded, not down.
        "status": "degraded" if redis == UNREACHABLE else "ok",
        "database": {"status": "ok", "dialect": state.db.dialect},
        "extensions": extensions,
        "redis": redis,
        "version": __version__,
    })


async def metrics(request: Request) -> Response:
    rooms: RoomManager = request.app.state.rooms
    infos = rooms.info()
    lines = [
        "# HELP webhost_rooms_loaded Sync rooms held in memory.",
        "# TYPE webhost_rooms_loaded gauge",
        f"webhost_rooms_loaded {len(infos)}",
        "# HELP webhost_sync_connections Open sync sockets.",
        "# TYPE webhost_sync_connections gauge",
        f"webhost_sync_connections {sum(i.connections for i in infos)}",
        "# HELP webhost_room_commits_total Group commits of CRDT updates in the rooms now loaded.",
        "# TYPE webhost_room_commits_total counter",
    ]
    # No per-tenant labels: /metrics needs no login, and tenant ids are not for anonymous scrapers.
    lines.append(f"webhost_room_commits_total {sum(i.commits for i in infos)}")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi.document())


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = await open_database(settings.database_url)
        try:
            if run_migrations:
                await migrate(db)
            persistence = DatabasePersistence(db)
            fanout = create_fanout(settings.redis_url)
            app.state.fanout = fanout
            rooms = RoomManager(persistence, max_message_bytes=settings.max_message_bytes,
                                idle_seconds=settings.room_idle_seconds, fanout=fanout)
            projector = Projector(db)
            rooms.on_applied(projector.on_applied)
            app.state.settings = settings
            app.state.db = db
            app.state.persistence = persistence
            app.state.rooms = rooms
            app.state.projector = projector
            app.state.rate_limiter = LoginRateLimiter()
            await projector.start()
            await rooms.start()
            await fanout.start()  # never fails for an unreachable Redis: it reconnects in the background
            await _catch_up_projection(db, rooms, projector)
            await positions_api.start(app.state, db)  # position ingest, partition upkeep, live push
            yield
        finally:
            if hasattr(app.state, "positions"):
                await app.state.positions.close()
            if hasattr(app.state, "rooms"):
                await app.state.rooms.close()
                await app.state.fanout.close()
                await app.state.projector.close()
            await db.close()

    routes = [
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/api/openapi.json", openapi_json),
        Route("/api/v1/auth/token", token_endpoint, methods=["POST"]),
        WebSocketRoute("/sync/{tenant_id}", sync_endpoint),
        *positions_api.routes,
        *admin.routes,
        *rest.routes,  # last: its /api/v1/{collection} pattern would shadow the specific routes
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def _catch_up_projection(db: Database, rooms: RoomManager, projector: Projector) -> None:
    """Re-project tenants whose tables lag their update log (a crash between commit and projection).

    Each tenant is checked inside its own transaction: row-level security hides the log otherwise."""
    for tenant in await db.fetch("SELECT id FROM customers"):
        tenant_id = tenant["id"]
        head = await rooms.persistence.head(tenant_id)
        if head is not None and await projector.watermark(tenant_id) < head:
            await projector.catch_up(await rooms.get(tenant_id))
            log.info("re-projected tenant %s after restart", tenant_id)
