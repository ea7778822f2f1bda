"""Storage upkeep for `gps_positions`: daily partitions made ahead of time, retention by dropping whole ones.

Three storage modes (see docs/positions.md):

- `timescale`: a hypertable; TimescaleDB makes chunks on demand and its retention policy drops them.
- `partitioned`: plain Postgres, `PARTITION BY RANGE (fix_time)` with one partition per UTC day named
  `gps_positions_pYYYYMMDD`. `run_maintenance` creates the next `DAYS_AHEAD` days and drops every
  partition that lies wholly before the longest plan retention. Rows are never deleted one by one.
- `plain`: the embedded SQLite table; old fixes go by an indexed range delete per tenant.

Shorter plans share the partitions and are cut off at query time (`retention_cutoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from server_stub.db.base import Database, Queries, Tx, time_param, utcnow
from server_stub.db.schema_pg import tenant_rls_sql
from server_stub.db.schema_positions import TIMESCALE_TENANT_VIEW

log = logging.getLogger(__name__)

StorageMode = Literal["timescale", "partitioned", "plain"]

PLAN_RETENTION_DAYS: dict[str, int] = {"hobby": 30, "starter": 90, "pro": 365}
MAX_RETENTION_DAYS = max(PLAN_RETENTION_DAYS.values())
DAYS_AHEAD = 7
MAINTENANCE_INTERVAL_SECONDS = 3600.0
PARENT = "gps_positions"
PARTITION_PREFIX = f"{PARENT}_p"
_PARTITION_NAME = re.compile(rf"^{PARTITION_PREFIX}(\d{{8}})$")
# Serialises partition DDL between server instances (and with migrations' own lock key).
_PARTITION_LOCK_KEY = 0x77686B70  # "whkp"


def retention_days(plan: str | None) -> int:
    """Days of positions a plan keeps; an unknown plan gets the shortest."""
    return PLAN_RETENTION_DAYS.get(plan or "", min(PLAN_RETENTION_DAYS.values()))


def retention_cutoff(plan: str | None, now: datetime | None = None) -> datetime:
    """Fixes older than this are outside the plan's retention: never stored, never answered."""
    return (now or utcnow()) - timedelta(days=retention_days(plan))


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def day_of(when: datetime) -> date:
    return when.astimezone(UTC).date()


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def storage_mode(db: Queries) -> StorageMode:
    """How gps_positions is stored in this database."""
    if db.dialect == "sqlite":
        return "plain"
    kind = await db.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.gps_positions')")
    if kind == "p":
        return "partitioned"
    if await db.fetchval("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL") and (
        await db.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'gps_positions'"
        )
    ):
        return "timescale"
    return "plain"


def positions_relation(mode: StorageMode) -> str:
    """What the app role reads and writes fixes through: TimescaleDB cannot combine row-level
    security with compression, so on a hypertable it is the tenant view (schema_positions)."""
    return TIMESCALE_TENANT_VIEW if mode == "timescale" else PARENT


async def _as_owner(tx: Tx) -> None:
    # Pooled connections act as the app role; partition DDL needs the owner (like migrations).
    await tx.execute("SET LOCAL ROLE NONE")
    # A partition drop or create waits for in-flight ingest; give up (and retry later) rather than
    # stall every writer queued behind our ACCESS EXCLUSIVE request.
    await tx.execute("SET LOCAL lock_timeout = '5s'")
    await tx.execute("SELECT pg_advisory_xact_lock(?)", (_PARTITION_LOCK_KEY,))


async def existing_partitions(q: Queries) -> dict[date, str]:
    """The daily partitions of gps_positions that exist now, by day."""
    rows = await q.fetch(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('public.gps_positions')"
    )
    found: dict[date, str] = {}
    for row in rows:
        match = _PARTITION_NAME.match(row["name"])
        if match:
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = row["name"]
    return found


async def create_partition(tx: Tx, day: date) -> bool:
    """Create the partition for one UTC day in an owner transaction; False when it already existed."""
    name = partition_name(day)
    if await tx.fetchval("SELECT to_regclass(?) IS NOT NULL", (f"public.{name}",)):
        return False
    start, end = _day_start(day), _day_start(day + timedelta(days=1))
    await tx.execute_script(
        f"CREATE TABLE {name} PARTITION OF {PARENT} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}');"
        # Reads through the parent use the parent's policies; these guard direct access to the partition.
        + tenant_rls_sql(name)
    )
    return True


async def ensure_partitions(db: Database, days: Iterable[date]) -> list[str]:
    """Create the missing partitions for these days (idempotent, safe across instances)."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    created: list[str] = []
    async with db.transaction() as tx:
        await _as_owner(tx)
        existing = await existing_partitions(tx)
        for day in wanted:
            if day not in existing and await create_partition(tx, day):
                created.append(partition_name(day))
    if created:
        log.info("created gps_positions partitions %s", ", ".join(created))
    return created


async def drop_expired_partitions(db: Database, now: datetime | None = None,
                                  keep_days: int = MAX_RETENTION_DAYS) -> list[str]:
    """Drop every daily partition that ends at or before `now - keep_days` (whole tables, no DELETE)."""
    cutoff = (now or utcnow()) - timedelta(days=keep_days)
    dropped: list[str] = []
    async with db.transaction() as tx:
        await _as_owner(tx)
        for day, name in sorted((await existing_partitions(tx)).items()):
            if _day_start(day + timedelta(days=1)) <= cutoff:
                await tx.execute(f"DROP TABLE {name}")
                dropped.append(name)
    if dropped:
        log.info("dropped expired gps_positions partitions %s", ", ".join(dropped))
    return dropped


@dataclass
class MaintenanceReport:
    mode: StorageMode
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_rows: int = 0
    deleted_events: int = 0


async def _prune_per_tenant(db: Database, now: datetime, report: MaintenanceReport, *, positions: bool) -> None:
    """Per-tenant range deletes: events everywhere, positions only on the embedded store."""
    for tenant in await db.fetch("SELECT id, plan FROM customers"):
        cutoff = time_param(db, retention_cutoff(tenant["plan"], now))
        async with db.transaction(customer_id=tenant["id"]) as tx:
            report.deleted_events += await tx.execute(
                "DELETE FROM geofence_events WHERE customer_id = ? AND event_time < ?", (tenant["id"], cutoff)
            )
            if positions:
                report.deleted_rows += await tx.execute(
                    "DELETE FROM gps_positions WHERE customer_id = ? AND fix_time < ?", (tenant["id"], cutoff)
                )


async def run_maintenance(db: Database, now: datetime | None = None, days_ahead: int = DAYS_AHEAD) -> MaintenanceReport:
    """One maintenance pass: partitions ahead, expired partitions dropped, expired events pruned."""
    now = now or utcnow()
    report = MaintenanceReport(await storage_mode(db))
    if report.mode == "partitioned":
        today = day_of(now)
        report.created = await ensure_partitions(db, (today + timedelta(days=d) for d in range(-1, days_ahead + 1)))
        report.dropped = await drop_expired_partitions(db, now)
    # timescale: chunks appear on demand and the retention policy's background job drops them.
    await _prune_per_tenant(db, now, report, positions=report.mode == "plain")
    return report


class PartitionKeeper:
    """Runs maintenance now and every hour, and makes a missing day's partition before ingest needs it."""

    def __init__(self, db: Database, *, interval: float = MAINTENANCE_INTERVAL_SECONDS,
                 days_ahead: int = DAYS_AHEAD) -> None:
        self.db = db
        self.interval = interval
        self.days_ahead = days_ahead
        self.mode: StorageMode = "plain"
        self._known: set[date] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.mode = await storage_mode(self.db)
        await self.maintain()
        self._task = asyncio.create_task(self._run())

    async def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        async with self._lock:
            report = await run_maintenance(self.db, now, self.days_ahead)
            self.mode = report.mode
            if self.mode == "partitioned":
                self._known = set(await existing_partitions(self.db))
            return report

    async def ensure_days(self, days: Iterable[date]) -> None:
        """Make sure a partition exists for every day (a no-op outside the partitioned mode)."""
        if self.mode != "partitioned":
            return
        missing = set(days) - self._known
        if not missing:
            return
        async with self._lock:
            missing -= self._known
            if missing:
                await ensure_partitions(self.db, missing)
                self._known |= missing

    def forget(self) -> None:
        """Drop the cache of known partitions (after an insert found one missing)."""
        self._known.clear()

    async def refresh(self) -> None:
        if self.mode == "partitioned":
            self._known = set(await existing_partitions(self.db))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.maintain()
            except Exception:
                log.exception("gps_positions maintenance failed; retrying in %.0f s", self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
