"""The JSON:API REST resources, the OpenAPI document, /health and /metrics, through a real
uvicorn server on SQLite and on Postgres."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest
import shapely
from starlette.routing import Route
from websockets.sync.client import connect as ws_connect

from server_stub import __version__, rest
from server_stub.app import create_app
from server_stub.http_auth import token_endpoint
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from sync.schema import COLLECTIONS as SCHEMA_COLLECTIONS

from .fleet_http import (
    BACKENDS,
    COLLECTIONS,
    METRIC_LINE,
    attributes,
    client,
    create,
    document,
    metrics,
    module_database_url,
    random_id,
    wait_until,
)


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings)


@pytest.fixture
def http(live: LiveServer, tenant: Tenant) -> Iterator[httpx.Client]:
    with client(live, tenant.tokens["dispatcher"]) as session:
        yield session


@pytest.fixture(scope="module", params=BACKENDS)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[LiveServer, Tenant]]:
    """One server and tenant for the many read-only or refused-write cases (nothing gets written)."""
    with LiveServer(settings_for(module_database_url(request, tmp_path_factory))) as server:
        yield server, provision_tenant(server.settings)


@pytest.fixture
def shared_http(shared: tuple[LiveServer, Tenant]) -> Iterator[httpx.Client]:
    server, tenant = shared
    with client(server, tenant.tokens["dispatcher"]) as session:
        yield session


def errors_of(response: httpx.Response, status: int) -> list[dict[str, Any]]:
    """The JSON:API errors of a response that must have `status`; each names its status and a reason."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    errors: list[dict[str, Any]] = response.json()["errors"]
    assert errors
    for error in errors:
        assert error["status"] == str(status)
        assert error["title"] and error["detail"]
    return errors


# -- paging ---------------------------------------------------------------------------------


def test_paging_walks_25_records_by_links_with_the_total(live: LiveServer, tenant: Tenant,
                                                          http: httpx.Client) -> None:
    created = {create(live, tenant.tokens["dispatcher"], "vehicles", attributes("vehicles", f"Van {n:02d}"))
               for n in range(1, 26)}
    first = http.get("/api/v1/vehicles", params={"page[size]": 10}).json()
    assert first["meta"]["total"] == 25
    assert first["meta"]["page"] == {"number": 1, "size": 10}
    assert "prev" not in first["links"]
    pages, body = [first], first
    while "next" in body["links"]:
        body = http.get(body["links"]["next"]).json()
        assert body["meta"]["total"] == 25
        assert "prev" in body["links"]
        pages.append(body)
    assert [len(p["data"]) for p in pages] == [10, 10, 5]
    assert [p["meta"]["page"]["number"] for p in pages] == [1, 2, 3]
    names = [r["attributes"]["name"] for p in pages for r in p["data"]]
    assert names == [f"Van {n:02d}" for n in range(1, 26)]  # ordered by name, nothing twice, nothing missed
    assert {r["id"] for p in pages for r in p["data"]} == created
    back = http.get(pages[2]["links"]["prev"]).json()
    assert back["data"] == pages[1]["data"]
    beyond = http.get("/api/v1/vehicles", params={"page[size]": 10, "page[number]": 4}).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 25 and "next" not in beyond["links"]
    default = http.get("/api/v1/vehicles").json()
    assert len(default["data"]) == 25 and "next" not in default["links"]


# -- filter[updated_since] ------------------------------------------------------------------


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ids(http: httpx.Client, collection: str, **params: Any) -> set[str]:
    response = http.get(f"/api/v1/{collection}", params=params)
    assert response.status_code == 200, response.text
    return {r["id"] for r in response.json()["data"]}


def test_updated_since_returns_only_records_changed_after_that_time(live: LiveServer, tenant: Tenant,
                                                                     http: httpx.Client) -> None:
    ids = [create(live, tenant.tokens["dispatcher"], "drivers", attributes("drivers", f"Driver {n}"))
           for n in range(3)]
    newest = max(_parse(r["attributes"]["updated_at"]) for r in http.get("/api/v1/drivers").json()["data"])
    since = max(datetime.now(UTC), newest + timedelta(milliseconds=1))
    wait_until(lambda: datetime.now(UTC) > since + timedelta(milliseconds=2))  # the edit lands strictly later
    changed = http.patch(f"/api/v1/drivers/{ids[1]}", json=document("drivers", {"phone": "+49 170 000"}, ids[1]))
    assert changed.status_code == 200, changed.text
    assert _parse(changed.json()["data"]["attributes"]["updated_at"]) >= since

    assert _ids(http, "drivers", **{"filter[updated_since]": _stamp(since)}) == {ids[1]}
    # The same instant written with another offset is the same filter (a time, not a string).
    berlin = since.astimezone(timezone(timedelta(hours=2)))
    assert _ids(http, "drivers", **{"filter[updated_since]": berlin.isoformat()}) == {ids[1]}
    assert _ids(http, "drivers", **{"filter[updated_since]": "2000-01-01"}) == set(ids)
    assert _ids(http, "drivers", **{"filter[updated_since]": _stamp(datetime.now(UTC) + timedelta(hours=1))}) == set()
    both = http.get("/api/v1/drivers", params={"filter[updated_since]": _stamp(since), "page[size]": 1}).json()
    assert both["meta"]["total"] == 1


def test_updated_since_with_whole_seconds_includes_later_edits_in_that_second(live: LiveServer, tenant: Tenant,
                                                                               http: httpx.Client) -> None:
    record_id = create(live, tenant.tokens["dispatcher"], "vehicles", attributes("vehicles", "Second hand"))
    updated_at = _parse(http.get(f"/api/v1/vehicles/{record_id}").json()["data"]["attributes"]["updated_at"])
    whole_second = updated_at.replace(microsecond=0)
    for spelling in (whole_second.isoformat().replace("+00:00", "Z"), whole_second.isoformat(),
                     whole_second.replace(tzinfo=None).isoformat()):  # a naive time means UTC
        assert record_id in _ids(http, "vehicles", **{"filter[updated_since]": spelling}), spelling


# -- filter[bbox] ---------------------------------------------------------------------------


def test_bbox_finds_a_route_that_crosses_the_box_without_a_vertex_inside(live: LiveServer, tenant: Tenant,
                                                                         http: httpx.Client) -> None:
    token = tenant.tokens["dispatcher"]

    def route(name: str, coordinates: list[list[float]]) -> str:
        return create(live, token, "routes", {"name": name, "geometry": {"type": "LineString",
                                                                        "coordinates": coordinates}})

    crossing = route("Straight through", [[0.0, 0.0], [10.0, 0.0]])
    # Its bounding box overlaps the query box, but the line itself runs around it.
    around = route("Around the box", [[2.0, -3.0], [8.0, -3.0], [8.0, 3.0]])
    far = route("Far away", [[100.0, 40.0], [101.0, 41.0]])
    box = {"filter[bbox]": "4,-1,6,1"}
    assert _ids(http, "routes", **box) == {crossing}
    assert _ids(http, "routes", **{"filter[bbox]": "7.5,1,9,4"}) == {around}
    assert _ids(http, "routes", **{"filter[bbox]": "-180,-90,180,90"}) == {crossing, around, far}
    assert http.get("/api/v1/routes", params=box).json()["meta"]["total"] == 1


BAD_QUERIES = [
    ("routes", {"filter[bbox]": "a,b,c,d"}, "filter[bbox]"),
    ("routes", {"filter[bbox]": "1,2,3"}, "4 numbers"),
    ("routes", {"filter[bbox]": "6,0,4,1"}, "filter[bbox]"),
    ("geofences", {"filter[bbox]": "0,-95,1,1"}, "WGS84"),
    ("geofences", {"filter[bbox]": "nan,0,1,1"}, "filter[bbox]"),
    ("vehicles", {"filter[bbox]": "0,0,1,1"}, "routes and geofences"),
    ("drivers", {"filter[updated_since]": "yesterday"}, "ISO 8601"),
    ("vehicles", {"filter[colour]": "red"}, "filter[colour]"),
    ("vehicles", {"page[size]": "0"}, "page[size]"),
    ("vehicles", {"page[size]": "1001"}, "page[size]"),
    ("vehicles", {"page[size]": "ten"}, "whole numbers"),
    ("vehicles", {"page[number]": "0"}, "page[number]"),
    ("vehicles", {"page[offset]": "5"}, "page[offset]"),
]


@pytest.mark.parametrize(("collection", "params", "reason"), BAD_QUERIES,
                         ids=[f"{c}-{next(iter(p))}={next(iter(p.values()))}" for c, p, _ in BAD_QUERIES])
def test_bad_filter_or_paging_is_a_400_that_says_why(shared_http: httpx.Client, collection: str,
                                                      params: dict[str, str], reason: str) -> None:
    (error,) = errors_of(shared_http.get(f"/api/v1/{collection}", params=params), 400)
    assert reason in error["detail"], error


# -- writes ---------------------------------------------------------------------------------


def test_post_of_another_type_is_409_and_writes_nothing(shared_http: httpx.Client) -> None:
    http = shared_http
    (error,) = errors_of(http.post("/api/v1/vehicles", json=document("drivers", {"name": "Misfiled"})), 409)
    assert error["source"]["pointer"] == "/data/type"
    (error,) = errors_of(http.post("/api/v1/vehicles", json={"data": {"attributes": {"name": "Untyped"}}}), 409)
    assert http.get("/api/v1/vehicles").json()["meta"]["total"] == 0
    assert http.get("/api/v1/drivers").json()["meta"]["total"] == 0


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"", b"[1, 2]", b'{"data": []}',
                                  b'{"data": {"type": "vehicles", "attributes": [1]}}'],
                         ids=["broken", "not-utf8", "empty", "array", "data-not-object", "attributes-not-object"])
def test_malformed_body_is_400_json_api(shared_http: httpx.Client, body: bytes) -> None:
    response = shared_http.post("/api/v1/vehicles", content=body,
                                headers={"content-type": "application/vnd.api+json"})
    errors_of(response, 400)
    assert shared_http.get("/api/v1/vehicles").json()["meta"]["total"] == 0


def test_client_chosen_id_is_honoured_and_a_duplicate_id_is_409(http: httpx.Client) -> None:
    chosen = random_id()
    created = http.post("/api/v1/vehicles", json=document("vehicles", {"name": "Chosen"}, chosen))
    assert created.status_code == 201, created.text
    assert created.json()["data"]["id"] == chosen
    assert created.headers["location"].endswith(f"/api/v1/vehicles/{chosen}")
    assert http.get(created.headers["location"]).json()["data"]["attributes"]["name"] == "Chosen"
    (error,) = errors_of(http.post("/api/v1/vehicles", json=document("vehicles", {"name": "Again"}, chosen)), 409)
    assert error["source"]["pointer"] == "/data/id"
    assert http.get(f"/api/v1/vehicles/{chosen}").json()["data"]["attributes"]["name"] == "Chosen"
    (error,) = errors_of(http.post("/api/v1/vehicles", json=document("vehicles", {"name": "Odd"}, 42)), 400)  # type: ignore[arg-type]
    assert error["source"]["pointer"] == "/data/id"


def test_422_reports_every_problem_with_a_pointer_per_field(http: httpx.Client) -> None:
    errors = errors_of(http.post("/api/v1/vehicles", json=document("vehicles", {"status": "flying"})), 422)
    by_pointer = {e["source"]["pointer"]: e["detail"] for e in errors}
    assert set(by_pointer) == {"/data/attributes/name", "/data/attributes/status"}
    assert "required" in by_pointer["/data/attributes/name"]
    assert "active, maintenance, retired" in by_pointer["/data/attributes/status"]
    assert http.get("/api/v1/vehicles").json()["meta"]["total"] == 0

    record_id = http.post("/api/v1/vehicles", json=document("vehicles", {"name": "Fine"})).json()["data"]["id"]
    errors = errors_of(http.patch(f"/api/v1/vehicles/{record_id}", json=document(
        "vehicles", {"name": None, "speed_limit_kph": "fast"}, record_id)), 422)
    assert {e["source"]["pointer"] for e in errors} == {"/data/attributes/name", "/data/attributes/speed_limit_kph"}
    assert http.get(f"/api/v1/vehicles/{record_id}").json()["data"]["attributes"]["name"] == "Fine"


def test_patch_and_delete_answer_404_and_409_as_json_api(http: httpx.Client) -> None:
    record_id = http.post("/api/v1/drivers", json=document("drivers", {"name": "Dora"})).json()["data"]["id"]
    other = random_id()
    (error,) = errors_of(http.patch(f"/api/v1/drivers/{record_id}",
                                    json=document("drivers", {"name": "Dee"}, other)), 409)
    assert error["source"]["pointer"] == "/data/id"
    errors_of(http.patch(f"/api/v1/drivers/{record_id}", json=document("vehicles", {"name": "Dee"}, record_id)), 409)
    errors_of(http.patch(f"/api/v1/drivers/{other}", json=document("drivers", {"name": "Dee"}, other)), 404)
    errors_of(http.get(f"/api/v1/drivers/{other}"), 404)
    errors_of(http.get("/api/v1/customers"), 404)
    assert http.delete(f"/api/v1/drivers/{record_id}").status_code == 204
    errors_of(http.delete(f"/api/v1/drivers/{record_id}"), 404)
    errors_of(http.get(f"/api/v1/drivers/{record_id}"), 404)


def test_missing_or_bad_token_is_401_json_api(shared: tuple[LiveServer, Tenant]) -> None:
    with client(shared[0]) as anonymous, client(shared[0], "x.y") as garbage:
        for session in (anonymous, garbage):
            errors_of(session.get("/api/v1/vehicles"), 401)
            errors_of(session.post("/api/v1/vehicles", json=document("vehicles", {"name": "x"})), 401)


# -- OpenAPI ----------------------------------------------------------------------------------

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _operations(routes: list[Any]) -> set[tuple[str, str]]:
    """(path template, method) of every HTTP route under /api/v1/, {collection} spelled out."""
    operations = set()
    for route in routes:
        path, methods = getattr(route, "path", ""), getattr(route, "methods", None)
        if not methods or not path.startswith("/api/v1/"):
            continue
        concrete = [path.replace("{collection}", c) for c in SCHEMA_COLLECTIONS] if "{collection}" in path else [path]
        operations |= {(_template(p), m.lower()) for p in concrete for m in methods if m != "HEAD"}
    return operations


def _openapi(server: LiveServer) -> dict[str, Any]:
    with client(server) as http:
        response = http.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    spec: dict[str, Any] = response.json()
    return spec


def _documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(_template(p), m) for p, item in spec["paths"].items() for m in item if m in HTTP_METHODS}


def test_openapi_document_is_well_formed_3_1_and_covers_the_fleet_resources(shared: tuple[LiveServer, Tenant]) -> None:
    spec = _openapi(shared[0])
    if importlib.util.find_spec("openapi_spec_validator") is not None:
        from openapi_spec_validator import validate  # type: ignore[import-not-found, unused-ignore]

        validate(spec)
    assert spec["openapi"].startswith("3.1.")
    assert spec["info"]["title"] and spec["info"]["version"]
    paths: dict[str, Any] = spec["paths"]
    assert all(p.startswith("/") for p in paths)
    missing = _operations([*rest.routes, Route("/api/v1/auth/token", token_endpoint, methods=["POST"])]) - _documented(
        spec)
    assert not missing, f"REST operations without an OpenAPI operation: {sorted(missing)}"
    for path, item in paths.items():
        path_level = item.get("parameters", [])
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation.get("responses")
            assert responses, (path, method)
            for code, answer in responses.items():
                assert re.fullmatch(r"[1-5](\d\d|XX)|default", code), (path, method, code)
                assert answer.get("description") is not None or "$ref" in answer, (path, method, code)
            declared = {p["name"] for p in [*path_level, *operation.get("parameters", [])] if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), (path, method)
        for parameter in path_level:
            assert parameter["in"] != "path" or parameter["required"] is True, (path, parameter)
    for ref in _refs(spec):
        assert _resolve(spec, ref) is not None, ref
    for collection in COLLECTIONS:
        schema = spec["components"]["schemas"][collection]["properties"]["attributes"]
        assert "name" in schema["required"]


def test_openapi_documents_every_api_route_the_app_serves(shared: tuple[LiveServer, Tenant]) -> None:
    """Positions, events, reports, imports and OsmAnd are part of the REST API too."""
    served = _operations(list(create_app(shared[0].settings).routes))
    missing = served - _documented(_openapi(shared[0]))
    assert not missing, f"routes without an OpenAPI operation: {sorted(missing)}"


# -- /health and /metrics -----------------------------------------------------------------


def _timescaledb_available(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def test_health_reports_the_database_its_extensions_and_the_version(shared: tuple[LiveServer, Tenant]) -> None:
    live = shared[0]
    with client(live) as http:
        response = http.get("/health")
    assert response.status_code == 200, response.text
    health = response.json()
    assert health["status"] == "ok"
    assert health["version"] == __version__
    postgres = live.settings.database_url.startswith("postgres")
    assert health["database"] == {"status": "ok", "dialect": "postgres" if postgres else "sqlite"}
    extensions = health["extensions"]
    if postgres:
        assert re.match(r"^\d+\.\d+", extensions["postgis"]), extensions
        if not _timescaledb_available(live.settings.database_url):
            assert extensions.get("timescaledb") is None, extensions
    else:
        assert re.match(r"^\d+\.\d+", extensions["spatialite"]), extensions
        assert extensions.get("postgis") is None and extensions.get("timescaledb") is None


def test_metrics_are_prometheus_text_and_count_an_open_sync_socket(live: LiveServer, tenant: Tenant) -> None:
    with client(live) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for line in response.text.splitlines():
        assert line.startswith("#") or METRIC_LINE.match(line), line
    assert metrics(live)["webhost_sync_connections"] == 0
    url = f"ws://127.0.0.1:{live.port}/sync/{tenant.id}?token={tenant.tokens['field']}"
    with ws_connect(url, open_timeout=10) as socket:
        socket.recv(timeout=10)  # the server's sync step 1: the room is serving this socket
        wait_until(lambda: metrics(live)["webhost_sync_connections"] == 1)
        assert metrics(live)["webhost_rooms_loaded"] == 1
        with ws_connect(url, open_timeout=10) as second:
            second.recv(timeout=10)
            wait_until(lambda: metrics(live)["webhost_sync_connections"] == 2)
    wait_until(lambda: metrics(live)["webhost_sync_connections"] == 0)
    with client(live) as http:
        for line in http.get("/metrics").text.splitlines():
            assert line.startswith("#") or METRIC_LINE.match(line), line


def test_a_clockwise_polygon_is_stored_as_drawn_and_answered_counterclockwise(shared_http: httpx.Client) -> None:
    clockwise = [[[13.30, 52.50], [13.30, 52.60], [13.40, 52.60], [13.40, 52.50], [13.30, 52.50]]]
    created = shared_http.post("/api/v1/geofences", json={"data": {"type": "geofences", "attributes": {
        "name": "Pre-RFC depot", "geometry": {"type": "Polygon", "coordinates": clockwise}}}})
    assert created.status_code == 201, created.text
    for response in (created, shared_http.get(created.headers["location"])):
        ring = response.json()["data"]["attributes"]["geometry"]["coordinates"][0]
        assert shapely.LinearRing(ring).is_ccw  # RFC 7946 §3.1.6
        assert sorted(map(tuple, ring)) == sorted(map(tuple, clockwise[0]))
