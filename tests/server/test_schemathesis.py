"""Property-based fuzzing of the whole REST API from its own OpenAPI document (schemathesis).

A real uvicorn server on SQLite and on Postgres, a tenant dispatcher's token: every operation
in /api/openapi.json gets schema-valid and schema-violating requests (the examples and the
coverage phase's boundary cases, NUL bytes included, plus a bounded number of random ones), and
every answer must be a non-5xx whose status, media type, headers and body the document
describes. A failure names the operation and a curl command that reproduces it; generation is
deterministic, so a failure reproduces on the next run too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.checks import response_schema_conformance

from server_stub import openapi
from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for

from .conftest import backend_url
from .fleet_http import attributes, create

# Random cases per operation, after the examples and boundary cases: with about 30 operations
# this keeps each backend near half a minute on two cores.
EXAMPLES_PER_OPERATION = 8
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          response_headers_conformance]
REQUESTS: list[int] = []  # the status of every request sent, for the summary


@pytest.fixture(scope="module", params=["sqlite", pytest.param("partitioned", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[LiveServer, Tenant]]:
    with LiveServer(settings_for(backend_url(request, tmp_path_factory.mktemp("schemathesis")))) as server:
        tenant = provision_tenant(server.settings, "Fuzzed Freight")
        # Some records to find, so reads and writes by id do not only meet 404s.
        for collection in ("vehicles", "drivers", "routes", "geofences"):
            create(server, tenant.tokens["dispatcher"], collection, attributes(collection, f"Seed {collection}"))
        started, before = time.monotonic(), len(REQUESTS)
        yield server, tenant
        print(f"\nschemathesis on {request.param}: {len(REQUESTS) - before} requests "
              f"in {time.monotonic() - started:.1f} s")


def _schema() -> schemathesis.BaseSchema:
    # The document the server serves at /api/openapi.json (test_the_served_document_is_the_one_fuzzed
    # holds them together), loaded at import so that pytest reports one test per operation.
    schema = schemathesis.openapi.from_dict(openapi.document())
    schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, deterministic=True, database="none",
                                    allow_x00=True)
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    return schema


schema = _schema()


def test_the_served_document_is_the_one_fuzzed(api: tuple[LiveServer, Tenant]) -> None:
    server, _ = api
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/api/openapi.json").json() == openapi.document()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES_PER_OPERATION)
def test_every_operation_answers_without_5xx_and_as_documented(case: schemathesis.Case,
                                                               api: tuple[LiveServer, Tenant]) -> None:
    server, tenant = api
    response = case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30,
                                      headers={"Authorization": f"Bearer {tenant.tokens['dispatcher']}"})
    REQUESTS.append(response.status_code)
