"""Versioned, transactional schema migrations for both dialects, recorded in `schema_migrations`.

To add one, append `Migration(version, name, {"postgres": sql_or_callable, "sqlite": sql_or_callable})`
to MIGRATIONS (or call `register`); a callable receives the migration's Tx.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import NamedTuple

from server_stub.db import schema_pg, schema_positions, schema_security, schema_sqlite
from server_stub.db.base import Database, DatabaseError, Dialect, Tx, time_param, utcnow
from server_stub.db.schema_pg import ExtensionMissing, tenant_rls_sql

Step = str | Callable[[Tx], Awaitable[None]]

# Serialises migrations of several server instances starting at once against one Postgres.
_PG_LOCK_KEY = 0x77686B66  # "whkf"

_BOOKKEEPING: dict[Dialect, str] = {
    "postgres": """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()
        )""",
    "sqlite": f"""
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL DEFAULT {schema_sqlite.NOW}
        )""",
}


class MigrationError(DatabaseError):
    """The migration list is inconsistent, or a migration has no step for this database."""


class Migration(NamedTuple):
    version: int
    name: str
    steps: Mapping[Dialect, Step]


MIGRATIONS: list[Migration] = [
    Migration(1, "extensions", {"postgres": schema_pg.extensions_and_role, "sqlite": schema_sqlite.check_spatialite}),
    Migration(2, "accounts", {"postgres": schema_pg.ACCOUNTS, "sqlite": schema_sqlite.ACCOUNTS}),
    Migration(3, "crdt_log", {"postgres": schema_pg.CRDT_LOG, "sqlite": schema_sqlite.CRDT_LOG}),
    Migration(4, "fleet_tables", {"postgres": schema_pg.FLEET_TABLES, "sqlite": schema_sqlite.fleet_tables}),
    Migration(5, "positions", {"postgres": schema_positions.positions_pg, "sqlite": schema_positions.POSITIONS_SQLITE}),
    Migration(6, "token_cutoff_and_device_claims",
              {"postgres": schema_security.TOKENS_AND_DEVICES_PG, "sqlite": schema_security.TOKENS_AND_DEVICES_SQLITE}),
    # SQLite has no hypertable: nothing to do there.
    Migration(7, "hypertable_direct_writes",
              {"postgres": schema_positions.hypertable_direct_writes, "sqlite": "SELECT 1"}),
]

__all__ = [
    "MIGRATIONS",
    "ExtensionMissing",
    "Migration",
    "MigrationError",
    "applied",
    "migrate",
    "pending",
    "register",
    "tenant_rls_sql",
]


def register(migration: Migration) -> None:
    """Add a migration to MIGRATIONS (versions must stay unique)."""
    _check([*MIGRATIONS, migration])
    MIGRATIONS.append(migration)


def _check(migrations: Iterable[Migration]) -> list[Migration]:
    ordered = sorted(migrations, key=lambda m: m.version)
    versions = [m.version for m in ordered]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return ordered


async def _begin_as_owner(tx: Tx) -> None:
    if tx.dialect == "postgres":
        # Pooled connections act as the app role; DDL must run as the connecting (owner) user.
        await tx.execute("SET LOCAL ROLE NONE")
        await tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))


async def applied(db: Database) -> list[tuple[int, str]]:
    """(version, name) of every recorded migration, oldest first."""
    async with db.transaction() as tx:
        await _begin_as_owner(tx)
        await tx.execute_script(_BOOKKEEPING[db.dialect])
        rows = await tx.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(int(row["version"]), str(row["name"])) for row in rows]


async def pending(db: Database, migrations: Iterable[Migration] | None = None) -> list[Migration]:
    """The migrations not yet applied to this database, in order."""
    done = {version for version, _ in await applied(db)}
    return [m for m in _check(MIGRATIONS if migrations is None else migrations) if m.version not in done]


async def migrate(db: Database, migrations: Iterable[Migration] | None = None) -> list[str]:
    """Apply every pending migration, each in its own transaction; the names applied (idempotent)."""
    ordered = _check(MIGRATIONS if migrations is None else migrations)
    done = {version for version, _ in await applied(db)}
    newly: list[str] = []
    for migration in ordered:
        if migration.version in done:
            continue
        step = migration.steps.get(db.dialect)
        if step is None:
            raise MigrationError(f"migration {migration.version} {migration.name!r} has no {db.dialect} step")
        async with db.transaction() as tx:
            await _begin_as_owner(tx)
            # Another instance may have applied it while we waited for the lock.
            if await tx.fetchval("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)):
                continue
            if isinstance(step, str):
                await tx.execute_script(step)
            else:
                await step(tx)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time_param(db, utcnow())),
            )
        newly.append(migration.name)
    if newly:
        await db.schema_changed()
    return newly
