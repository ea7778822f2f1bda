"""TimescaleDB storage against the real Postgres: the hypertable and its policies, policy jobs that run,
idempotent ingest into compressed chunks, reads/exports/reports unchanged by compression, and tenant
isolation through the security-barrier view the app role uses instead of row-level security.

Every test uses the module's TimescaleDB database (`pg_url_timescale`), so the whole module skips, with
the reason, where the server lacks TimescaleDB. The owner (superuser) connection is plain psycopg in
autocommit: `CALL run_job(...)` cannot run inside a transaction block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from server_stub import accounts, reports
from server_stub.db import Database, IntegrityError, PermissionDenied, open_database
from server_stub.db.migrations import migrate
from server_stub.db.postgres import APP_ROLE
from server_stub.db.schema_positions import COMPRESS_AFTER_DAYS, TIMESCALE_TENANT_VIEW
from server_stub.exports import to_csv, to_geojson, to_gpx, to_json
from server_stub.partitions import MAX_RETENTION_DAYS, PLAN_RETENTION_DAYS, storage_mode
from server_stub.positions import Fix, PositionService

from .gps_support import BASE_LAT, BASE_LON, line, now_s, track

pytestmark = pytest.mark.postgres

T = TypeVar("T")
DAY = 86400.0
Scenario = Callable[[Database, PositionService], Awaitable[T]]


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def url(pg_url_timescale: str) -> str:
    """The module's TimescaleDB database, migrated."""

    async def setup() -> None:
        db = await open_database(pg_url_timescale)
        try:
            await migrate(db)
        finally:
            await db.close()

    asyncio.run(setup())
    return pg_url_timescale


@pytest.fixture
def owner(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser (owner) connection in autocommit, as an operator's psql would be."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def run(url: str, scenario: Scenario[T]) -> T:
    """Run `scenario` against the server's own Database API and a started PositionService."""

    async def go() -> T:
        db = await open_database(url)
        service = PositionService(db)
        try:
            await service.start()
            return await scenario(db, service)
        finally:
            await service.close()
            await db.close()

    return asyncio.run(go())


async def new_tenant(db: Database, name: str, *vehicles: str) -> str:
    """A pro-plan tenant (365 days of retention) with these vehicles in its projection."""
    tenant = await accounts.create_tenant(db, name, "pro")
    async with db.transaction(customer_id=tenant.id) as tx:
        for vehicle in vehicles:
            await tx.execute("INSERT INTO vehicles (customer_id, id, name, data, projected_at) "
                             "VALUES (?, ?, ?, '{}', now())", (tenant.id, vehicle, f"Vehicle {vehicle}"))
    return tenant.id


def ingest(url: str, tenant: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch through PositionService.ingest, the call behind POST /api/v1/positions."""

    async def go(db: Database, service: PositionService) -> dict[str, Any]:
        result = await service.ingest(tenant, batch)
        return result.body()

    return run(url, go)


def stored_rows(owner: psycopg.Connection[Any], tenant: str) -> int:
    row = owner.execute("SELECT count(*) FROM gps_positions WHERE customer_id = %s", (tenant,)).fetchone()
    assert row is not None
    return int(row[0])


def chunk_states(owner: psycopg.Connection[Any], times: Iterable[float]) -> dict[str, bool]:
    """Whether each chunk holding one of these instants is compressed, by chunk name."""
    rows = owner.execute(
        "SELECT format('%%I.%%I', c.chunk_schema, c.chunk_name), c.is_compressed "
        "FROM timescaledb_information.chunks c WHERE c.hypertable_name = 'gps_positions' AND EXISTS ("
        "  SELECT 1 FROM unnest(%s::float8[]) AS t(s)"
        "  WHERE to_timestamp(t.s) >= c.range_start AND to_timestamp(t.s) < c.range_end)",
        (list(times),),
    ).fetchall()
    return {name: bool(compressed) for name, compressed in rows}


def compress_all(owner: psycopg.Connection[Any]) -> None:
    owner.execute("SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('gps_positions') c")


def decompress(owner: psycopg.Connection[Any], chunks: Iterable[str]) -> None:
    """Start from plain chunks, whatever an earlier test or a background policy run did to them."""
    for chunk in chunks:
        owner.execute("SELECT decompress_chunk(%s::regclass, if_compressed => true)", (chunk,))


def fix_times(batch: Sequence[dict[str, Any]]) -> list[float]:
    return [datetime.fromisoformat(f["fix_time"].replace("Z", "+00:00")).timestamp() for f in batch]


def policy_jobs(owner: psycopg.Connection[Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    """proc_name -> (job_id, config) of the policy jobs on gps_positions."""
    rows = owner.execute(
        "SELECT proc_name, job_id, config FROM timescaledb_information.jobs WHERE hypertable_name = 'gps_positions'"
    ).fetchall()
    return {proc: (int(job_id), config) for proc, job_id, config in rows}


# -- 1. the hypertable -----------------------------------------------------------------------------


def test_gps_positions_is_a_hypertable_with_one_day_chunks_and_the_server_runs_in_timescale_mode(
        url: str, owner: psycopg.Connection[Any]) -> None:
    dimensions = owner.execute(
        "SELECT column_name, dimension_type, time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_schema = 'public' AND hypertable_name = 'gps_positions'"
    ).fetchall()
    assert dimensions == [("fix_time", "Time", timedelta(days=1))]
    kind = owner.execute("SELECT relkind::text FROM pg_class WHERE oid = 'public.gps_positions'::regclass").fetchone()
    assert kind == ("r",)  # a hypertable, not the native PARTITION BY table of the other mode

    async def mode(db: Database, service: PositionService) -> tuple[str, str, str]:
        return await storage_mode(db), service.keeper.mode, service.table

    assert run(url, mode) == ("timescale", "timescale", TIMESCALE_TENANT_VIEW)


# -- 2. the policies -------------------------------------------------------------------------------


def test_compression_and_retention_policies_are_registered_with_the_plan_derived_settings(
        owner: psycopg.Connection[Any]) -> None:
    jobs = policy_jobs(owner)
    assert set(jobs) == {"policy_compression", "policy_retention"}
    assert COMPRESS_AFTER_DAYS == 7
    assert jobs["policy_compression"][1]["compress_after"] == f"{COMPRESS_AFTER_DAYS} days"
    # Chunks go whole once older than the longest plan's retention; shorter plans are cut at query time.
    assert MAX_RETENTION_DAYS == max(PLAN_RETENTION_DAYS.values()) == 365
    assert jobs["policy_retention"][1]["drop_after"] == f"{max(PLAN_RETENTION_DAYS.values())} days"

    compression = owner.execute("SELECT compression_enabled FROM timescaledb_information.hypertables "
                                "WHERE hypertable_name = 'gps_positions'").fetchone()
    assert compression == (True,)
    settings = owner.execute(
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'gps_positions'"
    ).fetchall()
    segmentby = [name for name, index, _, _ in sorted((s for s in settings if s[1] is not None), key=lambda s: s[1])]
    orderby = [(name, asc) for name, _, index, asc in sorted((s for s in settings if s[2] is not None),
                                                             key=lambda s: s[2])]
    assert segmentby == ["customer_id", "vehicle_id"]
    assert orderby == [("fix_time", False)]  # fix_time DESC


# -- 3. the policy jobs run ------------------------------------------------------------------------


def _expire_one(owner: psycopg.Connection[Any], tenant: str, when: float) -> str:
    """A fix past every plan's retention (ingest refuses those, so the owner writes it in); its chunk."""
    owner.execute(
        "INSERT INTO gps_positions (customer_id, vehicle_id, fix_time, lat, lon, geom) "
        "VALUES (%s, 'old-van', to_timestamp(%s), 52.5, 13.4, ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326))",
        (tenant, when),
    )
    chunks = chunk_states(owner, [when])
    assert len(chunks) == 1
    return next(iter(chunks))


def _chunk_exists(owner: psycopg.Connection[Any], chunk: str) -> bool:
    row = owner.execute("SELECT count(*) FROM show_chunks('gps_positions') c WHERE c::text = %s", (chunk,)).fetchone()
    return row is not None and row[0] == 1


def _scheduled_runs(owner: psycopg.Connection[Any], job_ids: Sequence[int], timeout: float = 30.0
                    ) -> dict[int, tuple[str, int, int]]:
    """Have TimescaleDB's scheduler run these jobs now, as in production; (status, failures, successes)
    of each once a run started after this call has finished. (A foreground CALL run_job does its work
    but leaves job_stats alone, so job_stats can only show a scheduled run.)"""
    mark = owner.execute("SELECT clock_timestamp()").fetchone()
    assert mark is not None
    for job_id in job_ids:
        owner.execute("SELECT alter_job(%s, next_start => clock_timestamp())", (job_id,))
    deadline = time.monotonic() + timeout
    while True:
        # Timestamps compared in SQL: a job that has never finished shows -infinity, which Python cannot load.
        rows = owner.execute(
            "SELECT job_id, last_run_status, total_failures, total_successes FROM timescaledb_information.job_stats "
            "WHERE job_id = ANY(%s) AND last_run_started_at >= %s AND last_successful_finish >= last_run_started_at",
            (list(job_ids), mark[0]),
        ).fetchall()
        if len(rows) == len(job_ids):
            return {int(job_id): (status, int(failures), int(successes)) for job_id, status, failures, successes
                    in rows}
        if time.monotonic() > deadline:
            errors = owner.execute("SELECT job_id, err_message FROM timescaledb_information.job_errors "
                                   "WHERE job_id = ANY(%s)", (list(job_ids),)).fetchall()
            pytest.fail(f"the scheduler did not finish a run of jobs {job_ids} in {timeout:g} s; errors: {errors}")
        time.sleep(0.05)


def test_policy_jobs_run_successfully_compressing_week_old_chunks_and_dropping_chunks_past_retention(
        url: str, owner: psycopg.Connection[Any]) -> None:
    now = now_s()
    # Older than COMPRESS_AFTER_DAYS but well within retention, and from the last hour.
    old = track("old-van", now - 10 * DAY, line(BASE_LON, BASE_LAT, BASE_LON + 0.01, BASE_LAT, 30))
    recent = track("old-van", now - 3600, line(BASE_LON, BASE_LAT, BASE_LON + 0.01, BASE_LAT, 30))

    async def setup(db: Database, service: PositionService) -> tuple[str, dict[str, Any]]:
        tenant = await new_tenant(db, "Policy Haulage", "old-van")
        return tenant, (await service.ingest(tenant, old + recent)).body()

    tenant, result = run(url, setup)
    assert result == {"accepted": 60, "duplicates": 0, "rejected": []}
    decompress(owner, chunk_states(owner, fix_times(old + recent)))
    assert not any(chunk_states(owner, fix_times(old + recent)).values())
    expired = _expire_one(owner, tenant, now - (MAX_RETENTION_DAYS + 35) * DAY)
    assert stored_rows(owner, tenant) == 61
    jobs = policy_jobs(owner)
    job_ids = [jobs["policy_compression"][0], jobs["policy_retention"][0]]

    # Run by hand, as the owner: CALL raises if a job fails.
    for job_id in job_ids:
        owner.execute("CALL run_job(%s)", (job_id,))
    assert all(chunk_states(owner, fix_times(old)).values())  # the 10-day-old chunk is compressed
    assert not any(chunk_states(owner, fix_times(recent)).values())  # younger than 7 days: left alone
    assert not _chunk_exists(owner, expired)  # dropped whole
    assert stored_rows(owner, tenant) == 60

    # The same work again, this time by TimescaleDB's scheduler, which records each run in job_stats.
    decompress(owner, chunk_states(owner, fix_times(old)))
    expired = _expire_one(owner, tenant, now - (MAX_RETENTION_DAYS + 40) * DAY)
    stats = _scheduled_runs(owner, job_ids)
    for job_id in job_ids:
        status, failures, successes = stats[job_id]
        assert (job_id, status, failures) == (job_id, "Success", 0)
        assert successes >= 1
    assert all(chunk_states(owner, fix_times(old)).values())
    assert not any(chunk_states(owner, fix_times(recent)).values())
    assert not _chunk_exists(owner, expired)
    assert stored_rows(owner, tenant) == 60

    async def read(db: Database, service: PositionService) -> list[Fix]:
        return await service.fixes(tenant, "old-van", now - 11 * DAY, now + 60)

    # Compressed or not, the tenant still reads every fix it sent, in order.
    assert [f.t for f in run(url, read)] == fix_times(old + recent)


# -- 4. idempotent ingest into compressed chunks ---------------------------------------------------


def test_resending_a_batch_into_compressed_chunks_only_counts_duplicates_and_adds_no_rows(
        url: str, owner: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    now = now_s()
    path = line(BASE_LON, BASE_LAT, BASE_LON + 0.02, BASE_LAT + 0.01, 40)
    batch = [*track("resend-1", now - 3 * DAY, path), *track("resend-1", now - DAY, path),
             *track("resend-2", now - 1800, path)]
    tenant = run(url, lambda db, _: new_tenant(db, "Resend Couriers", "resend-1", "resend-2"))
    assert ingest(url, tenant, batch) == {"accepted": 120, "duplicates": 0, "rejected": []}
    assert stored_rows(owner, tenant) == 120

    compress_all(owner)
    chunks = chunk_states(owner, fix_times(batch))
    assert len(chunks) == 3 and all(chunks.values())

    # The re-sent batch, as a tracker retrying after a lost response sends it.
    assert ingest(url, tenant, batch) == {"accepted": 0, "duplicates": 120, "rejected": []}
    assert stored_rows(owner, tenant) == 120
    # Half old, half new: the new half lands in the compressed chunks beside the old.
    later = track("resend-1", now - 3 * DAY + 400 * 10, path[:20])
    assert ingest(url, tenant, batch[:20] + later) == {"accepted": 20, "duplicates": 20, "rejected": []}
    assert stored_rows(owner, tenant) == 140

    # A writer that raced past the duplicate check: the plain INSERT hits the key in the compressed
    # chunks and the retry with ON CONFLICT DO NOTHING still counts every fix as a duplicate.
    async def blind(self: PositionService, tx: Any, tenant_id: str, fixes: list[Fix]) -> list[Fix]:
        return fixes

    monkeypatch.setattr(PositionService, "_new_fixes", blind)
    assert ingest(url, tenant, batch) == {"accepted": 0, "duplicates": 120, "rejected": []}
    monkeypatch.undo()
    assert stored_rows(owner, tenant) == 140
    distinct = owner.execute("SELECT count(DISTINCT (vehicle_id, fix_time)) FROM gps_positions "
                             "WHERE customer_id = %s", (tenant,)).fetchone()
    assert distinct == (140,)


# -- 5. compression is invisible to reads, exports and reports -------------------------------------


def _journey(vehicle: str, start: float) -> list[dict[str, Any]]:
    """Drive ~2 km, stop 10 minutes, drive on: two trips and a stop, with every optional field set."""
    out = track(vehicle, start, line(BASE_LON, BASE_LAT, BASE_LON + 0.03, BASE_LAT, 61), speed_kph=40.5)
    halt = track(vehicle, start + 610, [(BASE_LON + 0.03, BASE_LAT)] * 40, step=15, speed_kph=0.0)
    back = track(vehicle, start + 1210, line(BASE_LON + 0.03, BASE_LAT, BASE_LON, BASE_LAT + 0.02, 61),
                 speed_kph=37.25)
    fixes = out + halt + back
    for i, fix in enumerate(fixes):
        fix.update(course=(i * 7.5) % 360, altitude=34.0 + i / 8, accuracy=3.5 + (i % 4),
                   attributes={"ignition": fix["speed_kph"] > 0, "seq": i} if i % 3 else None)
    return fixes


def test_reads_exports_and_trip_reports_are_identical_before_and_after_compression(
        url: str, owner: psycopg.Connection[Any]) -> None:
    now = now_s()
    # Across midnight two days ago, so the journey spans two chunks; a second vehicle shares them.
    midnight = datetime.fromtimestamp(now - 2 * DAY, UTC).replace(hour=0, minute=0, second=0).timestamp()
    batch = _journey("export-van", midnight - 1500) + _journey("export-car", midnight - 900)
    tenant = run(url, lambda db, _: new_tenant(db, "Export Freight", "export-van", "export-car"))
    assert ingest(url, tenant, batch)["accepted"] == len(batch) == 324
    chunks = chunk_states(owner, fix_times(batch))
    assert len(chunks) == 2
    decompress(owner, chunks)
    assert chunk_states(owner, fix_times(batch)) == dict.fromkeys(chunks, False)
    start, end = midnight - 2 * 3600, midnight + 2 * 3600

    async def outputs(db: Database, service: PositionService) -> dict[str, Any]:
        van = await service.fixes(tenant, "export-van", start, end)
        everyone = await service.fixes(tenant, None, start, end)
        window = await service.fixes(tenant, "export-car", midnight - 60, midnight + 60)
        return {
            "fixes": van, "all": everyone, "window": window,
            "json": to_json(everyone, {"count": len(everyone)}),
            "geojson": to_geojson(everyone),
            "csv": to_csv(everyone),
            "gpx": to_gpx(van, name="Vehicle export-van", created=now),
            "trips": reports.trips(van), "stops": reports.stops(van),
        }

    before = run(url, outputs)
    assert len(before["fixes"]) == 162 and len(before["all"]) == 324 and len(before["window"]) == 8
    assert len(before["trips"]) == 2 and len(before["stops"]) == 1  # the report has something to compare

    compress_all(owner)
    assert chunk_states(owner, fix_times(batch)) == dict.fromkeys(chunks, True)
    after = run(url, outputs)

    for key in ("json", "geojson", "csv", "gpx"):
        assert after[key] == before[key], f"{key} export changed after compression"
    for key in ("fixes", "all", "window", "trips", "stops"):
        assert after[key] == before[key], f"{key} changed after compression"


# -- 6. tenant isolation without row-level security ------------------------------------------------


def test_tenants_stay_apart_through_the_tenant_view_and_the_app_role_cannot_touch_the_hypertable(
        url: str, owner: psycopg.Connection[Any]) -> None:
    now = now_s()
    path = line(BASE_LON, BASE_LAT, BASE_LON + 0.01, BASE_LAT, 10)

    async def scenario(db: Database, service: PositionService) -> dict[str, Any]:
        a = await new_tenant(db, "Alpha Isolation", "alpha-van")
        b = await new_tenant(db, "Bravo Isolation", "bravo-van")
        await service.ingest(a, track("alpha-van", now - 2 * DAY, path) + track("alpha-van", now - 600, path))
        await service.ingest(b, track("bravo-van", now - 2 * DAY + 5, path))
        return {"a": a, "b": b}

    tenants = run(url, scenario)
    a, b = tenants["a"], tenants["b"]
    compress_all(owner)  # isolation must hold for compressed chunks too

    async def probe(db: Database, service: PositionService) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with db.transaction(customer_id=b) as tx:
            seen["role"] = await tx.fetchval("SELECT current_user")
            seen["visible"] = [r["customer_id"] for r in await tx.fetch(
                f"SELECT customer_id, count(*) AS n FROM {TIMESCALE_TENANT_VIEW} GROUP BY customer_id")]
            seen["b_rows"] = await tx.fetchval(f"SELECT count(*) FROM {TIMESCALE_TENANT_VIEW}")
            seen["a_rows_asked_for"] = await tx.fetchval(
                f"SELECT count(*) FROM {TIMESCALE_TENANT_VIEW} WHERE customer_id = ?", (a,))
            # The hypertable itself is out of reach, for reads and writes alike.
            for statement in ("SELECT count(*) FROM gps_positions",
                              "DELETE FROM gps_positions WHERE customer_id = ''"):
                with pytest.raises(PermissionDenied):
                    async with tx.savepoint():
                        await tx.execute(statement)
            # Writing a row for another tenant is refused, through the view (its check option, or
            # the hypertable's tenant CHECK that migration 7 adds, whichever Postgres meets first)
            # and straight into the hypertable (the CHECK), whatever the statement.
            for relation in (TIMESCALE_TENANT_VIEW, "gps_positions"):
                with pytest.raises((psycopg.errors.WithCheckOptionViolation, IntegrityError)):
                    async with tx.savepoint():
                        await tx.execute(
                            f"INSERT INTO {relation} (customer_id, vehicle_id, fix_time, lat, lon, geom) "
                            "VALUES (?, 'alpha-van', now(), 1, 1, ST_SetSRID(ST_MakePoint(1, 1), 4326))", (a,))
            copy_for_a = "COPY gps_positions (customer_id, vehicle_id, fix_time, lat, lon, geom) FROM STDIN"
            with pytest.raises(IntegrityError, match="gps_positions_tenant_write"):
                async with (tx.savepoint(), tx.conn.cursor() as cursor,  # type: ignore[attr-defined]
                            cursor.copy(copy_for_a) as copy):
                    await copy.write_row((a, "alpha-van", "2026-01-01T00:00:00Z", 1, 1,
                                          "0101000020E6100000000000000000F03F000000000000F03F"))
            # Nor can B touch A's rows with an UPDATE or DELETE through the view.
            seen["updated"] = await tx.execute(f"UPDATE {TIMESCALE_TENANT_VIEW} SET lat = 1 WHERE customer_id = ?",
                                               (a,))
            seen["deleted"] = await tx.execute(f"DELETE FROM {TIMESCALE_TENANT_VIEW} WHERE customer_id = ?", (a,))
        async with db.transaction() as tx:  # the system context (no tenant) sees no positions at all
            seen["system_rows"] = await tx.fetchval(f"SELECT count(*) FROM {TIMESCALE_TENANT_VIEW}")
        # The server's own read path: B asking for A's vehicle, or for everything, gets only its own.
        seen["b_reads_alpha"] = await service.fixes(b, "alpha-van", now - 3 * DAY, now + 60)
        seen["b_reads_all"] = {f.vehicle_id for f in await service.fixes(b, None, now - 3 * DAY, now + 60)}
        seen["a_reads_all"] = len(await service.fixes(a, None, now - 3 * DAY, now + 60))
        seen["b_sends_alpha"] = (await service.ingest(b, track("alpha-van", now - 30, path[:1]))).body()
        return seen

    seen = run(url, probe)
    assert seen["role"] == APP_ROLE
    assert seen["visible"] == [b] and seen["b_rows"] == 10
    assert seen["a_rows_asked_for"] == 0
    assert seen["updated"] == 0 and seen["deleted"] == 0
    assert seen["system_rows"] == 0
    assert seen["b_reads_alpha"] == [] and seen["b_reads_all"] == {"bravo-van"}
    assert seen["a_reads_all"] == 20
    assert seen["b_sends_alpha"]["accepted"] == 0
    assert "unknown vehicle_id 'alpha-van'" in seen["b_sends_alpha"]["rejected"][0]["reason"]
    assert stored_rows(owner, a) == 20 and stored_rows(owner, b) == 10

    # Privileges: on the hypertable INSERT only (COPY of new fixes, held to the tenant by its CHECK),
    # nothing on any of its chunks (plain or compressed); reads go through the view.
    def allowed(relation: str, privilege: str) -> bool:
        row = owner.execute("SELECT has_table_privilege(%s, %s::regclass, %s)", (APP_ROLE, relation, privilege))
        found = row.fetchone()
        assert found is not None
        return bool(found[0])

    for privilege in ("SELECT", "UPDATE", "DELETE", "TRUNCATE"):
        assert not allowed("public.gps_positions", privilege), privilege
    assert allowed("public.gps_positions", "INSERT")
    internal = [r[0] for r in owner.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = '_timescaledb_internal' AND c.relkind = 'r' "
        "AND (c.relname LIKE '\\_hyper\\_%' OR c.relname LIKE 'compress\\_hyper\\_%' "
        "OR c.relname LIKE '\\_compressed\\_hypertable\\_%')"
    ).fetchall()]
    assert any(name.startswith("_timescaledb_internal.compress_hyper_") for name in internal)
    for relation in internal:
        assert not allowed(relation, "SELECT"), relation
        # A chunk of the hypertable inherits its INSERT grant together with the tenant CHECK; the
        # compressed side, which has no such CHECK, grants nothing.
        assert allowed(relation, "INSERT") == relation.startswith("_timescaledb_internal._hyper_"), relation
    assert allowed(TIMESCALE_TENANT_VIEW, "SELECT") and allowed(TIMESCALE_TENANT_VIEW, "INSERT")


@pytest.mark.parametrize("optional", [{}, {"speed_kph": 31.5, "course": 90.0},
                                      {"speed_kph": 0.0, "course": 359.5, "altitude": -12.25, "accuracy": 4.0}])
def test_the_vectorised_copy_rows_are_byte_for_byte_the_row_by_row_ones(optional: dict[str, float]) -> None:
    from server_stub.positions import Fix, _binary_row, _binary_rows, _text_field

    tenant = _text_field("6f1c2a90-3e1b-4d7a-9c55-0b1e2f3a4b5c")
    fixes = [Fix("van-ü", "phone-1" if optional else None, 1_765_000_000.123456 + i * 0.5, 60.17 + i * 1e-6,
                 24.94 - i * 1e-6, **optional) for i in range(50)]
    assert _binary_rows(tenant, fixes) == b"".join(_binary_row(tenant, f) for f in fixes)
