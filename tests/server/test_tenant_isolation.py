"""Tenant isolation, walked table-driven through a real server on SQLite and Postgres.

Every endpoint and socket is tried with every role of tenant B (and B's API keys) against the
records of tenant A. Every foreign access is denied and leaks nothing, not even whether an id
exists: the answer for A's id is byte-for-byte the answer for an id that exists nowhere. Inside
tenant A, roles, scopes, revocation and disabling are enforced on the next request. On Postgres,
row-level security is shown to back the application checks.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from server_stub import accounts, auth
from server_stub.app import create_app
from server_stub.db import PermissionDenied, open_database, utcnow
from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for

from .fleet_http import (
    BACKENDS,
    COLLECTIONS,
    attributes,
    client,
    create,
    document,
    module_database_url,
    random_id,
    sync_handshake,
    ws_handshake,
)


@dataclass(frozen=True)
class Credential:
    """One way of calling as tenant B, and what tenant B itself would allow it."""

    label: str
    token: str
    can_read: bool
    can_write: bool


@dataclass
class World:
    server: LiveServer
    a: Tenant
    b: Tenant
    a_records: dict[str, str]  # collection -> id of A's record
    a_attributes: dict[str, dict[str, Any]]  # collection -> attributes as A's API shows them
    b_credentials: dict[str, Credential]
    a_read_key: str
    window: dict[str, str]  # from/to (Unix seconds) around A's positions
    secrets: list[str] = field(default_factory=list)  # strings of A that must never reach B

    @property
    def dialect(self) -> str:
        return "postgres" if self.server.settings.database_url.startswith("postgres") else "sqlite"


B_CREDENTIALS = ("admin", "dispatcher", "field", "key-read-write", "key-read", "key-positions")
A_NAMES = {"vehicles": "Alpha Van A-17", "drivers": "Alice Alphason", "routes": "Alpha Ring Road",
           "geofences": "Alpha Secret Depot"}


async def _api_keys(database_url: str, a: Tenant, b: Tenant) -> tuple[dict[str, str], str]:
    db = await open_database(database_url)
    try:
        keys = {}
        for label, scopes in (("key-read-write", ["read", "write"]), ("key-read", ["read"]),
                              ("key-positions", ["positions"])):
            _, keys[label] = await accounts.create_api_key(db, b.id, f"b {label}", scopes, role="dispatcher")
        _, a_read = await accounts.create_api_key(db, a.id, "a reader", ["read"], role="dispatcher")
        return keys, a_read
    finally:
        await db.close()


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    url = module_database_url(request, tmp_path_factory)
    with LiveServer(settings_for(url)) as server:
        a = provision_tenant(server.settings, "Alpha Haulage")
        b = provision_tenant(server.settings, "Bravo Couriers")
        extras = {"vehicles": {"plate": "A-SECRET-17", "device_id": "imei-alpha-0017"},
                  "drivers": {"email": "alice@alpha-haulage.example", "license_number": "ALPHA-LIC-9"}}
        records = {c: create(server, a.tokens["dispatcher"], c, attributes(c, A_NAMES[c], **extras.get(c, {})))
                   for c in COLLECTIONS}
        with client(server, a.tokens["dispatcher"]) as http:
            shown = {c: http.get(f"/api/v1/{c}/{records[c]}").json()["data"]["attributes"] for c in COLLECTIONS}
        # A's vehicle drives into A's depot: positions, and a geofence event, that B must never see.
        now = int(time.time())
        track = [(13.20, 52.52), (13.25, 52.52), (13.38, 52.52), (13.39, 52.52)]
        with client(server, a.tokens["dispatcher"]) as http:
            ingested = http.post("/api/v1/positions", json={"positions": [
                {"vehicle_id": records["vehicles"], "fix_time": now - 300 + 60 * i, "lat": lat, "lon": lon,
                 "speed_kph": 30.0} for i, (lon, lat) in enumerate(track)]})
            assert ingested.status_code == 200 and ingested.json()["accepted"] == len(track), ingested.text
        window = {"from": str(now - 3600), "to": str(now + 3600)}
        keys, a_read_key = asyncio.run(_api_keys(url, a, b))
        readers, writers = {"admin", "dispatcher", "field", "key-read-write", "key-read"}, {"admin", "dispatcher",
                                                                                           "key-read-write"}
        credentials = {
            label: Credential(label, b.tokens.get(label) or keys[label], label in readers, label in writers)
            for label in B_CREDENTIALS
        }
        secrets = [a.id, *records.values(), *A_NAMES.values(), *a.emails.values(), "A-SECRET-17",
                   "imei-alpha-0017", "alice@alpha-haulage.example", "ALPHA-LIC-9", "Alpha Haulage"]
        yield World(server, a, b, records, shown, credentials, a_read_key, window, secrets)


def assert_leaks_nothing(world: World, response: httpx.Response | str, *, allowed: tuple[str, ...] = ()) -> None:
    """Neither body nor headers name anything of tenant A (ids B chose itself may be `allowed`)."""
    if isinstance(response, httpx.Response):
        text = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    else:
        text = response
    leaked = [s for s in world.secrets if s not in allowed and s.lower() in text.lower()]
    assert not leaked, f"response names {leaked} of tenant A: {text[:500]}"


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    """Two responses a caller could not tell apart."""
    assert first.status_code == second.status_code, (first.text, second.text)
    assert first.text == second.text
    assert first.headers.get("content-type") == second.headers.get("content-type")


def a_record_is_untouched(world: World, collection: str) -> None:
    with client(world.server, world.a.tokens["dispatcher"]) as http:
        response = http.get(f"/api/v1/{collection}/{world.a_records[collection]}")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["attributes"] == world.a_attributes[collection]


# -- every REST operation, every credential of B, every collection ------------------------------

OPERATIONS = ("list", "get", "post", "patch", "delete")


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("credential", B_CREDENTIALS)
@pytest.mark.parametrize("collection", COLLECTIONS)
def test_foreign_tenant_rest_access_is_denied_and_indistinguishable_from_a_missing_id(
    world: World, collection: str, credential: str, operation: str
) -> None:
    cred = world.b_credentials[credential]
    target, nowhere = world.a_records[collection], random_id()
    # Trying to name tenant A explicitly must not help: only platform admins may choose a tenant.
    steer = {"X-Tenant-Id": world.a.id}
    with client(world.server, cred.token) as http:
        if operation == "list":
            response = http.get(f"/api/v1/{collection}", params={"tenant": world.a.id}, headers=steer)
            if cred.can_read:
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["data"] == [] and body["meta"]["total"] == 0  # B has nothing of its own
            else:
                assert response.status_code == 403, response.text
            assert_leaks_nothing(world, response, allowed=(world.a.id,))  # links.self echoes B's own query
            return
        if operation == "get":
            foreign = http.get(f"/api/v1/{collection}/{target}", headers=steer)
            missing = http.get(f"/api/v1/{collection}/{nowhere}", headers=steer)
            expected = 404 if cred.can_read else 403
        elif operation == "patch":
            foreign = http.patch(f"/api/v1/{collection}/{target}", headers=steer,
                                 json=document(collection, {"name": "Hijacked"}, target))
            missing = http.patch(f"/api/v1/{collection}/{nowhere}", headers=steer,
                                 json=document(collection, {"name": "Hijacked"}, nowhere))
            expected = 404 if cred.can_write else 403
        elif operation == "delete":
            foreign = http.delete(f"/api/v1/{collection}/{target}", headers=steer)
            missing = http.delete(f"/api/v1/{collection}/{nowhere}", headers=steer)
            expected = 404 if cred.can_write else 403
        else:
            # B may choose any id for its own record, A's included: that creates B's record, never A's.
            probe = attributes(collection, "Bravo probe")
            foreign = http.post(f"/api/v1/{collection}", headers=steer, json=document(collection, probe, target))
            missing = http.post(f"/api/v1/{collection}", headers=steer, json=document(collection, probe, nowhere))
            try:
                expected = 201 if cred.can_write else 403
                assert (foreign.status_code, missing.status_code) == (expected, expected), (foreign.text, missing.text)
                if expected == 201:
                    assert foreign.json()["data"]["attributes"]["name"] == "Bravo probe"
                else:
                    same_answer(foreign, missing)
                assert_leaks_nothing(world, foreign, allowed=(target,))
                assert_leaks_nothing(world, missing)
            finally:
                for record_id in (target, nowhere):  # keep B empty for the list cases
                    with client(world.server, world.b.tokens["admin"]) as admin:
                        admin.delete(f"/api/v1/{collection}/{record_id}")
            a_record_is_untouched(world, collection)
            return
    assert foreign.status_code == expected, foreign.text
    same_answer(foreign, missing)
    assert_leaks_nothing(world, foreign)
    a_record_is_untouched(world, collection)


@pytest.mark.parametrize("credential", [*B_CREDENTIALS, "none", "garbage", "forged"])
def test_foreign_tenant_sync_socket_is_refused_before_accepting(world: World, credential: str) -> None:
    if credential in world.b_credentials:
        token: str | None = world.b_credentials[credential].token
        expected = 403
    else:
        # A token signed with another secret but claiming A's admin must not get in either.
        token = {"none": None, "garbage": "x.y", "forged": _forged_token(world)}[credential]
        expected = 401
    status, body = sync_handshake(world.server, world.a.id, token)
    assert status == expected, body
    # A tenant that does not exist answers exactly the same: the refusal says nothing about A.
    assert sync_handshake(world.server, random_id(), token) == (status, body)
    assert_leaks_nothing(world, body)


def _forged_token(world: World) -> str:
    forger = replace(world.server.settings, secret_key="forger-" + "f" * 40)
    user = accounts.User("someone", world.a.id, "x@y.example", "admin", False, utcnow())
    token, _ = auth.issue_access_token(forger, user)
    return token


@pytest.mark.parametrize("credential", ["admin", "dispatcher", "field", "key-read-write", "key-read"])
def test_own_tenant_sync_socket_accepts_every_fleet_reader(world: World, credential: str) -> None:
    """The 403s above are about the tenant, not a broken credential: each opens B's own socket."""
    assert sync_handshake(world.server, world.b.id, world.b_credentials[credential].token)[0] == 101


def test_positions_only_api_key_cannot_open_the_fleet_document(world: World) -> None:
    # A tracker's key may upload fixes; it must not read the fleet over the socket any more than over REST.
    token = world.b_credentials["key-positions"].token
    with client(world.server, token) as http:
        assert http.get("/api/v1/vehicles").status_code == 403
    assert sync_handshake(world.server, world.b.id, token)[0] == 403


# -- positions, events, reports, imports and the live socket ----------------------------------

VEHICLE_READS: dict[str, tuple[str, dict[str, str]]] = {
    "positions-json": ("/api/v1/positions", {"format": "json"}),
    "positions-geojson": ("/api/v1/positions", {"format": "geojson"}),
    "positions-csv": ("/api/v1/positions", {"format": "csv"}),
    "positions-gpx": ("/api/v1/positions", {"format": "gpx"}),
    "events": ("/api/v1/events", {}),
    "latest": ("/api/v1/positions/latest", {}),
    "trips": ("/api/v1/reports/trips", {}),
    "stops": ("/api/v1/reports/stops", {}),
}


def _neutral(response: httpx.Response, *ids: str) -> tuple[int, str | None, str]:
    """Status, type and body with the ids the caller chose (and GPX creation times) blanked out."""
    body = response.text
    for record_id in ids:
        body = body.replace(record_id, "<id>")
    body = re.sub(r"<metadata>.*?</metadata>", "<metadata/>", body, flags=re.S)
    return response.status_code, response.headers.get("content-type"), body


@pytest.mark.parametrize("credential", B_CREDENTIALS)
@pytest.mark.parametrize("endpoint", VEHICLE_READS)
def test_foreign_tenant_position_reads_are_indistinguishable_from_a_missing_vehicle(
    world: World, endpoint: str, credential: str
) -> None:
    cred = world.b_credentials[credential]
    path, params = VEHICLE_READS[endpoint]
    target, nowhere = world.a_records["vehicles"], random_id()
    with client(world.server, cred.token) as http:
        foreign = http.get(path, params={**params, **world.window, "vehicle_id": target, "tenant": world.a.id},
                           headers={"X-Tenant-Id": world.a.id})
        missing = http.get(path, params={**params, **world.window, "vehicle_id": nowhere, "tenant": world.a.id},
                           headers={"X-Tenant-Id": world.a.id})
    if not cred.can_read:
        assert foreign.status_code == 403, foreign.text
    else:
        assert foreign.status_code in (200, 404), foreign.text
    assert _neutral(foreign, target, world.a.id) == _neutral(missing, nowhere, world.a.id)
    assert_leaks_nothing(world, foreign, allowed=(target, world.a.id))  # B named them itself


@pytest.mark.parametrize("credential", B_CREDENTIALS)
def test_foreign_tenant_lists_of_positions_and_events_hold_nothing_of_a(world: World, credential: str) -> None:
    cred = world.b_credentials[credential]
    with client(world.server, cred.token) as http:
        for path in ("/api/v1/positions", "/api/v1/events", "/api/v1/positions/latest"):
            response = http.get(path, params={**world.window, "tenant": world.a.id})
            assert response.status_code == (200 if cred.can_read else 403), response.text
            if cred.can_read:
                assert response.json()["data"] == [], response.text
            assert_leaks_nothing(world, response, allowed=(world.a.id,))


def _a_position_count(world: World) -> int:
    with client(world.server, world.a.tokens["dispatcher"]) as http:
        response = http.get("/api/v1/positions", params={**world.window, "vehicle_id": world.a_records["vehicles"],
                                                         "format": "geojson"})
    assert response.status_code == 200, response.text
    return len(response.json()["features"])


@pytest.mark.parametrize("credential", B_CREDENTIALS)
def test_foreign_tenant_cannot_place_positions_on_a_tenant_a_vehicle(world: World, credential: str) -> None:
    cred = world.b_credentials[credential]
    target, nowhere = world.a_records["vehicles"], random_id()
    before = _a_position_count(world)
    fix_time = int(time.time()) - 30
    gpx = ('<?xml version="1.0"?><gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1">'
           f'<trk><trkseg><trkpt lat="52.52" lon="13.30"><time>{_iso(fix_time)}</time></trkpt>'
           '</trkseg></trk></gpx>')
    with client(world.server, cred.token) as http:
        def ingest(**key: str) -> httpx.Response:
            return http.post("/api/v1/positions", json={"positions": [
                {**key, "fix_time": fix_time, "lat": 52.52, "lon": 13.30}]})

        pairs = [
            (ingest(vehicle_id=target), ingest(vehicle_id=nowhere), (target, nowhere)),
            (ingest(device_id="imei-alpha-0017"), ingest(device_id="imei-nobody-0001"),
             ("imei-alpha-0017", "imei-nobody-0001")),
            (http.post("/api/v1/import/gpx", params={"vehicle_id": target}, content=gpx),
             http.post("/api/v1/import/gpx", params={"vehicle_id": nowhere}, content=gpx), (target, nowhere)),
        ]
    allowed = credential != "key-read"  # users may upload fixes, and keys with the positions or write scope
    for foreign, missing, (named, other) in pairs:
        if allowed:
            assert foreign.status_code in (200, 404), foreign.text
            if foreign.status_code == 200:
                assert foreign.json()["accepted"] == 0, foreign.text
        else:
            assert foreign.status_code == 403, foreign.text
        assert _neutral(foreign, named) == _neutral(missing, other)
        assert_leaks_nothing(world, foreign, allowed=(named,))
    assert _a_position_count(world) == before


@pytest.mark.parametrize("credential", B_CREDENTIALS)
def test_foreign_tenant_geojson_import_never_touches_tenant_a(world: World, credential: str) -> None:
    cred = world.b_credentials[credential]
    target = world.a_records["geofences"]
    feature = {"type": "Feature", "id": target, "properties": {"name": "Bravo import"},
               "geometry": attributes("geofences", "x")["geometry"]}
    with client(world.server, cred.token) as http:
        response = http.post("/api/v1/import/geojson", content=json.dumps(feature),
                             headers={"X-Tenant-Id": world.a.id})
    try:
        if cred.can_write:
            assert response.status_code == 201, response.text
            assert response.json()["created"] == [{"index": 0, "type": "geofences", "id": target}]
        else:
            assert response.status_code == 403, response.text
        assert_leaks_nothing(world, response, allowed=(target,))
    finally:
        with client(world.server, world.b.tokens["admin"]) as admin:
            admin.delete(f"/api/v1/geofences/{target}")  # B's own record of that id; keeps B empty
    a_record_is_untouched(world, "geofences")


@pytest.mark.parametrize("credential", [*B_CREDENTIALS, "none", "garbage"])
def test_live_socket_of_tenant_b_never_carries_tenant_a_positions(world: World, credential: str) -> None:
    cred = world.b_credentials.get(credential)
    token = cred.token if cred is not None else {"none": None, "garbage": "x.y"}[credential]
    if cred is None or not cred.can_read:
        status, body = ws_handshake(world.server, "/api/v1/live", token, tenant=world.a.id)
        assert status == (403 if cred is not None else 401), body
        assert_leaks_nothing(world, body)
        return
    assert token is not None
    url = f"ws://127.0.0.1:{world.server.port}/api/v1/live?" + urlencode({"token": token, "tenant": world.a.id})
    probe = create(world.server, world.b.tokens["admin"], "vehicles", attributes("vehicles", "Bravo live probe"))
    try:
        with ws_connect(url, open_timeout=10) as live:
            assert json.loads(live.recv(timeout=10)) == {"type": "ready"}
            fix_time = int(time.time() * 1000) - 5000  # Unix ms: a new fix on every run
            for tenant, vehicle in ((world.a, world.a_records["vehicles"]), (world.b, probe)):
                with client(world.server, tenant.tokens["dispatcher"]) as http:
                    sent = http.post("/api/v1/positions", json={"positions": [
                        {"vehicle_id": vehicle, "fix_time": fix_time, "lat": 52.53, "lon": 13.39}]})
                assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
            # B's own fix was sent after A's: everything before it has been delivered by then.
            frames: list[str] = []
            while probe not in "".join(frames):
                frames.append(str(live.recv(timeout=10)))
            assert_leaks_nothing(world, "\n".join(frames))
    finally:
        with client(world.server, world.b.tokens["admin"]) as admin:
            admin.delete(f"/api/v1/vehicles/{probe}")


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- signing in ---------------------------------------------------------------------------------


async def _resolve(world: World, token: str) -> auth.Principal:
    db = await open_database(world.server.settings.database_url)
    try:
        return await auth.resolve_token(db, world.server.settings, token)
    finally:
        await db.close()


@pytest.mark.parametrize("role", ["admin", "dispatcher", "field"])
def test_signing_in_as_a_tenant_b_user_only_ever_yields_tenant_b_tokens(world: World, role: str) -> None:
    with client(world.server) as http:
        # Extra fields naming tenant A are ignored: the tenant comes from the account.
        login = http.post("/api/v1/auth/token", json={"email": world.b.emails[role], "password": PASSWORD,
                                                      "tenant": world.a.id, "customer_id": world.a.id})
        assert login.status_code == 200, login.text
        assert_leaks_nothing(world, login)
        refreshed = http.post("/api/v1/auth/token", json={"grant_type": "refresh_token",
                                                          "refresh_token": login.json()["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
    for token in (login.json()["access_token"], refreshed.json()["access_token"]):
        principal = asyncio.run(_resolve(world, token))
        assert (principal.customer_id, principal.role) == (world.b.id, role)
        assert sync_handshake(world.server, world.a.id, token)[0] == 403
        with client(world.server, token) as http:
            assert http.get(f"/api/v1/vehicles/{world.a_records['vehicles']}").status_code == 404


def test_wrong_password_for_a_b_user_says_nothing_about_a(world: World) -> None:
    with client(world.server) as http:
        wrong = http.post("/api/v1/auth/token", json={"email": world.b.emails["field"], "password": "not it at all"})
        unknown = http.post("/api/v1/auth/token", json={"email": "nobody@nowhere.example", "password": "whatever1"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.text == unknown.text
    assert_leaks_nothing(world, wrong)


def test_public_endpoints_name_no_record_of_any_tenant(world: World) -> None:
    with client(world.server) as http:
        for path in ("/health", "/api/openapi.json", "/metrics"):
            response = http.get(path)
            assert response.status_code == 200, (path, response.text)
            # /metrics labels loaded rooms by tenant id (an operator endpoint), never with record data.
            secrets = [s for s in world.secrets if s != world.a.id] if path == "/metrics" else world.secrets
            leaked = [s for s in secrets if s.lower() in response.text.lower()]
            assert not leaked, (path, leaked)


def test_every_route_of_the_app_is_covered_by_this_walk(world: World) -> None:
    """A new endpoint must join the walk above (or be deliberately public) before it ships."""
    walked = {"/api/v1/{collection}", "/api/v1/{collection}/{record_id}", "/sync/{tenant_id}", "/api/v1/live",
              *(path for path, _ in VEHICLE_READS.values()), "/api/v1/positions", "/api/v1/import/gpx",
              "/api/v1/import/geojson"}
    public = {"/health", "/metrics", "/api/openapi.json", "/api/v1/auth/token",
              "/api/v1/osmand"}  # OsmAnd clients send no token: the registered device id alone places a fix
    elsewhere = {"/admin"}  # tests/server/test_admin_security.py walks the admin pages per tenant and role
    paths = {getattr(route, "path", "") for route in create_app(world.server.settings).routes}
    assert paths - walked - public - elsewhere == set(), "add these endpoints to the tenant isolation walk"


# -- inside tenant A: roles, scopes, revocation, disabling -------------------------------------


def _writes(http: httpx.Client, collection: str, record_id: str) -> list[httpx.Response]:
    return [
        http.post(f"/api/v1/{collection}", json=document(collection, attributes(collection, "Not allowed"))),
        http.patch(f"/api/v1/{collection}/{record_id}", json=document(collection, {"notes": "no"}, record_id)),
        http.delete(f"/api/v1/{collection}/{record_id}"),
    ]


@pytest.mark.parametrize("who", ["field", "read-only key"])
@pytest.mark.parametrize("collection", COLLECTIONS)
def test_read_only_roles_and_scopes_read_but_every_write_is_403(world: World, collection: str, who: str) -> None:
    token = world.a.tokens["field"] if who == "field" else world.a_read_key
    record_id = world.a_records[collection]
    with client(world.server, token) as http:
        listed = http.get(f"/api/v1/{collection}")
        assert listed.status_code == 200, listed.text
        assert record_id in {r["id"] for r in listed.json()["data"]}
        one = http.get(f"/api/v1/{collection}/{record_id}")
        assert one.status_code == 200, one.text
        assert one.json()["data"]["attributes"] == world.a_attributes[collection]
        for response in _writes(http, collection, record_id):
            assert response.status_code == 403, response.text
            assert response.json()["errors"][0]["status"] == "403"
    a_record_is_untouched(world, collection)
    with client(world.server, world.a.tokens["dispatcher"]) as http:
        names = {r["attributes"]["name"] for r in http.get(f"/api/v1/{collection}").json()["data"]}
    assert "Not allowed" not in names


async def _new_key(world: World, scopes: list[str]) -> tuple[str, str]:
    db = await open_database(world.server.settings.database_url)
    try:
        key, secret = await accounts.create_api_key(db, world.a.id, "short-lived", scopes, role="dispatcher")
        return key.id, secret
    finally:
        await db.close()


async def _revoke(world: World, key_id: str) -> None:
    db = await open_database(world.server.settings.database_url)
    try:
        await accounts.revoke_api_key(db, world.a.id, key_id)
    finally:
        await db.close()


def test_revoked_api_key_is_refused_with_401_on_the_next_request(world: World) -> None:
    key_id, secret = asyncio.run(_new_key(world, ["read", "write"]))
    with client(world.server, secret) as http:
        assert http.get("/api/v1/vehicles").status_code == 200
        assert sync_handshake(world.server, world.a.id, secret)[0] == 101
        asyncio.run(_revoke(world, key_id))
        for response in (http.get("/api/v1/vehicles"), *_writes(http, "vehicles", world.a_records["vehicles"])):
            assert response.status_code == 401, response.text
    assert sync_handshake(world.server, world.a.id, secret)[0] == 401
    a_record_is_untouched(world, "vehicles")


async def _user(world: World, *, disable: str | None = None) -> tuple[str, str]:
    db = await open_database(world.server.settings.database_url)
    try:
        if disable is not None:
            await accounts.disable_user(db, disable)
            return disable, ""
        email = f"soon-gone-{random_id()[:8]}@alpha-haulage.example"
        user = await accounts.create_user(db, email, PASSWORD, "dispatcher", world.a.id)
        token, _ = auth.issue_access_token(world.server.settings, user, ttl=3600)
        return user.id, token
    finally:
        await db.close()


def test_disabled_user_is_refused_on_the_next_request_although_the_token_has_not_expired(world: World) -> None:
    user_id, token = asyncio.run(_user(world))
    with client(world.server, token) as http:
        assert http.get("/api/v1/vehicles").status_code == 200
        assert sync_handshake(world.server, world.a.id, token)[0] == 101
        asyncio.run(_user(world, disable=user_id))
        for response in (http.get("/api/v1/vehicles"), *_writes(http, "vehicles", world.a_records["vehicles"])):
            assert response.status_code == 403, response.text
            assert response.json()["errors"][0]["title"] == "account disabled"
    assert sync_handshake(world.server, world.a.id, token)[0] == 403
    a_record_is_untouched(world, "vehicles")


# -- Postgres: row-level security backs the application ----------------------------------------


async def _rls_probe(world: World) -> None:
    db = await open_database(world.server.settings.database_url)
    a, b = world.a.id, world.b.id
    try:
        async with db.transaction(customer_id=b) as tx:
            for table in (*COLLECTIONS, "crdt_updates", "crdt_snapshots", "projection_state", "api_keys"):
                rows = await tx.fetch(f"SELECT customer_id FROM {table}")
                assert {row["customer_id"] for row in rows} <= {b}, table
                assert await tx.fetchval(f"SELECT count(*) FROM {table} WHERE customer_id = ?", (a,)) == 0, table
            assert await tx.execute("UPDATE vehicles SET name = 'hijacked' WHERE customer_id = ?", (a,)) == 0
            assert await tx.execute("DELETE FROM crdt_updates WHERE customer_id = ?", (a,)) == 0
            for statement, params in (
                ("INSERT INTO vehicles (customer_id, id, name) VALUES (?, ?, ?)", (a, random_id(), "planted")),
                ("INSERT INTO crdt_updates (customer_id, payload) VALUES (?, ?)", (a, b"\x00\x00")),
            ):
                with pytest.raises(PermissionDenied):
                    async with tx.savepoint():
                        await tx.execute(statement, params)
            # Nor can B hand one of its own rows over to A (rolled back with the savepoint).
            with pytest.raises(PermissionDenied):
                async with tx.savepoint():
                    own = random_id()
                    await tx.execute("INSERT INTO vehicles (customer_id, id, name) VALUES (?, ?, 'mine')", (b, own))
                    await tx.execute("UPDATE vehicles SET customer_id = ? WHERE id = ?", (a, own))
        # Outside any tenant (fail closed): no fleet data at all.
        async with db.transaction() as tx:
            for table in (*COLLECTIONS, "crdt_updates"):
                assert await tx.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # Inside A's own transaction the rows are there, and nothing was planted or changed.
        async with db.transaction(customer_id=a) as tx:
            for collection in COLLECTIONS:
                rows = await tx.fetch(f"SELECT id, name FROM {collection} WHERE customer_id = ?", (a,))
                assert [(r["id"], r["name"]) for r in rows] == [(world.a_records[collection], A_NAMES[collection])]
            assert await tx.fetchval("SELECT count(*) FROM crdt_updates WHERE customer_id = ?", (a,)) >= 4
    finally:
        await db.close()


def test_postgres_row_level_security_hides_and_protects_tenant_a_from_b(world: World) -> None:
    if world.dialect != "postgres":
        pytest.skip("row-level security exists on Postgres only; SQLite relies on the application checks")
    asyncio.run(_rls_probe(world))
