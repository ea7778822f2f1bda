"""The one async database API the server codes against, implemented for Postgres and SQLite."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

Dialect = Literal["postgres", "sqlite"]
Params = Sequence[Any]
Row = dict[str, Any]


class DatabaseError(RuntimeError):
    """Base of the backend-neutral database errors."""


class DatabaseURLError(DatabaseError):
    """DATABASE_URL is not one of the accepted forms."""


class DatabaseUnavailable(DatabaseError):
    """The database server cannot be reached or refused the connection."""


class IntegrityError(DatabaseError):
    """A constraint (foreign key, check, not null) rejected the statement."""


class UniqueViolation(IntegrityError):
    """A unique or primary key constraint rejected the statement."""


class PermissionDenied(DatabaseError):
    """The database refused the statement, e.g. a row-level security policy on customer_id."""


class NestedTransactionError(DatabaseError):
    """The database was used directly while this task holds one of its transactions."""


class Queries(ABC):
    """Statements with `?` placeholders, answering rows as dicts; shared by Database and Tx."""

    dialect: Dialect

    @abstractmethod
    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row the statement returns."""

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row, or None."""
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = await self.fetchone(sql, params)
        return None if row is None else next(iter(row.values()))

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> None:
        """Run one statement once per parameter tuple."""


# WEBHOST_TIMESCALE: "auto" stores positions in a TimescaleDB hypertable when the server offers
# the extension; "off" keeps native partitioning even then. Read by the migration that creates
# gps_positions; an existing table keeps the mode it was created in.
TimescaleMode = Literal["auto", "off"]
TIMESCALE_MODES: tuple[TimescaleMode, ...] = ("auto", "off")


class Tx(Queries):
    """One transaction on one connection: committed when its block exits, rolled back on error."""

    customer_id: str | None
    timescale: TimescaleMode = "auto"

    @abstractmethod
    async def execute_script(self, sql: str) -> None:
        """Run several `;`-separated statements without parameters (migrations)."""

    @abstractmethod
    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested block that rolls back alone when it raises."""


class Database(Queries):
    """A connection pool (Postgres) or the single writer connection (SQLite) behind one API."""

    timescale: TimescaleMode = "auto"

    @abstractmethod
    def transaction(self, customer_id: str | None = None) -> AbstractAsyncContextManager[Tx]:
        """A transaction; on Postgres `customer_id` scopes row-level security to that tenant."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection; the object is unusable afterwards."""

    @abstractmethod
    async def extensions(self) -> dict[str, str | None]:
        """Installed spatial/time-series extensions and their versions (None when absent)."""

    async def schema_changed(self) -> None:
        """Called after migrations ran, so pooled connections can pick up new roles."""

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _dialect(db_or_dialect: Queries | Dialect) -> Dialect:
    return db_or_dialect if isinstance(db_or_dialect, str) else db_or_dialect.dialect


def geom_from_wkb(db_or_dialect: Queries | Dialect, placeholder: str = "?") -> str:
    """SQL turning a WKB parameter into a 4326 geometry in this dialect."""
    if _dialect(db_or_dialect) == "postgres":
        return f"ST_GeomFromWKB({placeholder}, 4326)"
    return f"GeomFromWKB({placeholder}, 4326)"


def as_geojson_sql(db_or_dialect: Queries | Dialect, column: str) -> str:
    """SQL rendering a geometry column as GeoJSON text in this dialect."""
    if _dialect(db_or_dialect) == "postgres":
        return f"ST_AsGeoJSON({column})"
    return f"AsGeoJSON({column})"


def utcnow() -> datetime:
    return datetime.now(UTC)


def time_param(db_or_dialect: Queries | Dialect, when: datetime) -> datetime | float:
    """A timestamp as this dialect stores it: timestamptz on Postgres, unix seconds on SQLite."""
    if _dialect(db_or_dialect) == "postgres":
        return when
    return when.timestamp()


def parse_time(value: Any) -> datetime | None:
    """A stored timestamp (datetime or unix seconds) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def json_param(value: Any) -> str:
    """A JSON parameter for a jsonb (Postgres) or TEXT (SQLite) column."""
    return json.dumps(value, separators=(",", ":"))


def parse_json(value: Any) -> Any:
    """A stored JSON value: Postgres already decoded jsonb, SQLite hands back text."""
    return json.loads(value) if isinstance(value, str | bytes) else value
