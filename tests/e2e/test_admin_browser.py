"""The admin page in real Chromium (Debian's /usr/bin/chromium driven by Playwright) against a real server.

Covers sign-in, creating a tenant and a user, creating and revoking an API key, the sync-status
page with a connected client and a projection error, and the live map following ingested
positions. Every request the browser makes must stay on the test server (no internet needed),
no page may log a console error (a CSP violation would), and each step leaves a screenshot in
test-artifacts/.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from server_stub.testing import PASSWORD, LiveServer, Tenant, provision_tenant, settings_for
from sync import protocol
from sync.document import FleetDocument
from tests.server.admin_http import create_platform_admin

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 15_000
T = TypeVar("T")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt install chromium)")


def off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run a helper that uses asyncio.run() in another thread: Playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    database = tmp_path_factory.mktemp("admin-e2e") / "fleet-server.sqlite"
    with LiveServer(settings_for(f"sqlite:///{database}")) as live:
        yield live


@pytest.fixture(scope="module")
def root_email(server: LiveServer) -> str:
    return off_loop(create_platform_admin, server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    # bypass_csp lets Playwright's own polling of wait_for_function run: it evaluates the predicate
    # with eval, which the admin page's CSP (script-src 'self') rightly refuses. The page's own
    # scripts are unaffected; tests/server/test_admin_security.py checks the CSP header itself.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    requested: list[str] = []
    problems: list[str] = []
    tab.on("request", lambda request: requested.append(request.url))
    # Pages answered 401/403/429 on purpose are logged as "Failed to load resource": judge by response instead.
    tab.on("console", lambda message: problems.append(message.text)
           if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    tab.on("response", lambda response: problems.append(f"{response.status} {response.url}")
           if response.status >= 400 and response.request.resource_type != "document" else None)
    tab.on("pageerror", lambda error: problems.append(f"{error} {error.stack}"))
    try:
        yield tab
    finally:
        context.close()
    foreign = [url for url in requested if urlsplit(url).hostname not in ("127.0.0.1", "localhost")]
    assert not foreign, f"the admin page reached another host: {foreign}"
    assert not problems, f"console errors: {problems}"


# -- helpers ---------------------------------------------------------------------------------


def png_colours(data: bytes, step: int = 7) -> int:
    """Distinct colours among a grid of sampled pixels of an 8-bit RGB(A) PNG (no imaging library needed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    previous, seen = bytearray(stride), set()
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for x in range(stride):
            left = row[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                row[x] = (row[x] + left) & 0xFF
            elif kind == 2:
                row[x] = (row[x] + up) & 0xFF
            elif kind == 3:
                row[x] = (row[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                row[x] = (row[x] + predictor) & 0xFF
        if y % step == 0:
            seen.update(bytes(row[x:x + 3]) for x in range(0, stride, channels * step))
        previous = row
    return len(seen)


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot and check it shows something (not blank, not one colour)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"admin-{name}.png"
    data = page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 8_000, f"{path} is suspiciously small"
    assert png_colours(data) >= 8, f"{path} is (nearly) uniform"
    return path


def sign_in(page: Any, server: LiveServer, email: str) -> None:
    page.goto(f"{server.url}/admin/")
    assert page.url.startswith(f"{server.url}/admin/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("a:text('Sign out'), button:text('Sign out')")


def flash(page: Any) -> str:
    return " ".join(page.locator("p.flash").all_inner_texts())


def rest(server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- tests -----------------------------------------------------------------------------------


def test_platform_admin_creates_a_tenant_a_user_and_an_api_key_then_revokes_it(page: Any, server: LiveServer,
                                                                               root_email: str) -> None:
    page.goto(f"{server.url}/admin/")
    page.wait_for_selector("#login-form")
    screenshot(page, "01-login")
    page.fill("input[name=email]", root_email)
    page.fill("input[name=password]", "wrong password")
    page.click("#login-form button[type=submit]")
    assert "Wrong email or password" in flash(page)
    sign_in(page, server, root_email)
    assert page.url == f"{server.url}/admin/tenants"

    page.fill("#create-tenant input[name=name]", "Epsilon Freight")
    page.select_option("#create-tenant select[name=plan]", "starter")
    page.click("#create-tenant button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/tenants/[^/]+/users$"))
    assert "Tenant Epsilon Freight created" in flash(page)
    tenant_id = page.url.split("/")[-2]

    page.fill("#create-user input[name=email]", "chief@epsilon.example")
    page.fill("#create-user input[name=password]", PASSWORD)
    page.select_option("#create-user select[name=role]", "admin")
    page.click("#create-user button[type=submit]")
    page.wait_for_selector("tr[data-email='chief@epsilon.example']")
    assert "User chief@epsilon.example (admin) created" in flash(page)
    screenshot(page, "02-users")

    page.click("nav.tenantnav >> text=API keys")
    page.fill("#create-api-key input[name=name]", "tracker gateway")
    page.check("#create-api-key input[name=scope_positions]")
    page.click("#create-api-key button[type=submit]")
    secret = page.inner_text("#api-key-secret").strip()
    assert secret.startswith("whk_")
    assert "will not be shown again" in page.inner_text("main")
    screenshot(page, "03-api-key-created")
    with rest(server, secret) as http:
        assert http.get("/api/v1/vehicles").status_code == 200

    page.click("text=Back to the API keys")
    row = page.locator("tr[data-key-name='tracker gateway']")
    assert secret not in page.content() and secret[:8] in row.inner_text()  # shown once, then only its prefix
    row.locator("button:text('Revoke')").click()
    page.wait_for_selector("tr[data-key-name='tracker gateway'] .badge.bad")
    assert "is revoked" in flash(page)
    screenshot(page, "04-api-key-revoked")
    with rest(server, secret) as http:
        assert http.get("/api/v1/vehicles").status_code == 401

    page.click("text=Tenants")
    listed = page.locator(f"tr[data-tenant-id='{tenant_id}']")
    assert "Epsilon Freight" in listed.inner_text()
    assert listed.locator("select[name=plan]").input_value() == "starter"


def test_sync_status_shows_the_connected_client_and_a_projection_error(page: Any, server: LiveServer,
                                                                       root_email: str) -> None:
    tenant = off_loop(provision_tenant, server.settings, "Zeta Logistics")
    url = f"ws://127.0.0.1:{server.port}/sync/{tenant.id}?token={tenant.tokens['dispatcher']}"
    with ws_connect(url, open_timeout=10) as socket:
        socket.recv(timeout=10)  # the server's sync step 1: this socket is a connected client
        # A peer without our validation writes a self-intersecting polygon: kept, and flagged.
        peer = FleetDocument()
        bowtie = [[[13.3, 52.5], [13.4, 52.6], [13.4, 52.5], [13.3, 52.6], [13.3, 52.5]]]
        peer.put_record("geofences", "bowtie-1", {"name": "Bowtie",
                                                  "geometry": {"type": "Polygon", "coordinates": bowtie}})
        socket.send(protocol.update_message(peer.get_update()))

        sign_in(page, server, root_email)
        page.goto(f"{server.url}/admin/tenants/{tenant.id}/sync")
        for _ in range(50):
            if page.locator("tr[data-record-id='bowtie-1']").count():
                break
            page.wait_for_timeout(200)
            page.reload()
        error = page.locator("tr[data-record-id='bowtie-1']")
        assert "geofences" in error.inner_text()
        assert "Self-intersection" in error.locator(".reason").inner_text()
        assert page.inner_text("#connected-clients").strip() == "1"
        assert page.inner_text("#room-loaded").strip() == "loaded"
        assert re.match(r"[1-9]\d* row", page.inner_text("#log-size"))
        screenshot(page, "05-sync-status")

        page.click("#compact-form button[type=submit]")
        page.wait_for_selector("p.flash-ok")
        assert "Compacted" in flash(page)
        assert page.inner_text("#log-size").startswith("0 row")
        assert "update(s) folded" in page.inner_text("#last-compaction")

        page.goto(f"{server.url}/admin/sync")
        row = page.locator(f"tr[data-tenant-id='{tenant.id}']")
        assert row.locator("td").nth(2).inner_text().strip() == "1"


def test_live_map_follows_an_ingested_position(page: Any, server: LiveServer) -> None:
    tenant: Tenant = off_loop(provision_tenant, server.settings, "Eta Express")
    with rest(server, tenant.tokens["dispatcher"]) as http:
        fence = http.post("/api/v1/geofences", json={"data": {"type": "geofences", "attributes": {
            "name": "Depot Mitte", "kind": "depot", "geometry": {"type": "Polygon", "coordinates": [
                [[13.38, 52.51], [13.42, 52.51], [13.42, 52.53], [13.38, 52.53], [13.38, 52.51]]]}}}})
        assert fence.status_code == 201, fence.text
        van = http.post("/api/v1/vehicles", json={"data": {"type": "vehicles", "attributes": {
            "name": "Van 12", "device_id": "imei-map-12"}}})
        assert van.status_code == 201, van.text
        vehicle_id = van.json()["data"]["id"]

    # A tenant admin watches their own fleet.
    sign_in(page, server, tenant.emails["admin"])
    page.goto(f"{server.url}/admin/tenants/{tenant.id}/map")
    page.wait_for_function("window.webhostAdmin && window.webhostAdmin.connected === true")
    assert page.locator("#live-status").get_attribute("data-state") == "live"
    assert page.locator("path.leaflet-interactive").count() >= 1  # the geofence
    assert page.evaluate(f"window.webhostAdmin.markers[{vehicle_id!r}] === undefined")
    assert "no position yet" in page.inner_text(f"#vehicle-list li[data-vehicle-id='{vehicle_id}']")

    now = datetime.now(UTC)
    with rest(server, tenant.tokens["dispatcher"]) as http:
        first = http.post("/api/v1/positions", json={"positions": [
            {"device_id": "imei-map-12", "lat": 52.515, "lon": 13.395, "fix_time": iso(now - timedelta(seconds=20)),
             "speed_kph": 32}]})
        assert first.status_code == 200 and first.json()["accepted"] == 1, first.text
    marker = f"window.webhostAdmin.markers[{vehicle_id!r}]"
    page.wait_for_function(f"(m => m && Math.abs(m.lat - 52.515) < 1e-9)({marker})")
    assert "52.51500, 13.39500" in page.inner_text(f"#vehicle-list li[data-vehicle-id='{vehicle_id}']")
    # The fix lies inside the depot: the geofence event computed on ingest is pushed too.
    page.wait_for_function("window.webhostAdmin.events.some(e => e.kind === 'geofence_enter')")
    assert "geofence_enter Depot Mitte" in page.inner_text("#event-list")
    screenshot(page, "06-live-map")
    before = page.evaluate(f"window.webhostAdmin.markers[{vehicle_id!r}].layer._point")

    with rest(server, tenant.tokens["dispatcher"]) as http:
        second = http.post("/api/v1/positions", json={"positions": [
            {"device_id": "imei-map-12", "lat": 52.52, "lon": 13.41, "fix_time": iso(now), "speed_kph": 41}]})
        assert second.status_code == 200 and second.json()["accepted"] == 1, second.text
    page.wait_for_function(f"(m => m && Math.abs(m.lon - 13.41) < 1e-9)({marker})")
    after = page.evaluate(f"window.webhostAdmin.markers[{vehicle_id!r}].layer._point")
    assert (after["x"], after["y"]) != (before["x"], before["y"]), "the marker did not move on screen"
    assert page.evaluate("window.webhostAdmin.updates") >= 2
    screenshot(page, "07-live-map-moved")

    # A fresh page shows the newest position straight from the server.
    page.reload()
    page.wait_for_function(f"(m => m && Math.abs(m.lon - 13.41) < 1e-9)({marker})")


def test_live_map_shows_record_names_as_text_never_as_markup(page: Any, server: LiveServer) -> None:
    tenant: Tenant = off_loop(provision_tenant, server.settings, "Theta Transport")
    fence_name = '<img src="x" onerror="window.__injected = 1">Depot'
    van_name = "<b>Van</b> & <i>co</i>"
    with rest(server, tenant.tokens["dispatcher"]) as http:
        fence = http.post("/api/v1/geofences", json={"data": {"type": "geofences", "attributes": {
            "name": fence_name, "kind": "depot", "geometry": {"type": "Polygon", "coordinates": [
                [[13.38, 52.51], [13.42, 52.51], [13.42, 52.53], [13.38, 52.53], [13.38, 52.51]]]}}}})
        assert fence.status_code == 201, fence.text
        van = http.post("/api/v1/vehicles", json={"data": {"type": "vehicles", "attributes": {
            "name": van_name, "device_id": "imei-theta-1"}}})
        assert van.status_code == 201, van.text
        vehicle_id = van.json()["data"]["id"]
        fix = http.post("/api/v1/positions", json={"positions": [
            {"device_id": "imei-theta-1", "lat": 52.52, "lon": 13.40, "fix_time": iso(datetime.now(UTC))}]})
        assert fix.status_code == 200 and fix.json()["accepted"] == 1, fix.text

    sign_in(page, server, tenant.emails["admin"])
    page.goto(f"{server.url}/admin/tenants/{tenant.id}/map")
    page.wait_for_function(f"window.webhostAdmin && window.webhostAdmin.markers[{vehicle_id!r}]")
    # Open every tooltip: the geofence's and the vehicle marker's (Leaflet renders them on open).
    page.evaluate("window.webhostAdmin.fences.eachLayer(l => l.openTooltip())")
    page.evaluate(f"window.webhostAdmin.markers[{vehicle_id!r}].layer.openTooltip()")
    tooltips = page.locator(".leaflet-tooltip")
    assert tooltips.count() == 2
    texts = " | ".join(tooltips.all_inner_texts())
    assert fence_name in texts and van_name in texts  # shown literally
    assert page.locator(".leaflet-tooltip img, .leaflet-tooltip b, .leaflet-tooltip i").count() == 0
    assert page.evaluate("window.__injected") is None
    screenshot(page, "08-live-map-names-as-text")
