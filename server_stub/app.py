"""The Starlette application: wiring of database, rooms, projection and every route."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

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

SHUTDOWN_STEP_SECONDS = 2.0  # per step of the lifespan shutdown; uvicorn itself waits 3 s for requests (cli.py)


async def health(request: Request) -> Response:
    state = request.app.state
    try:
        await state.db.fetchval("SELECT 1")
        extensions = await state.db.extensions()
    except Exception as exc:
        return JSONResponse({"status": "error", "database": f"unreachable: {exc}", "version": __version__},
                            status_code=503)
    redis = await state.fanout.health()  # "ok", "unreachable" or "not configured"
    # A count only: /health needs no login, and tenant ids are not for anonymous callers.
    failing = len(state.rooms.faults)
    return JSONResponse({
        # Without Redis, or with one tenant failing, an instance still serves: degraded, not down.
        "status": "degraded" if redis == UNREACHABLE or failing else "ok",
        "database": {"status": "ok", "dialect": state.db.dialect},
        "extensions": extensions,
        "redis": redis,
        "tenants": {"failing": failing},
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
        db = await open_database(settings.database_url, timescale=settings.timescale)
        try:
            if run_migrations:
                await migrate(db)
            persistence = DatabasePersistence(db)
            fanout = create_fanout(settings.redis_url)
            app.state.fanout = fanout
            rooms = RoomManager(persistence, max_message_bytes=settings.max_message_bytes,
                                idle_seconds=settings.room_idle_seconds, fanout=fanout, quota=settings.write_quota)
            projector = Projector(db, rooms)
            rooms.on_applied(projector.on_applied)
            app.state.settings = settings
            app.state.db = db
            app.state.persistence = persistence
            app.state.rooms = rooms
            app.state.projector = projector
            app.state.rate_limiter = LoginRateLimiter.for_settings(settings, fanout)  # Redis-shared when configured
            await projector.start()
            await rooms.start()
            await fanout.start()  # never fails for an unreachable Redis: it reconnects in the background
            await _catch_up_projection(db, rooms, projector)
            await positions_api.start(app.state, db)  # position ingest, partition upkeep, live push
            yield
        finally:
            # Each step is bounded: SIGTERM must end the server even when the database hangs.
            if hasattr(app.state, "positions"):
                await _bounded("positions", app.state.positions.close())
            if hasattr(app.state, "rooms"):
                # Rooms get their queued writes committed if the database answers within the step.
                await _bounded("rooms", app.state.rooms.close(SHUTDOWN_STEP_SECONDS), 2 * SHUTDOWN_STEP_SECONDS)
                await _bounded("fan-out", app.state.fanout.close())
                await _bounded("projection", app.state.projector.close())
            await _bounded("database", db.close())

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

    Start-up never depends on every tenant: one that fails is noted in `rooms.faults` and
    repaired in the background (Projector.catch_up_tenant), and the server starts regardless."""
    try:
        tenants = [row["id"] for row in await db.fetch("SELECT id FROM customers")]
    except Exception:
        log.exception("could not list tenants to catch projection up; rooms catch up as they load")
        return
    for tenant_id in tenants:
        if await projector.catch_up_tenant(tenant_id):
            log.info("re-projected tenant %s after restart", tenant_id)
    if rooms.faults:
        log.error("started with %d failing tenant(s); they are retried in the background", len(rooms.faults))


async def _bounded(what: str, step: Awaitable[None], seconds: float = SHUTDOWN_STEP_SECONDS) -> None:
    """Run one shutdown step for at most `seconds`; log (never raise) when it fails or hangs."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.error("shutdown: closing %s took over %.0f s; abandoned", what, seconds)
    except Exception:
        log.exception("shutdown: closing %s failed", what)
