"""The OpenAPI document is exact: it validates against the OpenAPI 3.1 schema, names every
operation once, says which endpoints need no token, and has servers (schemathesis, in
tests/server/test_schemathesis.py, checks that live answers match it)."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from server_stub import openapi

METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC = {("/health", "get"), ("/api/v1/auth/token", "post"), ("/api/v1/osmand", "get"), ("/api/v1/osmand", "post")}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS]


def test_the_document_validates_against_the_openapi_schema() -> None:
    validate(openapi.document())  # raises with the offending pointer


def test_every_operation_has_one_unique_operation_id() -> None:
    ids = [operation.get("operationId") for _, _, operation in operations(openapi.document())]
    assert None not in ids
    assert len(ids) == len(set(ids))
    assert {"listVehicles", "createVehicles", "getVehiclesById", "updateVehiclesById", "deleteVehiclesById",
            "createAuthToken", "createPositions", "getHealth"} <= set(ids)


def test_public_endpoints_need_no_token_and_the_rest_need_the_bearer() -> None:
    document = openapi.document()
    assert document["security"] == [{"bearer": []}]
    assert document["servers"] and document["servers"][0]["url"] == "/"
    for path, method, operation in operations(document):
        if (path, method) in PUBLIC:
            assert operation.get("security") == [], (path, method)
        else:
            assert "security" not in operation, (path, method)  # the global bearer requirement
            assert "401" in operation["responses"], (path, method)


def test_every_operation_documents_its_errors_and_every_body_has_a_schema() -> None:
    for path, method, operation in operations(openapi.document()):
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), (path, method)
        if "requestBody" in operation:
            assert "400" in responses or "413" in responses, (path, method)
            for media in operation["requestBody"]["content"].values():
                assert "schema" in media, (path, method)


def test_the_token_endpoint_documents_both_grants() -> None:
    token = openapi.document()["paths"]["/api/v1/auth/token"]["post"]
    schema = token["requestBody"]["content"]["application/json"]["schema"]
    text = str(schema)
    assert "password" in text and "refresh_token" in text
