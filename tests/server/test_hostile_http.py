"""Hostile input at the HTTP boundary (issue #12), through a real uvicorn server on SQLite and on
Postgres: every body is capped while it streams in, JSON is parsed under the value policy
(sync/values.py) before anything touches a tenant document, and nothing a client sends turns
into a 500, a dropped connection or a wedged room."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from server_stub.http_util import MAX_PAGE_NUMBER, MAX_RECORD_BODY_BYTES, MAX_TOKEN_BODY_BYTES
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for

from .conftest import backend_url
from .fleet_http import attributes, client, create, document, random_id

# Writes that would have wedged a room hang rather than fail: a short timeout turns that into a failure.
WRITE_TIMEOUT = 10.0
HOSTILE_BACKENDS = ["sqlite", pytest.param("partitioned", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=HOSTILE_BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(settings_for(backend_url(request, tmp_path_factory.mktemp("server")))) as live:
        yield live


@pytest.fixture
def tenant(server: LiveServer) -> Tenant:
    """A tenant of its own per test, so a room one test wedged cannot mislead the next."""
    return provision_tenant(server.settings, f"Hostile {random_id()[:8]}")


@pytest.fixture
def http(server: LiveServer, tenant: Tenant) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=WRITE_TIMEOUT,
                      headers={"Authorization": f"Bearer {tenant.tokens['dispatcher']}"}) as session:
        yield session


@pytest.fixture(scope="module")
def pg_server(pg_url_partitioned: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(pg_url_partitioned)) as live:
        yield live


def post_raw(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The single JSON:API error of a refusal with `status`, which must name a reason."""
    assert response.status_code == status, response.text
    errors: list[dict[str, Any]] = response.json()["errors"]
    assert len(errors) == 1 and errors[0]["status"] == str(status) and errors[0]["detail"], errors
    return errors[0]


def assert_tenant_still_writes(http: httpx.Client, collection: str = "drivers") -> None:
    """The tenant's room still commits: a later valid write answers 201 and can be read back."""
    record_id = random_id()
    response = http.post(f"/api/v1/{collection}",
                         json=document(collection, attributes(collection, "After the attack"), record_id))
    assert response.status_code == 201, response.text
    assert http.get(f"/api/v1/{collection}/{record_id}").status_code == 200


def nest(levels: int, leaf: object) -> object:
    """`leaf` inside `levels` lists."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def names(http: httpx.Client, collection: str) -> list[str]:
    response = http.get(f"/api/v1/{collection}")
    assert response.status_code == 200, response.text
    return [item["attributes"]["name"] for item in response.json()["data"]]


# -- values the document or the database cannot hold ---------------------------------------------------


@pytest.mark.postgres
def test_a_nul_in_a_driver_name_is_refused_on_postgres_and_the_server_restarts_and_reads(
        pg_url_partitioned: str) -> None:
    with LiveServer(settings_for(pg_url_partitioned)) as live:
        tenant = provision_tenant(live.settings, "Nul Freight")
        with client(live, tenant.tokens["dispatcher"]) as http:
            before = create(live, tenant.tokens["dispatcher"], "drivers", attributes("drivers", "Before"))
            hostile = document("drivers", attributes("drivers", "Ann\u0000Smith"))
            for response in (http.post("/api/v1/drivers", json=hostile),
                             http.patch(f"/api/v1/drivers/{before}", json=hostile)):
                error = error_of(response, 400)
                assert error["source"]["pointer"] == "/data/attributes/name" and "NUL" in error["detail"]
        live.restart()  # the projection catches up on start: nothing unstorable may be in the log
        with client(live, tenant.tokens["dispatcher"]) as http:
            assert names(http, "drivers") == ["Before"]
            assert_tenant_still_writes(http)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_lone_surrogate_in_a_rest_body_is_refused_and_the_tenant_keeps_writing(
        http: httpx.Client, server: LiveServer, tenant: Tenant, method: str) -> None:
    record_id = create(server, tenant.tokens["dispatcher"], "drivers", attributes("drivers", "Target"))
    # Python's json module would hand "\ud800" to pycrdt, which panics inside the room's write loop.
    body = b'{"data": {"type": "drivers", "attributes": {"name": "Ann \\ud800"}}}'
    path = "/api/v1/drivers" if method == "POST" else f"/api/v1/drivers/{record_id}"
    response = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert "surrogate" in error_of(response, 400)["detail"]
    assert_tenant_still_writes(http)
    assert sorted(names(http, "drivers")) == ["After the attack", "Target"]


@pytest.mark.parametrize("number", [2**64, 2**65, -(2**63) - 1])
def test_an_integer_beyond_64_bits_is_refused_with_its_pointer_and_the_tenant_keeps_writing(
        http: httpx.Client, number: int) -> None:
    # A field the schema does not know is kept as is, so no range check stands between it and pycrdt.
    body = json.dumps(document("vehicles", {"name": "Van", "odometer_m": number})).encode()  # exact digits
    error = error_of(post_raw(http, "/api/v1/vehicles", body), 400)
    assert error["source"]["pointer"] == "/data/attributes/odometer_m" and "64-bit" in error["detail"]
    assert_tenant_still_writes(http, "vehicles")
    assert names(http, "vehicles") == ["After the attack"]


DEEP = b"[" * 5000 + b"]" * 5000  # past Python's recursion limit and orjson's 1,024 levels; 10 kB


@pytest.mark.parametrize("path", ["/api/v1/drivers", "/api/v1/drivers/{id}", "/api/v1/auth/token"])
def test_deeply_nested_json_is_answered_400(http: httpx.Client, server: LiveServer, tenant: Tenant,
                                            path: str) -> None:
    record_id = create(server, tenant.tokens["dispatcher"], "drivers", attributes("drivers", "Target"))
    method = "PATCH" if "{id}" in path else "POST"
    for body in (b'{"data": ' + DEEP + b"}", b'{"email": ' + DEEP + b"}"):
        response = http.request(method, path.format(id=record_id), content=body,
                                headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert "depth" in response.json()["errors"][0]["detail"]
    # Deep enough for the policy (16 levels), far from any parser limit: refused with its pointer.
    nested = document("drivers", attributes("drivers", "Deep", notes={"a": nest(18, 1)}))
    error = error_of(post_raw(http, "/api/v1/drivers", json.dumps(nested).encode()), 400)
    assert error["source"]["pointer"].startswith("/data/attributes/notes/a/0/0/0") and "deeper" in error["detail"]


def test_a_5000_digit_integer_is_answered_400(http: httpx.Client) -> None:
    body = b'{"data": {"type": "vehicles", "attributes": {"name": "Van", "speed_limit_kph": 9' + b"9" * 4999 + b"}}}"
    assert "not valid JSON" in error_of(post_raw(http, "/api/v1/vehicles", body), 400)["detail"]
    assert_tenant_still_writes(http, "vehicles")


@pytest.mark.parametrize("number", [str(2**63 - 1), str(2**62), "9" * 30])
def test_a_huge_page_number_is_answered_400(http: httpx.Client, number: str) -> None:
    response = http.get("/api/v1/vehicles", params={"page[number]": number, "page[size]": "1000"})
    assert "page[number]" in error_of(response, 400)["detail"]
    # The deepest page allowed still answers, empty.
    last = http.get("/api/v1/vehicles", params={"page[number]": str(MAX_PAGE_NUMBER), "page[size]": "1000"})
    assert last.status_code == 200 and last.json()["data"] == [], last.text


# -- record ids and headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("record_id", ["van\r\n7", "van 7", "Fahrzeug-€", "wagen-ü", "tab\there", "", "-lead", 42])
def test_record_ids_that_cannot_travel_in_a_url_or_header_are_refused_before_the_commit(
        http: httpx.Client, record_id: object) -> None:
    body = {"data": {"type": "vehicles", "id": record_id, "attributes": attributes("vehicles", "Odd id")}}
    error = error_of(http.post("/api/v1/vehicles", json=body), 400)
    assert error["source"]["pointer"] == "/data/id" and "record id" in error["detail"]
    assert names(http, "vehicles") == []  # refused up front: nothing was committed
    # Every character an id may hold makes a Location that leads back to the record.
    record_id = "Van-7_b.2:x~y"
    response = http.post("/api/v1/vehicles", json=document("vehicles", attributes("vehicles", "Odd"), record_id))
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert location.endswith("/api/v1/vehicles/Van-7_b.2:x~y")
    assert http.get(location).json()["data"]["id"] == record_id


@pytest.mark.postgres
def test_a_nul_in_a_record_url_answers_404_on_postgres(pg_server: LiveServer) -> None:
    tenant = provision_tenant(pg_server.settings, "Url Freight")
    with client(pg_server, tenant.tokens["dispatcher"]) as http:
        for method in ("GET", "PATCH", "DELETE"):
            response = http.request(method, "/api/v1/vehicles/van%00x",
                                    json=document("vehicles", {"name": "x"}) if method == "PATCH" else None)
            assert error_of(response, 404)["title"] == "not found"


@pytest.mark.parametrize("fmt", ["gpx", "csv"])
def test_an_export_for_a_hostile_vehicle_id_gets_an_rfc_6266_content_disposition(
        http: httpx.Client, fmt: str) -> None:
    vehicle_id = 'Lkw "Süd";\r\nX-Evil: 1 €'
    response = http.get("/api/v1/positions", params={"vehicle_id": vehicle_id, "format": fmt})
    assert response.status_code == 200, response.text
    assert "x-evil" not in response.headers
    disposition = response.headers["content-disposition"]
    assert disposition.isascii() and disposition.startswith("attachment; ")
    fallback = re.search(r'; filename="([^"]*)"', disposition)
    exact = re.search(r"; filename\*=UTF-8''(\S+)$", disposition)
    assert fallback and exact, disposition
    assert re.fullmatch(r"positions-Lkw_Sud_X-Evil_1_-\d{8}T\d{6}Z\." + fmt, fallback[1]), fallback[1]
    assert re.fullmatch(re.escape(f"positions-{vehicle_id}-") + r"\d{8}T\d{6}Z\." + fmt, unquote(exact[1]))


@pytest.mark.postgres
def test_a_nul_in_a_vehicle_id_parameter_is_answered_400_on_postgres(pg_server: LiveServer) -> None:
    tenant = provision_tenant(pg_server.settings, "Param Freight")
    with client(pg_server, tenant.tokens["dispatcher"]) as http:
        for path in ("/api/v1/positions", "/api/v1/events"):
            response = http.get(path, params={"vehicle_id": "van\x00", "format": "csv"})
            assert "NUL" in error_of(response, 400)["detail"], path


# -- bodies over the cap ------------------------------------------------------------------------------------


def _http_request(server: LiveServer, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head.encode())
    return sock


def _read_status(sock: socket.socket) -> tuple[int, bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    status = int(received.split(b" ", 2)[1])
    return status, received


def test_a_token_request_declaring_a_huge_body_is_refused_before_it_is_sent(server: LiveServer) -> None:
    sock = _http_request(server, "POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 f"Content-Length: {96 * 1024 * 1024}\r\n\r\n")
    with sock:
        sock.sendall(b'{"email": "')
        # Not one more byte is sent: the answer must come from the Content-Length alone.
        status, received = _read_status(sock)
    assert status == 413, received
    assert str(MAX_TOKEN_BODY_BYTES).encode() in received


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def test_a_streamed_96_mb_token_request_is_refused_without_being_buffered(server: LiveServer) -> None:
    """Chunked, so no Content-Length warns the server: it must count while reading and stop.

    LiveServer runs uvicorn in this process, so this process's peak RSS is the server's."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM (the peak RSS) to the current RSS
    baseline = _vm_kib("VmHWM")
    chunk = b"a" * (1024 * 1024)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sock = _http_request(server, "POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n")
    sent = 0
    with sock:
        try:
            for _ in range(96):
                sock.sendall(frame)
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: the rest was never wanted
        status, received = _read_status(sock)
    assert status == 413, received[:300]
    growth_mib = (_vm_kib("VmHWM") - baseline) / 1024
    assert growth_mib < 24, f"peak RSS grew by {growth_mib:.0f} MiB while {sent >> 20} MiB were sent"


def test_a_rest_body_over_the_cap_is_refused_with_413(http: httpx.Client) -> None:
    padding = b" " * MAX_RECORD_BODY_BYTES  # valid JSON, merely too big
    body = b'{"data": {"type": "drivers", "attributes": {"name": "Padded"}}' + padding + b"}"
    error = error_of(post_raw(http, "/api/v1/drivers", body), 413)
    assert str(MAX_RECORD_BODY_BYTES) in error["detail"]
    assert names(http, "drivers") == []


@pytest.mark.postgres
def test_a_nul_in_a_token_request_is_answered_400_on_postgres(pg_server: LiveServer) -> None:
    with httpx.Client(base_url=pg_server.url, timeout=WRITE_TIMEOUT) as http:
        as_json = http.post("/api/v1/auth/token", json={"email": "a\u0000@x.example", "password": "pw"})
        as_form = http.post("/api/v1/auth/token", data={"email": "a\u0000@x.example", "password": "pw"})
    for response in (as_json, as_form):
        assert "NUL" in error_of(response, 400)["detail"]


# -- imports and position batches ---------------------------------------------------------------------------


def _vehicle(http: httpx.Client, name: str = "Tracker") -> str:
    response = http.post("/api/v1/vehicles", json=document("vehicles", attributes("vehicles", name)))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def test_a_position_batch_refuses_only_the_fix_with_an_unstorable_attribute(http: httpx.Client) -> None:
    vehicle_id = _vehicle(http)
    now = time.time()
    good = {"vehicle_id": vehicle_id, "fix_time": now - 60, "lat": 52.5, "lon": 13.4}
    batch = [{**good, "fix_time": now - 120, "attributes": {"note": "a\u0000b"}}, good,
             {**good, "fix_time": now - 30, "attributes": {"deep": nest(18, "x")}}]
    response = http.post("/api/v1/positions", json={"positions": batch})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1 and result["duplicates"] == 0
    assert [r["index"] for r in result["rejected"]] == [0, 2]
    assert "/attributes/note" in result["rejected"][0]["reason"]  # the fix is named by "index"
    assert "NUL" in result["rejected"][0]["reason"]
    assert "deeper" in result["rejected"][1]["reason"]
    stored = http.get("/api/v1/positions", params={"vehicle_id": vehicle_id}).json()["data"]
    assert len(stored) == 1


def test_a_geojson_import_refuses_only_the_features_it_cannot_store(http: httpx.Client) -> None:
    square = {"type": "Polygon", "coordinates": [[[13.3, 52.5], [13.4, 52.5], [13.4, 52.6], [13.3, 52.5]]]}
    features = [
        {"type": "Feature", "geometry": square, "properties": {"name": "Depot\u0000"}},
        {"type": "Feature", "id": "depot\n2", "geometry": square, "properties": {"name": "Bad id"}},
        {"type": "Feature", "geometry": square, "properties": {"name": "Wide", "speed_limit_kph": 2**64 - 1}},
        {"type": "Feature", "id": "depot-ok", "geometry": square, "properties": {"name": "Fine"}},
    ]
    response = http.post("/api/v1/import/geojson", json={"type": "FeatureCollection", "features": features})
    assert response.status_code == 201, response.text
    result = response.json()
    assert [item["id"] for item in result["created"]] == ["depot-ok"]
    assert [(r["index"], r["pointer"]) for r in result["rejected"]] == [
        (0, "/features/0/properties/name"), (1, "/features/1/id"), (2, "/features/2/properties/speed_limit_kph")]
    assert names(http, "geofences") == ["Fine"]
    assert_tenant_still_writes(http, "geofences")


def test_rest_errors_carry_the_pointer_into_the_request_document(http: httpx.Client) -> None:
    body = document("drivers", attributes("drivers", "Keys", notes={"bad\u0001key": 1}))
    error = error_of(http.post("/api/v1/drivers", json=body), 400)
    assert error["source"]["pointer"] == "/data/attributes/notes/bad\u0001key"
    assert error["title"] == "value not allowed"



def test_a_position_batch_refuses_an_unstorable_device_id_beside_a_known_vehicle(http: httpx.Client) -> None:
    vehicle_id = _vehicle(http, "Tracker two")
    now = time.time()
    batch = [{"vehicle_id": vehicle_id, "device_id": "unit\u0000x", "fix_time": now - 60, "lat": 52.5, "lon": 13.4},
             {"vehicle_id": vehicle_id, "fix_time": now - 50, "lat": 52.5, "lon": 13.4}]
    result = http.post("/api/v1/positions", json={"positions": batch}).json()
    assert result["accepted"] == 1
    assert [r["index"] for r in result["rejected"]] == [0] and "NUL" in result["rejected"][0]["reason"]


@pytest.mark.parametrize("path", ["/api/v1/positions", "/api/v1/osmand", "/api/v1/vehicles"])
def test_options_and_unsupported_methods_name_every_method_the_path_has(http: httpx.Client, path: str) -> None:
    response = http.request("PUT", path, content=b"{}")
    assert response.status_code == 405
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed, allowed
