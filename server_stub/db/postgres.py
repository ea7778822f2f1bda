"""Postgres backend: a psycopg 3 async pool, dict rows, and tenant-scoped transactions for row-level security."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from server_stub.db.base import (
    Database,
    DatabaseUnavailable,
    Dialect,
    IntegrityError,
    Params,
    PermissionDenied,
    Row,
    TimescaleMode,
    Tx,
    UniqueViolation,
)

# The NOLOGIN role the server acts as, so row-level security applies even when it connects as a superuser.
APP_ROLE = "webhost_app"
TRACKED_EXTENSIONS = ("postgis", "timescaledb")

Connection = AsyncConnection[DictRow]


def to_pyformat(statement: str) -> str:
    """Our `?` placeholders as psycopg's `%s` (a literal `%` must then be doubled)."""
    return statement.replace("%", "%%").replace("?", "%s")


def redact(url: str) -> str:
    """The URL without its password, for error messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _translate(exc: psycopg.Error) -> Exception:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return UniqueViolation(message)
    if isinstance(exc, psycopg.errors.IntegrityError):
        return IntegrityError(message)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PermissionDenied(message)
    return exc


async def _fetch(conn: Connection, statement: str, params: Params) -> list[Row]:
    try:
        # Without parameters psycopg leaves `%` alone and allows several statements (scripts).
        cur = await (conn.execute(to_pyformat(statement), tuple(params)) if params else conn.execute(statement))
        return list(await cur.fetchall()) if cur.description else []
    except psycopg.Error as exc:
        raise _translate(exc) from exc


async def _execute(conn: Connection, statement: str, params: Params) -> int:
    try:
        cur = await (conn.execute(to_pyformat(statement), tuple(params)) if params else conn.execute(statement))
        return cur.rowcount
    except psycopg.Error as exc:
        raise _translate(exc) from exc


async def _executemany(conn: Connection, statement: str, seq_of_params: Iterable[Params]) -> None:
    try:
        async with conn.cursor() as cur:
            await cur.executemany(to_pyformat(statement), [tuple(p) for p in seq_of_params])
    except psycopg.Error as exc:
        raise _translate(exc) from exc


async def _configure(conn: Connection) -> None:
    """Pool hook for each new connection: act as the app role so row-level security is enforced."""
    cur = await conn.execute(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) AS superuser,"
        " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) AS has_app_role",
        (APP_ROLE,),
    )
    row = await cur.fetchone()
    # Superusers bypass RLS entirely; a non-superuser table owner is covered by FORCE ROW LEVEL SECURITY.
    if row is not None and row["superuser"] and row["has_app_role"]:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))


async def _open_pool(url: str, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool[Connection]:
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=_configure,
        open=False,
        name="webhost-fleet",
    )
    await pool.open(wait=True, timeout=30)
    return pool


class PostgresTx(Tx):
    """A transaction on one pooled connection, with `app.customer_id` set for the tenant."""

    dialect: Dialect = "postgres"

    def __init__(self, conn: Connection, customer_id: str | None, timescale: TimescaleMode = "auto") -> None:
        self.conn = conn
        self.customer_id = customer_id
        self.timescale = timescale

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return await _fetch(self.conn, sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await _execute(self.conn, sql, params)

    async def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> None:
        await _executemany(self.conn, sql, seq_of_params)

    async def execute_script(self, sql: str) -> None:
        await _execute(self.conn, sql, ())

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        try:
            async with self.conn.transaction():
                yield
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Bulk-load rows with COPY; returns how many were written.

        Postgres refuses COPY FROM into a table under row-level security, so for tenant tables
        copy into a `CREATE TEMP TABLE … ON COMMIT DROP` staging table in this transaction and
        `INSERT … SELECT … ON CONFLICT DO NOTHING` from it (which also makes re-sent batches harmless).
        """
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(*table.split(".")), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        try:
            async with self.conn.cursor() as cur:
                async with cur.copy(query) as copy:
                    for row in rows:
                        await copy.write_row(row)
                return cur.rowcount
        except psycopg.Error as exc:
            raise _translate(exc) from exc


class PostgresDatabase(Database):
    """Postgres through a pool of 1-10 connections; statements outside transaction() autocommit."""

    dialect: Dialect = "postgres"

    def __init__(self, pool: AsyncConnectionPool[Connection], url: str, timescale: TimescaleMode = "auto") -> None:
        self._pool = pool
        self.url = url
        self.timescale = timescale
        self._sizes = (pool.min_size, pool.max_size)

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 10, timescale: TimescaleMode = "auto"
    ) -> PostgresDatabase:
        """Connect, failing fast with DatabaseUnavailable instead of waiting out the pool timeout."""
        try:
            probe = await AsyncConnection.connect(url, connect_timeout=10)
        except psycopg.Error as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {first_line}") from exc
        await probe.close()
        return cls(await _open_pool(url, min_size, max_size), url, timescale)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._pool.connection() as conn:
            return await _fetch(conn, sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._pool.connection() as conn:
            return await _execute(conn, sql, params)

    async def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, seq_of_params)

    @asynccontextmanager
    async def transaction(self, customer_id: str | None = None) -> AsyncIterator[PostgresTx]:
        if customer_id is not None and not customer_id.strip():
            # '' means "system context" to the policies, so it must never arrive here by accident.
            raise ValueError("customer_id must be a tenant id or None, not an empty string")
        async with self._pool.connection() as conn:
            try:
                async with conn.transaction():
                    if customer_id is not None:
                        await conn.execute("SELECT set_config('app.customer_id', %s, true)", (customer_id,))
                    yield PostgresTx(conn, customer_id, self.timescale)
            except psycopg.Error as exc:
                raise _translate(exc) from exc

    async def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], customer_id: str | None = None
    ) -> int:
        """COPY rows into a table without row-level security, in a transaction of its own."""
        async with self.transaction(customer_id) as tx:
            return await tx.copy_rows(table, columns, rows)

    async def extensions(self) -> dict[str, str | None]:
        rows = await self.fetch(
            "SELECT extname, extversion FROM pg_extension WHERE extname IN (?, ?)", TRACKED_EXTENSIONS
        )
        found = {row["extname"]: row["extversion"] for row in rows}
        return {name: found.get(name) for name in TRACKED_EXTENSIONS}

    async def available_extensions(self) -> dict[str, str | None]:
        """Extensions the server could install (pg_available_extensions), with their default versions."""
        rows = await self.fetch(
            "SELECT name, default_version FROM pg_available_extensions WHERE name IN (?, ?)", TRACKED_EXTENSIONS
        )
        found = {row["name"]: row["default_version"] for row in rows}
        return {name: found.get(name) for name in TRACKED_EXTENSIONS}

    async def timescale_preloaded(self) -> bool:
        """Whether the server loads TimescaleDB at start (shared_preload_libraries), without which
        the extension cannot be enabled. Only the owner role may read that setting."""
        async with self.transaction() as tx:
            await tx.execute("SET LOCAL ROLE NONE")
            return "timescaledb" in str(await tx.fetchval("SHOW shared_preload_libraries"))

    async def schema_changed(self) -> None:
        # Connections opened before the app role existed still run as the superuser; replace them.
        if hasattr(self._pool, "drain"):  # psycopg_pool >= 3.3
            await self._pool.drain()
            return
        old, self._pool = self._pool, await _open_pool(self.url, *self._sizes)
        await old.close()

    async def close(self) -> None:
        await self._pool.close()
