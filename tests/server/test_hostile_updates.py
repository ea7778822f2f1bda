"""Hostile updates through a real sync socket: each is refused before merge with a reason, the
poisoned tenant keeps serving, and after a restart the server starts and every tenant syncs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for
from sync import protocol
from sync.values import MAX_DEPTH

from ..sync.hostile_updates import (
    any_value,
    deeply_nested,
    raw_root_entry,
    record_update,
    shared_type_values,
    var_int,
)

COLLECTIONS = ("vehicles", "drivers", "routes", "geofences")


def _unknown_root(name: str) -> bytes:
    doc = Doc()
    doc.get(name, type=Map)["a"] = 1
    return doc.get_update()


def _pycrdt_field(value_maker: Any) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda collection, record_id, field, value: record_update(
            collection, record_id, lambda r: r.__setitem__(field, value)),
        st.sampled_from(COLLECTIONS), st.uuids().map(str), st.sampled_from(["name", "notes", "x_extra", "stops"]),
        value_maker)


# Every kind of content the value policy refuses, each built the way a client could send it.
hostile_updates = st.one_of(
    _pycrdt_field(st.text(min_size=0, max_size=5).map(lambda t: t + "\x00")),
    _pycrdt_field(st.sampled_from([math.nan, math.inf, -math.inf])),
    _pycrdt_field(st.integers(MAX_DEPTH + 1, 3000).map(lambda n: _nested(n))),
    st.builds(lambda kind, collection: record_update(
        collection, "r-1", lambda r: r.__setitem__("notes", shared_type_values()[kind]())),
        st.sampled_from(sorted(shared_type_values())), st.sampled_from(COLLECTIONS)),
    st.builds(lambda value: raw_root_entry("meta", "schema_version", b"\x7d" + var_int(value)),
              st.integers(2**63, 2**200) | st.integers(-(2**200), -(2**63) - 1)),
    st.builds(lambda levels: raw_root_entry("vehicles", "v-1", deeply_nested(levels)),
              st.integers(MAX_DEPTH + 2, 200_000)),
    st.builds(lambda raw: raw_root_entry("drivers", "d-1", any_value({"name": raw})),
              st.sampled_from([b"\xff", b"\xed\xa0\x80", b"ok\xc3"])),
    st.builds(lambda key: raw_root_entry("routes", key, any_value({"name": "x"})),
              st.sampled_from(["x" * 200_000, "bad\nid", "a b", ""])),
    st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)
    .filter(lambda name: name not in (*COLLECTIONS, "meta")).map(_unknown_root),
)


def _nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'fleet-server.sqlite'}"
    with LiveServer(settings_for(url)) as server:
        yield server


@pytest.fixture(scope="module")
def tenants(live: LiveServer) -> tuple[Tenant, Tenant]:
    return provision_tenant(live.settings, "Poisoned Co"), provision_tenant(live.settings, "Bystander Co")


def send_update(live: LiveServer, tenant: Tenant, update: bytes) -> tuple[int | None, str]:
    """Send one update on a fresh acking socket; (close code, reason) or (None, 'acked')."""
    url = f"ws://127.0.0.1:{live.port}/sync/{tenant.id}?acks=1&token={tenant.tokens['dispatcher']}"
    with connect(url, open_timeout=10, close_timeout=5, max_size=None) as ws:
        ws.send(protocol.update_message(update))
        try:
            while True:
                message = protocol.parse(ws.recv(timeout=10))  # type: ignore[arg-type]
                if message.kind == protocol.MessageKind.ACK_COMMITTED:
                    return None, "acked"
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "no close frame")


@given(hostile_updates)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_every_hostile_update_is_refused_before_merge_with_a_reason(
        live: LiveServer, tenants: tuple[Tenant, Tenant], update: bytes) -> None:
    code, reason = send_update(live, tenants[0], update)
    assert code == 1007, (code, reason)
    assert reason.startswith(("refused before merge", "update does not decode")), reason


def _vehicle_names(live: LiveServer, tenant: Tenant) -> set[str]:
    response = httpx.get(f"{live.url}/api/v1/vehicles", timeout=10,
                         headers={"Authorization": f"Bearer {tenant.tokens['dispatcher']}"})
    assert response.status_code == 200, response.text
    return {item["attributes"]["name"] for item in response.json()["data"]}


def test_after_the_flood_and_a_restart_every_tenant_syncs_and_the_poisoned_one_serves(
        live: LiveServer, tenants: tuple[Tenant, Tenant]) -> None:
    poisoned, bystander = tenants
    for update in (record_update("vehicles", "v-nul", lambda r: r.__setitem__("name", "a\x00b")),
                   raw_root_entry("vehicles", "v-deep", deeply_nested(50_000)),
                   raw_root_entry("meta", "schema_version", b"\x7d" + var_int(2**70))):
        assert send_update(live, poisoned, update)[0] == 1007
    live.restart()
    for tenant, record_id in ((poisoned, "v-after"), (bystander, "v-other")):
        good = record_update("vehicles", record_id, lambda r: r.__setitem__("plate", "B-WH 7"))
        assert send_update(live, tenant, good) == (None, "acked")
    assert _vehicle_names(live, poisoned) == {"Hostile"}  # the refused records never arrived
    assert _vehicle_names(live, bystander) == {"Hostile"}
