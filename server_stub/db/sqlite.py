"""Embedded backend: one SpatiaLite connection driven from a single worker thread, WAL, BEGIN IMMEDIATE writes.

There is no row-level security here: `transaction(customer_id)` accepts the tenant and ignores
it, so tenant isolation rests on the application's checks (Postgres adds RLS as a backstop).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from server_stub.db.base import (
    Database,
    Dialect,
    IntegrityError,
    NestedTransactionError,
    Params,
    Row,
    Tx,
    UniqueViolation,
)
from storage import migrations as storage_migrations
from storage import spatialite

T = TypeVar("T")

# Which SqliteDatabase the current task holds a transaction on: using the database directly
# from inside its own transaction would wait forever for the lock this task already holds.
_holding: ContextVar[SqliteDatabase | None] = ContextVar("webhost_sqlite_holding", default=None)


def _rows(cursor: Any) -> list[Row]:
    if cursor.description is None:
        return []
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class SqliteDatabase(Database):
    """The embedded store: every statement runs on one connection in one worker thread, in order."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: Any, executor: ThreadPoolExecutor, path: str) -> None:
        self._conn = conn
        self._executor = executor
        self._lock = asyncio.Lock()
        self._closed = False
        self.path = path
        self._integrity_error: type[Exception] = spatialite.sqlite_module().IntegrityError

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        """Open (creating) the file, load SpatiaLite, switch to WAL."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhost-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor, path)

    # -- running on the worker thread ----------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except self._integrity_error as exc:
            raise (UniqueViolation(str(exc)) if "UNIQUE" in str(exc) else IntegrityError(str(exc))) from exc

    def _fetch_sync(self, sql: str, params: Params) -> list[Row]:
        return _rows(self._conn.execute(sql, tuple(params)))

    def _execute_sync(self, sql: str, params: Params) -> int:
        return int(self._conn.execute(sql, tuple(params)).rowcount)

    def _executemany_sync(self, sql: str, seq_of_params: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, seq_of_params)

    def _script_sync(self, sql: str) -> None:
        storage_migrations.run_script(self._conn, sql)

    def _guard(self) -> None:
        if _holding.get() is self:
            raise NestedTransactionError(
                "this task already holds a transaction on the SQLite database; use the Tx it yielded"
            )

    # -- Database API --------------------------------------------------------------------------

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        self._guard()
        async with self._lock:
            return await self._call(self._fetch_sync, sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._guard()
        async with self._lock:
            return await self._call(self._execute_sync, sql, params)

    async def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> None:
        # One transaction: atomic, and far faster than an implicit commit per row.
        async with self.transaction() as tx:
            await tx.executemany(sql, seq_of_params)

    @asynccontextmanager
    async def transaction(self, customer_id: str | None = None) -> AsyncIterator[SqliteTx]:
        self._guard()
        async with self._lock:
            await self._call(self._execute_sync, "BEGIN IMMEDIATE", ())
            token = _holding.set(self)
            try:
                yield SqliteTx(self, customer_id)
            except BaseException:
                # Shielded: a cancelled task must still leave the connection out of its transaction.
                await asyncio.shield(self._call(self._execute_sync, "ROLLBACK", ()))
                raise
            else:
                await asyncio.shield(self._call(self._execute_sync, "COMMIT", ()))
            finally:
                _holding.reset(token)

    async def extensions(self) -> dict[str, str | None]:
        return {"spatialite": await self.fetchval("SELECT spatialite_version()")}

    async def close(self) -> None:
        if self._closed:
            return
        async with self._lock:
            await self._call(self._conn.close)
            self._closed = True
        self._executor.shutdown(wait=True)


class SqliteTx(Tx):
    """A BEGIN IMMEDIATE transaction; `customer_id` is recorded but not enforced (no RLS in SQLite)."""

    dialect: Dialect = "sqlite"

    def __init__(self, db: SqliteDatabase, customer_id: str | None) -> None:
        self._db = db
        self.customer_id = customer_id
        self._savepoints = 0

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._db._call(self._db._fetch_sync, sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._db._call(self._db._execute_sync, sql, params)

    async def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> None:
        await self._db._call(self._db._executemany_sync, sql, [tuple(p) for p in seq_of_params])

    async def execute_script(self, sql: str) -> None:
        await self._db._call(self._db._script_sync, sql)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"sp_{self._savepoints}"
        await self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self.execute(f"ROLLBACK TO {name}")
            await self.execute(f"RELEASE {name}")
            raise
        else:
            await self.execute(f"RELEASE {name}")


def _connect(path: str) -> Any:
    conn = spatialite.connect(path)
    # WAL lets readers (sqlite3 CLI, backups) run beside the writer; NORMAL is crash-safe for the process.
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn
