"""Admin pages for operations: sync status, compaction, the live map (and its token) and health."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import JSONResponse, Response

from server_stub import accounts
from server_stub.admin.web import Ctx, Refused, finish, page
from server_stub.auth import issue_access_token
from server_stub.db import Database, as_geojson_sql, parse_json
from server_stub.persistence import CompactionNotLossless, DatabasePersistence
from server_stub.rooms import RoomManager
from sync.schema import COLLECTIONS

log = logging.getLogger(__name__)

LIVE_TOKEN_SECONDS = 300  # only checked when the socket opens; the page fetches a new one to reconnect
MAX_PROJECTION_ERRORS = 500


# -- sync status -----------------------------------------------------------------------------


async def _sync_summary(ctx: Ctx, tenant_id: str) -> dict[str, Any]:
    state = ctx.request.app.state
    rooms: RoomManager = state.rooms
    persistence: DatabasePersistence = state.persistence
    info = next((i for i in rooms.info() if i.tenant_id == tenant_id), None)
    async with ctx.db.transaction(customer_id=tenant_id) as tx:
        last_update = await tx.fetchval("SELECT max(received_at) FROM crdt_updates WHERE customer_id = ?",
                                        (tenant_id,))
        errors = 0
        for collection in COLLECTIONS:
            errors += int(await tx.fetchval(
                f"SELECT count(*) FROM {collection} WHERE customer_id = ? AND projection_error IS NOT NULL",
                (tenant_id,)))  # fmt: skip
    compaction = await persistence.last_compaction(tenant_id)
    return {
        "loaded": info is not None,
        "connections": info.connections if info else 0,
        "commits": info.commits if info else 0,
        "committed_seq": info.committed_seq if info else None,
        # The log's newest row; after a compaction emptied it, the room's own clock (if loaded).
        "last_update": last_update if last_update is not None else (info.last_update_at if info else None),
        "log_size": await persistence.log_size(tenant_id),
        "compaction": compaction,
        "head": await persistence.head(tenant_id),
        "watermark": await state.projector.watermark(tenant_id),
        "error_count": errors,
        # Set while the tenant's room cannot load or its projection fails; retried in the background.
        "fault": rooms.faults.get(tenant_id),
    }


async def projection_errors(db: Database, tenant_id: str) -> list[dict[str, Any]]:
    """Every projected record that breaks a rule: collection, id, name and the reason."""
    found: list[dict[str, Any]] = []
    # Row-level security on Postgres: tenant rows are only visible inside the tenant's transaction.
    async with db.transaction(customer_id=tenant_id) as tx:
        for collection in COLLECTIONS:
            rows = await tx.fetch(
                f"SELECT id, name, projection_error, projected_at FROM {collection}"
                " WHERE customer_id = ? AND projection_error IS NOT NULL ORDER BY id LIMIT ?",
                (tenant_id, MAX_PROJECTION_ERRORS),
            )
            found.extend({"collection": collection, **row} for row in rows)
    return found


@page(platform_only=True)
async def sync_overview(ctx: Ctx) -> Response:
    rows = []
    for tenant in await accounts.list_tenants(ctx.db):
        rows.append({"tenant": tenant, **await _sync_summary(ctx, tenant.id)})
    rooms: RoomManager = ctx.request.app.state.rooms
    infos = rooms.info()
    return ctx.render("sync_overview.html", rows=rows, rooms_loaded=len(infos),
                      connections=sum(i.connections for i in infos), failing=len(rooms.faults))


@page()
async def tenant_sync(ctx: Ctx) -> Response:
    summary = await _sync_summary(ctx, ctx.tenant_id)
    errors = await projection_errors(ctx.db, ctx.tenant_id)
    return ctx.render("sync.html", s=summary, errors=errors)


@page(platform_only=True)
async def compact(ctx: Ctx) -> Response:
    back = f"/tenants/{ctx.tenant_id}/sync"
    persistence: DatabasePersistence = ctx.request.app.state.persistence
    try:
        report = await persistence.compact(ctx.tenant_id)
    except CompactionNotLossless as exc:
        log.error("compaction refused: %s", exc)
        return ctx.redirect(back, "error", f"Compaction refused, nothing was deleted: {exc}")
    if not report.folded_rows:
        return ctx.redirect(back, "info", "Nothing to compact: the update log is empty.")
    return ctx.redirect(back, "ok", f"Compacted {report.folded_rows} updates up to #{report.upto_seq} into a "
                        f"{report.snapshot_bytes}-byte snapshot.")


# -- live map --------------------------------------------------------------------------------


async def map_data(ctx: Ctx) -> dict[str, Any]:
    tenant_id = ctx.tenant_id
    state = ctx.request.app.state
    async with ctx.db.transaction(customer_id=tenant_id) as tx:
        vehicles = await tx.fetch(
            "SELECT id, name, plate, device_id, status FROM vehicles WHERE customer_id = ? ORDER BY name, id",
            (tenant_id,),
        )
        fences = await tx.fetch(
            f"SELECT id, name, kind, active, data, projection_error, {as_geojson_sql(tx, 'geometry')} AS geojson"
            " FROM geofences WHERE customer_id = ? AND geometry IS NOT NULL ORDER BY name, id",
            (tenant_id,),
        )
    positions_service = getattr(state, "positions", None)
    latest = await positions_service.latest(tenant_id) if positions_service is not None else []
    features = []
    for fence in fences:
        data = parse_json(fence["data"]) or {}
        features.append({
            "type": "Feature", "id": fence["id"], "geometry": json.loads(fence["geojson"]),
            "properties": {"name": fence["name"], "kind": fence["kind"] or "other", "active": fence["active"],
                           "speed_limit_kph": data.get("speed_limit_kph"), "invalid": fence["projection_error"]},
        })  # fmt: skip
    return {
        "tenant": tenant_id,
        "positions_available": positions_service is not None,
        "vehicles": vehicles,
        "positions": latest,
        "geofences": {"type": "FeatureCollection", "features": features},
    }


@page()
async def live_map(ctx: Ctx) -> Response:
    data = await map_data(ctx)
    return ctx.render("map.html", data=data)


@page()
async def live_token(ctx: Ctx) -> Response:
    """POST (CSRF header): a short-lived access token for the admin's own user, for `WS /api/v1/live`."""
    assert ctx.user is not None
    tenant_id = ctx.field("tenant") or ctx.request.query_params.get("tenant") or ctx.user.customer_id
    if not tenant_id:
        raise Refused(400, "Tenant required", "Name the tenant whose live positions you want.")
    if not ctx.platform and tenant_id != ctx.user.customer_id:
        raise Refused(403, "Not allowed", "You can only watch your own tenant.")
    token, lifetime = issue_access_token(ctx.settings, ctx.user, ttl=LIVE_TOKEN_SECONDS)
    path = "/api/v1/live" + (f"?tenant={tenant_id}" if ctx.platform else "")
    return finish(ctx, JSONResponse({"token": token, "expires_in": lifetime, "path": path}))


# -- health ----------------------------------------------------------------------------------


@page()
async def health(ctx: Ctx) -> Response:
    state = ctx.request.app.state
    database: dict[str, Any] = {"status": "ok", "dialect": ctx.db.dialect}
    extensions: dict[str, str | None] = {}
    migrations: list[dict[str, Any]] = []
    try:
        await ctx.db.fetchval("SELECT 1")
        extensions = await ctx.db.extensions()
        migrations = await ctx.db.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    except Exception as exc:
        database = {"status": f"unreachable: {exc}", "dialect": ctx.db.dialect}
    fanout = getattr(state, "fanout", None)
    redis = await fanout.health() if fanout is not None else "not configured"
    rooms: RoomManager = state.rooms
    infos = rooms.info()
    if ctx.db.dialect == "postgres":
        extensions = {"postgis": extensions.get("postgis"), "timescaledb": extensions.get("timescaledb"), **extensions}
    return ctx.render("health.html", database=database, extensions=extensions, redis=redis,
                      migrations=migrations, rooms_loaded=len(infos), connections=sum(i.connections for i in infos))
