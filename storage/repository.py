"""The base of every resource repository: typed reads, JSON-preserving upserts, bbox and search."""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import orjson
from shapely.geometry.base import BaseGeometry

from storage import geometry, spatialite

if TYPE_CHECKING:
    from storage.store import Store

R = TypeVar("R")

BBox = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat


class BadBBox(ValueError):
    """A bounding box that is not four finite numbers in WGS84 order."""


def check_bbox(bbox: Iterable[float]) -> BBox:
    values = tuple(float(v) for v in bbox)
    if len(values) != 4:
        raise BadBBox(f"bbox needs 4 numbers min_lon,min_lat,max_lon,max_lat, got {len(values)}")
    min_lon, min_lat, max_lon, max_lat = values
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise BadBBox(f"bbox {values} is not min_lon,min_lat,max_lon,max_lat within WGS84 ranges")
    return min_lon, min_lat, max_lon, max_lat


def _column_value(value: Any, numeric: bool = False) -> Any:
    """The value a typed column holds. A value of the wrong type (an invalid record, kept and
    flagged) must not be left to SQLite's type affinity: a numeric-looking string in a REAL
    column or a number in a TEXT column would be converted, and the row would never again
    equal the record it was written from. So a number column holds numbers only (else NULL,
    the raw value stays in `data`), and a text column holds text."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if value is None:
        return None
    if numeric:
        return value if isinstance(value, int | float) else None
    return value if isinstance(value, str) else json.dumps(value)


# Values one statement may bind: SQLite's default limit since 3.32 (insert_rows falls back to one
# row per statement when the SQLite in use was built with less).
MAX_VARIABLES = 32_766

# From this many rows on, _rows builds them a column at a time.
COLUMNWISE_MIN = 16

# What a typed column may hold as it is; any other value goes through _column_value.
_NUMERIC_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})


class Repository(Generic[R]):
    """Rows of one collection of the tenant document, keyed by the CRDT record id.

    Subclasses name their table, typed columns and record type; geometry-bearing ones also
    say how to turn the record's GeoJSON into the column's geometry type.
    """

    table: ClassVar[str]
    record_type: ClassVar[type[Any]]
    columns: ClassVar[tuple[str, ...]]
    search_columns: ClassVar[tuple[str, ...]] = ("name",)
    geometry_column: ClassVar[str | None] = None
    geometry_sql: ClassVar[str] = "GeomFromWKB(?, 4326)"

    def __init__(self, store: Store) -> None:
        self._store = store
        cols = ["id", *self.columns, "data", "invalid_reason"]
        placeholders = ["?"] * len(cols)
        if self.geometry_column:
            cols.append(self.geometry_column)
            placeholders.append(self.geometry_sql)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
        # ON CONFLICT DO UPDATE keeps `fid`, so the spatial index entry is updated in place.
        self._upsert_sql = (
            f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES ({', '.join(placeholders)}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}"
        )
        # The same upsert for many rows in one statement (see insert_rows).
        self._upsert_head = f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES "
        self._upsert_values = f"({', '.join(placeholders)})"
        self._upsert_tail = f" ON CONFLICT(id) DO UPDATE SET {updates}"
        self._select = f"SELECT id, {', '.join(self.columns)}, data, invalid_reason FROM {self.table}"
        declared = {row[1]: str(row[2]).upper() for row in store.query(f"PRAGMA table_info({self.table})")}
        self._numeric_columns = frozenset(
            c for c in self.columns if any(t in declared.get(c, "") for t in ("INT", "REAL", "FLOA", "DOUB", "NUM"))
        )
        self._column_kinds = tuple((c, c in self._numeric_columns) for c in self.columns)
        self._has_derived = type(self).derived_columns is not Repository.derived_columns

    # -- hooks -------------------------------------------------------------------------------

    def derived_columns(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Column values computed from the record rather than copied (circle centres, say)."""
        return {}

    def geometry_wkb(self, fields: Mapping[str, Any], parsed: BaseGeometry | None = None) -> bytes | None:
        """The geometry column's value as WKB. `parsed` is the record's `geometry` already read
        by shapely (by validation, say), or None to read it here: the result is the same."""
        return None

    def geometry_wkbs(self, records: Sequence[Mapping[str, Any]],
                      parsed: Sequence[BaseGeometry | None]) -> builtins.list[bytes | None]:
        """geometry_wkb for each record, with the same answers; subclasses convert in bulk."""
        return [self.geometry_wkb(fields, geom) for fields, geom in zip(records, parsed, strict=True)]

    # -- reads -------------------------------------------------------------------------------

    def _record(self, row: Any) -> R:
        values = dict(zip(row.keys(), tuple(row), strict=True))
        values["data"] = json.loads(values["data"])
        names = {f.name for f in dataclasses.fields(self.record_type)}
        return self.record_type(**{k: v for k, v in values.items() if k in names})  # type: ignore[no-any-return]

    def get(self, record_id: str) -> R | None:
        rows = self._store.query(f"{self._select} WHERE id = ?", (record_id,))
        return self._record(rows[0]) if rows else None

    def list(self, *, limit: int | None = None, offset: int = 0, order_by: str = "name") -> builtins.list[R]:
        if order_by not in ("name", "id", "updated_at", "fid"):
            raise ValueError(f"cannot order {self.table} by {order_by!r}")
        sql = f"{self._select} ORDER BY {order_by} COLLATE NOCASE, id LIMIT ? OFFSET ?"
        rows = self._store.query(sql, (-1 if limit is None else limit, offset))
        return [self._record(row) for row in rows]

    def count(self) -> int:
        return int(self._store.scalar(f"SELECT count(*) FROM {self.table}"))

    def ids(self) -> set[str]:
        return {row[0] for row in self._store.query(f"SELECT id FROM {self.table}")}

    def search(self, text: str, *, limit: int = 100) -> builtins.list[R]:
        """Case-insensitive substring search over the human-facing text columns."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in self.search_columns)
        sql = f"{self._select} WHERE {where} ORDER BY name COLLATE NOCASE, id LIMIT ?"
        rows = self._store.query(sql, (*([pattern] * len(self.search_columns)), limit))
        return [self._record(row) for row in rows]

    def stored_rows(self) -> dict[str, tuple[Any, ...]]:
        """Every row as upsert would write it (geometry as WKB), keyed by id: for consistency checks."""
        geometry_sql = f", AsBinary({self.geometry_column})" if self.geometry_column else ""
        rows = self._store.query(
            f"SELECT id, {', '.join(self.columns)}, data, invalid_reason{geometry_sql} FROM {self.table}"
        )
        return {row[0]: tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row) for row in rows}

    def expected_row(self, record_id: str, fields: Mapping[str, Any], invalid_reason: str | None) -> tuple[Any, ...]:
        return self._row(record_id, fields, invalid_reason)

    def invalid(self) -> builtins.list[R]:
        rows = self._store.query(f"{self._select} WHERE invalid_reason IS NOT NULL ORDER BY name")
        return [self._record(row) for row in rows]

    def in_bbox(self, bbox: Iterable[float]) -> builtins.list[R]:
        """Records whose geometry intersects the box, found through the R*Tree spatial index."""
        if not self.geometry_column:
            raise TypeError(f"{self.table} has no geometry")
        min_lon, min_lat, max_lon, max_lat = check_bbox(bbox)
        column = self.geometry_column
        sql = (
            f"{self._select} WHERE fid IN (SELECT pkid FROM idx_{self.table}_{column} "
            "WHERE xmin <= ? AND xmax >= ? AND ymin <= ? AND ymax >= ?) "
            f"AND Intersects({column}, BuildMbr(?, ?, ?, ?, 4326)) ORDER BY name"
        )
        params = (max_lon, min_lon, max_lat, min_lat, min_lon, min_lat, max_lon, max_lat)
        return [self._record(row) for row in self._store.query(sql, params)]

    # -- writes ------------------------------------------------------------------------------

    def _row(self, record_id: str, fields: Mapping[str, Any], invalid_reason: str | None,
             parsed: BaseGeometry | None = None) -> tuple[Any, ...]:
        derived = self.derived_columns(fields)
        values: list[Any] = [record_id]
        append = values.append
        get = fields.get
        for column, numeric in self._column_kinds:
            value = derived[column] if column in derived else get(column)
            # The common cases inline (thousands of rows per initial sync); the rest as _column_value says.
            kind = type(value)
            if value is None:
                append(None)
            elif (kind is float or kind is int) if numeric else kind is str:
                append(value)
            else:
                append(_column_value(value, numeric))
        # Sorted keys: two replicas must write byte-identical rows for the same record.
        document = fields if type(fields) is dict else dict(fields)
        append(orjson.dumps(document, option=orjson.OPT_SORT_KEYS, default=str).decode())
        wkb = self.geometry_wkb(fields, parsed) if self.geometry_column else None
        if self.geometry_column and wkb is None and fields.get("geometry") is not None and not invalid_reason:
            invalid_reason = "geometry: cannot be read as GeoJSON"
        values.append(invalid_reason)
        if self.geometry_column:
            values.append(wkb)
        return tuple(values)

    def _rows(self, items: Sequence[tuple[str, Mapping[str, Any], str | None]],
              parsed: Sequence[BaseGeometry | None] | None = None) -> builtins.list[tuple[Any, ...]]:
        """[_row(...) for each item], built a column at a time when there are many (an initial
        sync writes thousands): the same rows, with a fraction of the per-value Python work."""
        if len(items) < COLUMNWISE_MIN:
            geoms = parsed if parsed is not None else [None] * len(items)
            return [self._row(record_id, fields, reason, geom)
                    for (record_id, fields, reason), geom in zip(items, geoms, strict=True)]
        records = [fields for _, fields, _ in items]
        columns: builtins.list[builtins.list[Any]] = [[record_id for record_id, _, _ in items]]
        derived = [self.derived_columns(fields) for fields in records] if self._has_derived else None
        for column, numeric in self._column_kinds:
            if derived is not None and any(column in d for d in derived):
                values = [d[column] if column in d else fields.get(column)
                          for d, fields in zip(derived, records, strict=True)]
            else:
                values = [fields.get(column) for fields in records]
            # Nearly always every value already has the column's type; else as _column_value says.
            if not set(map(type, values)) <= (_NUMERIC_TYPES if numeric else _TEXT_TYPES):
                values = [_column_value(value, numeric) for value in values]
            columns.append(values)
        # Sorted keys: two replicas must write byte-identical rows for the same record.
        dumps, sort_keys = orjson.dumps, orjson.OPT_SORT_KEYS
        columns.append([dumps(fields if type(fields) is dict else dict(fields), option=sort_keys, default=str).decode()
                        for fields in records])
        reasons = [reason for _, _, reason in items]
        columns.append(reasons)
        if self.geometry_column:
            wkbs = self.geometry_wkbs(records, parsed if parsed is not None else [None] * len(records))
            for index, wkb in enumerate(wkbs):
                if wkb is None and not reasons[index] and records[index].get("geometry") is not None:
                    reasons[index] = "geometry: cannot be read as GeoJSON"
            columns.append(wkbs)
        return builtins.list(zip(*columns, strict=True))

    def upsert(self, record_id: str, fields: Mapping[str, Any], invalid_reason: str | None = None) -> None:
        """Write the record as it is in the document. Invalid records are kept, with the reason."""
        self.upsert_many([(record_id, fields, invalid_reason)])

    def upsert_many(self, items: Iterable[tuple[str, Mapping[str, Any], str | None]]) -> int:
        with self._store.transaction() as conn:
            return self.write_rows(conn, items, ())

    def write_rows(self, conn: Any, upserts: Iterable[tuple[str, Mapping[str, Any], str | None]],
                   deletes: Iterable[str], parsed: Sequence[BaseGeometry | None] | None = None) -> int:
        """Upsert and delete on a connection already inside a transaction (no savepoints: the
        mirror writes thousands of records per commit). `parsed` holds, in the order of
        `upserts`, each record's geometry already read by shapely (None where it was not),
        which saves reading it again (see geometry_wkb)."""
        items = upserts if isinstance(upserts, Sequence) else builtins.list(upserts)
        rows = self._rows(items, parsed)
        if rows:
            conn.executemany(self._upsert_sql, rows)
        gone = [(record_id,) for record_id in deletes]
        if gone:
            conn.executemany(f"DELETE FROM {self.table} WHERE id = ?", gone)
        return len(rows)

    def build_rows(self, upserts: Sequence[tuple[str, Mapping[str, Any], str | None]],
                   parsed: Sequence[BaseGeometry | None] | None = None) -> builtins.list[tuple[Any, ...]]:
        """The rows write_rows would write for upserts, to be written later by insert_rows."""
        return self._rows(upserts, parsed)

    def insert_rows(self, conn: Any, rows: Sequence[tuple[Any, ...]], deletes: Iterable[str] = ()) -> None:
        """Write rows from build_rows, a few thousand per statement, and delete ids, on a
        connection already inside a transaction. The rows end up exactly as write_rows leaves
        them (the same values bound the same way, in the same order, through the same upsert),
        but the sqlite3 module releases the GIL for the whole of each statement (executemany
        takes it back after every row), so another thread can prepare the next rows meanwhile."""
        self.insert_job(rows, deletes)(conn)

    def insert_job(self, rows: Sequence[tuple[Any, ...]], deletes: Iterable[str] = ()) -> Callable[[Any], None]:
        """insert_rows as a function of the connection, its statements and parameters prepared
        here, so that the thread which runs it needs the GIL as little as possible."""
        per_statement = max(1, MAX_VARIABLES // len(rows[0])) if rows else 1
        statements = []
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            sql = self._upsert_head + ",".join([self._upsert_values] * len(chunk)) + self._upsert_tail
            statements.append((start, sql, builtins.list(itertools.chain.from_iterable(chunk))))
        gone = [(record_id,) for record_id in deletes]

        def run(conn: Any) -> None:
            for start, sql, parameters in statements:
                try:
                    conn.execute(sql, parameters)
                except spatialite.sqlite_module().OperationalError as exc:
                    if "too many SQL variables" not in str(exc):
                        raise
                    conn.executemany(self._upsert_sql, rows[start:])  # an SQLite built with a lower limit
                    break
            if gone:
                conn.executemany(f"DELETE FROM {self.table} WHERE id = ?", gone)

        return run

    def delete(self, record_id: str) -> bool:
        with self._store.transaction() as conn:
            return bool(conn.execute(f"DELETE FROM {self.table} WHERE id = ?", (record_id,)).rowcount)

    def delete_many(self, record_ids: Iterable[str]) -> None:
        with self._store.transaction() as conn:
            conn.executemany(f"DELETE FROM {self.table} WHERE id = ?", [(i,) for i in record_ids])

    def clear(self) -> None:
        with self._store.transaction() as conn:
            conn.execute(f"DELETE FROM {self.table}")


__all__ = ["BBox", "BadBBox", "Repository", "check_bbox", "geometry"]
