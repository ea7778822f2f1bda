"""POST/GET /api/v1/positions through a real server, on SQLite and Postgres: validation per fix,
idempotency, gzip and size caps, tenancy, plan retention, and (Postgres) partitions and RLS."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

from server_stub import accounts, partitions
from server_stub.db import Database, open_database, time_param, utcnow
from server_stub.db.migrations import migrate
from server_stub.positions import PositionService, parse_timestamp
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for

from .gps_support import (
    BASE_LAT,
    BASE_LON,
    client,
    create_vehicle,
    iso,
    now_s,
    post_batch,
    read_positions,
    stored,
    with_db,
)


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings)


def fix(vehicle_id: str | None, t: float | str, lat: float = BASE_LAT, lon: float = BASE_LON, **extra: Any
        ) -> dict[str, Any]:
    return {"vehicle_id": vehicle_id, "fix_time": iso(t) if isinstance(t, float) else t, "lat": lat, "lon": lon,
            **extra}


def test_bad_fixes_are_refused_with_reasons_while_the_good_ones_in_the_batch_are_kept(
        live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["field"]) as http, client(live, tenant.tokens["dispatcher"]) as admin:
        van = create_vehicle(admin, "Van 1", "imei-van-1")
        batch: list[Any] = [
            fix(van, now - 300, speed_kph=42.5, course=90, altitude=35.0, accuracy=4.0, attributes={"ign": True}),
            {"device_id": "imei-van-1", "fix_time": now - 290, "lat": BASE_LAT + 0.001, "lon": BASE_LON},  # Unix s
            {"device_id": "imei-van-1", "fix_time": (now - 280) * 1000, "lat": BASE_LAT + 0.002, "lon": BASE_LON},
            fix("no-such-vehicle", now - 270),
            {"device_id": "imei-unknown", "fix_time": now - 260, "lat": BASE_LAT, "lon": BASE_LON},
            fix(van, now - 250, lat=91.0),
            fix(van, now - 240, lon=-180.5),
            fix(van, now - 230, lat=0.0, lon=0.0),
            fix(van, "last tuesday"),
            fix(van, now + 3600),
            fix(van, now - 200, speed_kph="fast"),
            {"fix_time": iso(now - 190), "lat": BASE_LAT, "lon": BASE_LON},
            fix(van, now - 180, attributes=["not", "an", "object"]),
            "not even an object",
            fix(van, now - 170, lat="52.5"),
            fix(van, now - 160, course=400),
            fix(van, now - 150, speed_kph=True),
        ]
        result = post_batch(http, batch)
        assert result["accepted"] == 3
        assert result["duplicates"] == 0
        reasons = {r["index"]: r["reason"] for r in result["rejected"]}
        assert sorted(reasons) == list(range(3, len(batch)))
        assert "unknown vehicle_id 'no-such-vehicle'" in reasons[3]
        assert "unknown device_id 'imei-unknown'" in reasons[4]
        assert "lat 91.0 is out of range" in reasons[5]
        assert "lon -180.5 is out of range" in reasons[6]
        assert "0,0" in reasons[7]
        assert "neither ISO 8601 nor Unix" in reasons[8]
        assert "in the future" in reasons[9]
        assert "speed_kph must be a number" in reasons[10]
        assert "vehicle_id or device_id is required" in reasons[11]
        assert "attributes must be a JSON object" in reasons[12]
        assert "must be a JSON object" in reasons[13]
        assert "lat must be a number" in reasons[14]
        assert "course 400.0 is out of range" in reasons[15]
        assert "speed_kph must be a number" in reasons[16]

        kept = stored(http, van)
        assert [p["fix_time"] for p in kept] == [iso(now - 300), iso(now - 290), iso(now - 280)]
        first = kept[0]
        assert (first["lat"], first["lon"], first["speed_kph"], first["course"]) == (BASE_LAT, BASE_LON, 42.5, 90.0)
        assert (first["altitude"], first["accuracy"], first["attributes"]) == (35.0, 4.0, {"ign": True})
        assert {p["device_id"] for p in kept} == {"imei-van-1"}  # by vehicle_id: the registered device


def test_resending_a_batch_is_harmless_duplicates_are_counted_and_rows_do_not_change(
        live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["field"]) as http, client(live, tenant.tokens["dispatcher"]) as admin:
        van = create_vehicle(admin, "Van 2")
        batch = [fix(van, now - 600 + i, lat=BASE_LAT + i * 1e-4) for i in range(50)]
        assert post_batch(http, batch) == {"accepted": 50, "duplicates": 0, "rejected": []}
        assert post_batch(http, batch) == {"accepted": 0, "duplicates": 50, "rejected": []}
        # An overlapping batch: half old, half new, plus a fix repeated inside the batch.
        overlap = batch[25:] + [fix(van, now - 500 + i) for i in range(25)] + [batch[0]]
        assert post_batch(http, overlap, compress=True) == {"accepted": 25, "duplicates": 26, "rejected": []}
        rows = stored(http, van)
        assert len(rows) == 75
        assert len({r["fix_time"] for r in rows}) == 75
        # The same instant written another way (Unix ms instead of ISO) is the same fix.
        again = post_batch(http, [{"vehicle_id": van, "fix_time": (now - 600) * 1000, "lat": 1.0, "lon": 1.0}])
        assert again == {"accepted": 0, "duplicates": 1, "rejected": []}
        assert stored(http, van)[0]["lat"] == BASE_LAT  # the first write wins


def test_gzip_bodies_are_read_and_oversized_or_malformed_bodies_refused(live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["field"]) as http, client(live, tenant.tokens["dispatcher"]) as admin:
        van = create_vehicle(admin, "Van 3")
        assert post_batch(http, [fix(van, now - 60)], compress=True)["accepted"] == 1
        bomb = gzip.compress(b'{"positions": [' + b" " * (40 * 1024 * 1024) + b"]}")
        refused = http.post("/api/v1/positions", content=bomb,
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert refused.status_code == 413, refused.text
        assert refused.json()["errors"][0]["status"] == "413"
        assert http.post("/api/v1/positions", content=b"x" * 100,
                         headers={"Content-Encoding": "br"}).status_code == 415
        assert http.post("/api/v1/positions", content=b"not gzip", headers={"Content-Encoding": "gzip"}
                         ).status_code == 400
        assert http.post("/api/v1/positions", content=b"{nope").status_code == 400
        wrong_shape = http.post("/api/v1/positions", json={"fixes": []})
        assert wrong_shape.status_code == 400
        assert "positions" in wrong_shape.json()["errors"][0]["detail"]
        too_many = http.post("/api/v1/positions", content=orjson.dumps({"positions": [{}] * 20_001}))
        assert too_many.status_code == 413


def test_ingest_needs_a_token_and_stays_inside_the_tenant(live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    other = provision_tenant(live.settings, "Other Freight")
    read_key = with_db(live, lambda db: accounts.create_api_key(db, tenant.id, "reader", ["read"]))[1]
    positions_key = with_db(live, lambda db: accounts.create_api_key(db, tenant.id, "tracker", ["positions"]))[1]
    with client(live, tenant.tokens["dispatcher"]) as admin:
        van = create_vehicle(admin, "Van 4", "imei-shared-name")
    with client(live) as anonymous:
        assert anonymous.post("/api/v1/positions", json={"positions": []}).status_code == 401
        assert anonymous.get("/api/v1/positions", params={"vehicle_id": van}).status_code == 401
    with client(live, read_key) as reader:
        assert reader.post("/api/v1/positions", json={"positions": [fix(van, now - 5)]}).status_code == 403
    with client(live, positions_key) as tracker:
        assert post_batch(tracker, [fix(van, now - 10)])["accepted"] == 1
        assert tracker.get("/api/v1/positions", params={"vehicle_id": van}).status_code == 403  # write-only key
    with client(live, other.tokens["admin"]) as intruder:
        result = post_batch(intruder, [fix(van, now - 20), {"device_id": "imei-shared-name", "fix_time": now - 20,
                                                             "lat": BASE_LAT, "lon": BASE_LON}])
        assert result["accepted"] == 0
        assert "unknown vehicle_id" in result["rejected"][0]["reason"]
        assert "unknown device_id" in result["rejected"][1]["reason"]
        assert stored(intruder, van) == []
        assert stored(intruder, None) == []
    with client(live, tenant.tokens["field"]) as http:
        assert [p["fix_time"] for p in stored(http, van)] == [iso(now - 10)]


def test_plan_retention_refuses_older_fixes_and_hides_them_after_a_downgrade(live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van 5")
        # Pro keeps 365 days: a 60-day-old fix is stored.
        assert post_batch(http, [fix(van, now - 60 * 86400), fix(van, now - 3600)])["accepted"] == 2
        with_db(live, lambda db: accounts.set_plan(db, tenant.id, "hobby"))
        # Hobby keeps 30 days: the old fix is no longer answered, and older ones are refused.
        window = read_positions(http, van, now - 90 * 86400, now).json()["data"]
        assert [p["fix_time"] for p in window] == [iso(now - 3600)]
        refused = post_batch(http, [fix(van, now - 40 * 86400)])
        assert "older than the plan's 30-day retention" in refused["rejected"][0]["reason"]


def test_read_formats_and_parameters_are_checked(live: LiveServer, tenant: Tenant) -> None:
    with client(live, tenant.tokens["dispatcher"]) as http:
        assert http.get("/api/v1/positions", params={"format": "kml"}).status_code == 400
        assert http.get("/api/v1/positions", params={"format": "gpx"}).status_code == 400  # gpx needs a vehicle
        assert http.get("/api/v1/positions", params={"from": "soon"}).status_code == 400
        assert http.get("/api/v1/positions", params={"from": "2024-02-01", "to": "2024-01-01"}).status_code == 400
        assert http.get("/api/v1/positions", params={"limit": "0"}).status_code == 400


def test_limit_truncates_and_says_so(live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van 6")
        post_batch(http, [fix(van, now - 100 + i) for i in range(10)])
        response = read_positions(http, van, now - 200, now, limit=4)
        body = response.json()
        assert len(body["data"]) == 4 and body["meta"]["truncated"] is True
        assert response.headers["x-truncated"] == "true"
        assert [p["fix_time"] for p in body["data"]] == [iso(now - 100 + i) for i in range(4)]


def test_newest_fix_per_vehicle_is_kept_in_vehicle_state_even_when_batches_arrive_out_of_order(
        live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van 7")
        post_batch(http, [fix(van, now - 10, lat=BASE_LAT + 0.01)])
        post_batch(http, [fix(van, now - 500, lat=BASE_LAT + 0.02)])  # a late upload of older fixes

    async def state(db: Database) -> Any:
        async with db.transaction(customer_id=tenant.id) as tx:
            return await tx.fetchone("SELECT lat, fix_time FROM vehicle_state WHERE customer_id = ? AND vehicle_id = ?",
                                     (tenant.id, van))

    row = with_db(live, state)
    assert row["lat"] == pytest.approx(BASE_LAT + 0.01)


@pytest.mark.parametrize(("raw", "expected"), [
    ("2024-05-01T10:00:00Z", 1714557600.0),
    ("2024-05-01T12:00:00+02:00", 1714557600.0),
    ("2024-05-01T10:00:00", 1714557600.0),  # no zone: UTC
    (1714557600, 1714557600.0),
    (1714557600123, 1714557600.123),
    ("1714557600", 1714557600.0),
    (1714557600.5, 1714557600.5),
])
def test_fix_time_is_iso_8601_or_unix_seconds_or_milliseconds(raw: Any, expected: float) -> None:
    assert parse_timestamp(raw) == pytest.approx(expected)


# -- Postgres: partitions and row-level security ------------------------------------------------------


@pytest.fixture
def pg_live(database_url: str) -> Iterator[LiveServer]:
    if not database_url.startswith("postgres"):
        pytest.skip("row-level security is Postgres's; SQLite serves one process")
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def partitioned_live(pg_url_partitioned: str) -> Iterator[LiveServer]:
    """A server on native daily partitions (TimescaleDB's chunks: tests/server/test_timescale.py)."""
    with LiveServer(settings_for(pg_url_partitioned)) as server:
        yield server


@pytest.mark.postgres
def test_postgres_partitions_exist_ahead_and_retention_drops_a_whole_old_partition(
        partitioned_live: LiveServer) -> None:
    pg_live = partitioned_live
    tenant = provision_tenant(pg_live.settings, "Partition Haulage")
    with client(pg_live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van P")
        assert post_batch(http, [fix(van, now_s() - 60)])["accepted"] == 1
    today = partitions.day_of(utcnow())
    old_day = today - timedelta(days=400)

    async def scenario(db: Database) -> dict[str, Any]:
        assert await partitions.storage_mode(db) == "partitioned"
        ahead = set(await partitions.existing_partitions(db))
        await partitions.ensure_partitions(db, [old_day])
        async with db.transaction(customer_id=tenant.id) as tx:
            old = utcnow() - timedelta(days=400)
            await tx.execute(
                "INSERT INTO gps_positions (customer_id, vehicle_id, fix_time, lat, lon, geom) "
                "VALUES (?, ?, ?, 52.5, 13.4, ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326))",
                (tenant.id, van, time_param(db, old)),
            )
        before = await db.fetchval("SELECT to_regclass(?) IS NOT NULL", (partitions.partition_name(old_day),))
        report = await partitions.run_maintenance(db)
        after = set(await partitions.existing_partitions(db))
        async with db.transaction(customer_id=tenant.id) as tx:
            remaining = await tx.fetchval("SELECT count(*) FROM gps_positions WHERE customer_id = ?", (tenant.id,))
        return {"ahead": ahead, "before": before, "report": report, "after": after, "remaining": remaining}

    outcome = with_db(pg_live, scenario)
    assert {today + timedelta(days=d) for d in range(partitions.DAYS_AHEAD + 1)} <= outcome["ahead"]
    assert outcome["before"] is True
    assert outcome["report"].dropped == [partitions.partition_name(old_day)]
    assert old_day not in outcome["after"]
    assert today in outcome["after"] and today + timedelta(days=partitions.DAYS_AHEAD) in outcome["after"]
    assert outcome["remaining"] == 1  # today's fix is untouched: a partition went, not rows


@pytest.mark.postgres
def test_postgres_ingest_creates_a_missing_past_partition_on_demand(partitioned_live: LiveServer) -> None:
    pg_live = partitioned_live
    tenant = provision_tenant(pg_live.settings, "Late Uploads")
    day = partitions.day_of(utcnow() - timedelta(days=20))

    async def drop(db: Database) -> None:
        async with db.transaction() as tx:
            await tx.execute("SET LOCAL ROLE NONE")
            await tx.execute(f"DROP TABLE IF EXISTS {partitions.partition_name(day)}")

    with_db(pg_live, drop)
    with client(pg_live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van L")
        assert post_batch(http, [fix(van, now_s() - 20 * 86400)])["accepted"] == 1

    async def exists(db: Database) -> Any:
        return await db.fetchval("SELECT to_regclass(?) IS NOT NULL", (partitions.partition_name(day),))

    assert with_db(pg_live, exists) is True


def test_postgres_row_level_security_hides_positions_events_and_state_of_other_tenants(pg_live: LiveServer) -> None:
    a = provision_tenant(pg_live.settings, "Alpha")
    b = provision_tenant(pg_live.settings, "Bravo")
    with client(pg_live, a.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Van A", speed_limit_kph=50)
        post_batch(http, [fix(van, now_s() - 30, speed_kph=90.0)])

    async def probe(db: Database) -> dict[str, int]:
        # On a hypertable the tenant view stands where the policy would (the app role's only way in).
        mode = await partitions.storage_mode(db)
        positions = partitions.positions_relation(mode)
        counts = {}
        for table in ("gps_positions", "geofence_events", "vehicle_state"):
            relation = positions if table == "gps_positions" else table
            async with db.transaction(customer_id=b.id) as tx:
                counts[f"b:{table}"] = await tx.fetchval(f"SELECT count(*) FROM {relation}")
            async with db.transaction(customer_id=a.id) as tx:
                counts[f"a:{table}"] = await tx.fetchval(f"SELECT count(*) FROM {relation}")
            counts[f"system:{table}"] = await db.fetchval(f"SELECT count(*) FROM {relation}")
        async with db.transaction(customer_id=b.id) as tx:
            # Writing a row for another tenant is refused by the policy, not silently stored.
            try:
                async with tx.savepoint():
                    await tx.execute(
                        f"INSERT INTO {positions} (customer_id, vehicle_id, fix_time, lat, lon, geom) "
                        "VALUES (?, 'x', now(), 1, 1, ST_SetSRID(ST_MakePoint(1, 1), 4326))", (a.id,))
            except Exception as exc:
                # On a hypertable the CHECK of migration 7 (or the view's check option) refuses it.
                expected = "check" if mode == "timescale" else "row-level security"
                counts["refused"] = int(expected in str(exc))
        return counts

    counts = with_db(pg_live, probe)
    assert counts["a:gps_positions"] == 1 and counts["a:vehicle_state"] == 1 and counts["a:geofence_events"] == 1
    for table in ("gps_positions", "geofence_events", "vehicle_state"):
        assert counts[f"b:{table}"] == 0
        assert counts[f"system:{table}"] == 0
    assert counts["refused"] == 1


def test_the_same_batch_sent_concurrently_is_stored_once(live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["dispatcher"]) as http:
        vans = [create_vehicle(http, f"Van C{i}") for i in range(3)]
    batch = [fix(van, now - 900 + i, lat=BASE_LAT + i * 1e-5) for van in vans for i in range(300)]

    async def send_all() -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {tenant.tokens['field']}"}
        async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=60) as http:
            responses = await asyncio.gather(*(http.post("/api/v1/positions", json={"positions": batch})
                                               for _ in range(4)))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        return [r.json() for r in responses]

    results = asyncio.run(send_all())
    assert sum(r["accepted"] for r in results) == len(batch)
    assert sum(r["duplicates"] for r in results) == 3 * len(batch)
    with client(live, tenant.tokens["dispatcher"]) as http:
        assert sum(len(stored(http, van)) for van in vans) == len(batch)


@pytest.mark.postgres
def test_postgres_a_writer_racing_past_the_vehicle_lock_falls_back_to_on_conflict(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> tuple[Any, int]:
        db = await open_database(pg_url)
        try:
            await migrate(db)
            owner = await accounts.create_tenant(db, "Race Co", "pro")
            async with db.transaction(customer_id=owner.id) as tx:
                await tx.execute("INSERT INTO vehicles (customer_id, id, name, data, projected_at) "
                                 "VALUES (?, 'race-van', 'Race van', '{}', now())", (owner.id,))
            service = PositionService(db)
            await service.start()
            now = now_s()
            batch = [fix("race-van", now - 100 + i) for i in range(10)]
            await service.ingest(owner.id, batch[:1])  # stored before the "racing" batch looks
            # Pretend the duplicate check ran before that write landed: the plain INSERT now collides.
            original = PositionService._new_fixes

            async def blind(self: PositionService, tx: Any, tenant_id: str, fixes: list[Any]) -> list[Any]:
                return fixes

            monkeypatch.setattr(PositionService, "_new_fixes", blind)
            result = await service.ingest(owner.id, batch)
            monkeypatch.setattr(PositionService, "_new_fixes", original)
            await service.close()
            async with db.transaction(customer_id=owner.id) as tx:
                count = await tx.fetchval(f"SELECT count(*) FROM {service.table} WHERE customer_id = ?", (owner.id,))
            return result, int(count)
        finally:
            await db.close()

    result, count = asyncio.run(scenario())
    assert (result.accepted, result.duplicates, result.rejected) == (9, 1, [])
    assert count == 10


def test_sqlite_retention_prunes_each_tenant_at_its_own_plan(tmp_path: Any) -> None:
    async def scenario() -> tuple[Any, list[str]]:
        db = await open_database(f"sqlite:///{tmp_path / 'retention.sqlite'}")
        try:
            await migrate(db)
            hobby = await accounts.create_tenant(db, "Hobbyist", "hobby")
            pro = await accounts.create_tenant(db, "Professional", "pro")
            now = utcnow()
            for tenant in (hobby, pro):
                for days in (10, 60):
                    when = (now - timedelta(days=days)).timestamp()
                    await db.execute(
                        "INSERT INTO gps_positions (customer_id, vehicle_id, fix_time, received_at, lat, lon) "
                        "VALUES (?, 'v', ?, ?, 52.5, 13.4)", (tenant.id, when, when))
            report = await partitions.run_maintenance(db, now)
            rows = await db.fetch("SELECT customer_id, fix_time FROM gps_positions ORDER BY customer_id, fix_time")
            plan = {hobby.id: "hobby", pro.id: "pro"}
            left = [f"{plan[r['customer_id']]}:{round((now.timestamp() - r['fix_time']) / 86400)}" for r in rows]
            return report, sorted(left)
        finally:
            await db.close()

    report, left = asyncio.run(scenario())
    assert report.mode == "plain" and report.deleted_rows == 1
    assert left == ["hobby:10", "pro:10", "pro:60"]


def test_latest_gives_each_vehicles_newest_fix_and_a_late_upload_does_not_replace_it(
        live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["dispatcher"]) as http:
        vans = [create_vehicle(http, f"Van L{i}") for i in range(3)]
        silent = create_vehicle(http, "Never reported")
        for i, van in enumerate(vans):
            assert post_batch(http, [fix(van, now - 600 + s, lat=BASE_LAT + i * 0.01 + s * 1e-5) for s in range(5)])[
                "accepted"] == 5
        assert post_batch(http, [fix(vans[0], now - 3000)])["accepted"] == 1  # a late upload, older than the newest
        everything = http.get("/api/v1/positions/latest")
        assert everything.status_code == 200, everything.text
        latest = {item["vehicle_id"]: item for item in everything.json()["data"]}
        assert set(latest) == set(vans) and silent not in latest
        assert all(item["fix_time"] == iso(now - 596) for item in latest.values())
        assert latest[vans[1]]["lat"] == pytest.approx(BASE_LAT + 0.01 + 4e-5)
        named = http.get("/api/v1/positions/latest", params={"vehicle_id": f"{vans[2]},{silent}"}).json()
        assert [item["vehicle_id"] for item in named["data"]] == [vans[2]] and named["meta"]["count"] == 1
        assert http.get("/api/v1/positions/latest", params={"vehicle_id": "a\x00b"}).status_code == 400


def test_reads_by_default_include_fixes_from_a_clock_running_ahead(live: LiveServer, tenant: Tenant) -> None:
    now = now_s()
    with client(live, tenant.tokens["dispatcher"]) as http:
        van = create_vehicle(http, "Fast clock")
        assert post_batch(http, [fix(van, now + 120)])["accepted"] == 1  # within the accepted future window
        default_range = http.get("/api/v1/positions", params={"vehicle_id": van}).json()  # no from, no to
        assert [row["fix_time"] for row in default_range["data"]] == [iso(now + 120)]
