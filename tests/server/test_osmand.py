"""The OsmAnd / Traccar Client protocol (`/api/v1/osmand`) through a real server on both backends."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from server_stub.testing import LiveServer, Tenant, provision_tenant, settings_for

from .gps_support import BASE_LAT, BASE_LON, client, create_vehicle, iso, now_s, stored


class Device(NamedTuple):
    vehicle_id: str
    device_id: str


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(settings_for(database_url)) as server:
        yield server


@pytest.fixture
def tenant(live: LiveServer) -> Tenant:
    return provision_tenant(live.settings)


@pytest.fixture
def device(live: LiveServer, tenant: Tenant) -> Device:
    """A vehicle with a phone as its tracker (device ids are fresh: Postgres tests share one database)."""
    device_id = f"phone-{secrets.token_hex(4)}"
    with client(live, tenant.tokens["dispatcher"]) as http:
        return Device(create_vehicle(http, "Courier bike", device_id), device_id)


def test_each_timestamp_format_is_stored_at_the_right_instant(live: LiveServer, tenant: Tenant, device: Device) -> None:
    now = now_s()
    sent = {
        now - 400: str(int(now - 400)),  # Unix seconds
        now - 300: str(int((now - 300) * 1000)),  # Unix milliseconds
        now - 200: iso(now - 200),  # ISO 8601 with Z
        now - 100: iso(now - 100).replace("Z", "+00:00"),  # ISO 8601 with an offset
    }
    with client(live) as phone:
        for i, timestamp in enumerate(sent.values()):
            response = phone.get("/api/v1/osmand", params={
                "id": device.device_id, "lat": BASE_LAT + i * 0.001, "lon": BASE_LON, "timestamp": timestamp})
            assert response.status_code == 200, response.text
            assert response.json() == {"accepted": 1, "duplicates": 0}
        again = phone.get("/api/v1/osmand", params={"id": device.device_id, "lat": BASE_LAT, "lon": BASE_LON,
                                                     "timestamp": sent[now - 400]})
        assert again.json() == {"accepted": 0, "duplicates": 1}
    with client(live, tenant.tokens["dispatcher"]) as http:
        rows = stored(http, device.vehicle_id)
    assert [r["fix_time"] for r in rows] == [iso(t) for t in sent]
    assert {r["device_id"] for r in rows} == {device.device_id}


def test_speed_in_knots_course_altitude_accuracy_and_extra_parameters_are_kept(
        live: LiveServer, tenant: Tenant, device: Device) -> None:
    t = now_s() - 30
    with client(live) as phone:
        response = phone.get("/api/v1/osmand", params={
            "deviceid": device.device_id, "location": f"{BASE_LAT},{BASE_LON}", "timestamp": int(t), "speed": "10",
            "bearing": "271.5", "altitude": "48.2", "accuracy": "6", "batt": "87.5", "hdop": "1.2",
            "charge": "true", "driverUniqueId": "D-7"})
        assert response.status_code == 200, response.text
    with client(live, tenant.tokens["dispatcher"]) as http:
        (row,) = stored(http, device.vehicle_id)
    assert (row["lat"], row["lon"]) == (BASE_LAT, BASE_LON)
    assert row["speed_kph"] == pytest.approx(18.52, abs=1e-3)  # 10 knots
    assert row["course"] == 271.5
    assert row["altitude"] == pytest.approx(48.2, abs=1e-4)
    assert row["accuracy"] == 6.0
    assert row["attributes"] == {"batt": 87.5, "hdop": 1.2, "charge": True, "driverUniqueId": "D-7"}


def test_form_posts_query_posts_and_traccar_json_are_all_accepted(live: LiveServer, tenant: Tenant, device: Device
                                                                  ) -> None:
    t = now_s() - 600
    with client(live) as phone:
        form = phone.post("/api/v1/osmand", data={"id": device.device_id, "lat": str(BASE_LAT), "lon": str(BASE_LON),
                                                   "timestamp": str(int(t)), "speed": "0"})
        assert form.status_code == 200, form.text
        query = phone.post("/api/v1/osmand", params={"id": device.device_id, "lat": BASE_LAT + 0.001,
                                                      "lon": BASE_LON, "timestamp": int(t + 10)})
        assert query.status_code == 200, query.text
        traccar = phone.post("/api/v1/osmand", json={
            "device_id": device.device_id,
            "location": {"timestamp": iso(t + 20), "is_moving": True, "odometer": 1234.5,
                         "coords": {"latitude": BASE_LAT + 0.002, "longitude": BASE_LON, "speed": 10.0,
                                    "heading": 90.0, "altitude": 40.0, "accuracy": 5.0},
                         "battery": {"level": 0.5, "is_charging": False}}})
        assert traccar.status_code == 200, traccar.text
    with client(live, tenant.tokens["dispatcher"]) as http:
        rows = stored(http, device.vehicle_id)
    assert [r["fix_time"] for r in rows] == [iso(t), iso(t + 10), iso(t + 20)]
    last = rows[-1]
    assert last["speed_kph"] == pytest.approx(36.0, abs=1e-3)  # 10 m/s
    assert (last["course"], last["altitude"], last["accuracy"]) == (90.0, 40.0, 5.0)
    assert last["attributes"]["batt"] == 50.0 and last["attributes"]["is_moving"] is True


def _count_everything(live: LiveServer, tenant: Tenant) -> int:
    with client(live, tenant.tokens["dispatcher"]) as http:
        return len(stored(http, None))


def test_unknown_device_is_refused_and_nothing_is_stored(live: LiveServer, tenant: Tenant, device: Device) -> None:
    stranger = "stranger-" + device.device_id
    with client(live) as phone:
        response = phone.get("/api/v1/osmand", params={"id": stranger, "lat": BASE_LAT, "lon": BASE_LON})
        assert response.status_code == 404
        assert "not registered" in response.json()["errors"][0]["detail"]
        assert phone.get("/api/v1/osmand", params={"lat": BASE_LAT, "lon": BASE_LON}).status_code == 400
        assert phone.post("/api/v1/osmand", data={"id": stranger, "lat": "1", "lon": "1"}).status_code == 404
    assert _count_everything(live, tenant) == 0


def test_another_tenant_cannot_take_a_registered_device_id_so_the_phone_keeps_reporting(
        live: LiveServer, tenant: Tenant, device: Device) -> None:
    other = provision_tenant(live.settings, "Other Couriers")
    with client(live, other.tokens["dispatcher"]) as http:
        taken = http.post("/api/v1/vehicles", json={"data": {"type": "vehicles", "attributes": {
            "name": "Their bike", "device_id": device.device_id}}})
    assert taken.status_code == 409
    assert "already registered" in taken.json()["errors"][0]["detail"]
    with client(live) as phone:
        response = phone.get("/api/v1/osmand", params={"id": device.device_id, "lat": BASE_LAT, "lon": BASE_LON})
    assert response.status_code == 200, response.text
    assert _count_everything(live, tenant) == 1
    assert _count_everything(live, other) == 0


@pytest.mark.parametrize(("params", "reason"), [
    ({"lat": "north", "lon": "13.4"}, "lat must be a number"),
    ({"lon": "13.4"}, "lat and lon"),
    ({"location": "52.5"}, "location must be"),
    ({"lat": "95", "lon": "13.4"}, "out of range"),
    ({"lat": "52.5", "lon": "13.4", "timestamp": "yesterday"}, "neither ISO 8601"),
    ({"lat": "0", "lon": "0"}, "0,0"),
])
def test_bad_positions_are_400_with_a_reason_and_not_stored(live: LiveServer, tenant: Tenant, device: Device,
                                                             params: dict[str, Any], reason: str) -> None:
    with client(live) as phone:
        response = phone.get("/api/v1/osmand", params={"id": device.device_id, **params})
    assert response.status_code == 400
    assert reason in response.json()["errors"][0]["detail"]
    assert _count_everything(live, tenant) == 0


@pytest.mark.parametrize("params", [
    {"id": "phone\x00x", "lat": "52.5", "lon": "13.4"},
    {"id": "ok", "lat": "52.5", "lon": "13.4", "note": "a\x00b"},
], ids=["nul-id", "nul-attribute"])
def test_unstorable_parameters_get_400_never_a_server_error(live: LiveServer, tenant: Tenant, device: Device,
                                                             params: dict[str, str]) -> None:
    with client(live) as phone:
        for response in (phone.get("/api/v1/osmand", params=params), phone.post("/api/v1/osmand", data=params),
                         phone.post("/api/v1/osmand", json={"device_id": params["id"], "location": {
                             "coords": {"latitude": 52.5, "longitude": 13.4}}, "extras": {"note": "a\x00b"}})):
            assert response.status_code == 400, response.text
        huge = phone.post("/api/v1/osmand", data={"id": "x" * 200_000, "lat": "52.5", "lon": "13.4"})
        assert huge.status_code == 413  # the body cap answers before any parsing
    assert _count_everything(live, tenant) == 0


def test_report_queries_with_a_nul_vehicle_id_get_400(live: LiveServer, tenant: Tenant) -> None:
    with client(live, tenant.tokens["dispatcher"]) as http:
        for report in ("trips", "stops"):
            response = http.get(f"/api/v1/reports/{report}", params={"vehicle_id": "van\x00"})
            assert response.status_code == 400, response.text
