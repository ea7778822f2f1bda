// Live map of the admin page: geofences and each vehicle's newest position, updated from WS /api/v1/live.
// window.webhostAdmin exposes the map's state (markers by vehicle id, counters) for tests and debugging.
(function () {
  "use strict";
  var el = document.getElementById("map");
  if (!el || !window.L) { return; }
  var data = JSON.parse(document.getElementById("map-data").textContent);
  var statusEl = document.getElementById("live-status");
  var listEl = document.getElementById("vehicle-list");
  var eventsEl = document.getElementById("event-list");
  var state = window.webhostAdmin = {
    tenant: data.tenant, markers: {}, updates: 0, events: [], connected: false, connects: 0
  };
  var names = {};
  data.vehicles.forEach(function (v) { names[v.id] = v.name || v.id; });
  var fenceNames = {};
  data.geofences.features.forEach(function (f) { fenceNames[f.id] = f.properties.name; });
  function clock(iso) { return iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC"); }
  // Leaflet puts a string tooltip in as HTML; record names are user data, so tooltips get a node
  // whose text is set, never parsed.
  function textNode(text) { var span = document.createElement("span"); span.textContent = text; return span; }

  var map = L.map(el, { zoomControl: true, worldCopyJump: true });
  map.attributionControl.setPrefix("Leaflet");
  var colors = { depot: "#1f6feb", customer: "#1a7f37", restricted: "#c62828", other: "#8250df" };
  var fences = L.geoJSON(data.geofences, {
    style: function (f) {
      var c = colors[f.properties.kind] || colors.other;
      return { color: c, weight: 2, fillOpacity: f.properties.active === false ? 0.03 : 0.15,
               dashArray: f.properties.invalid ? "4 4" : null };
    },
    onEachFeature: function (f, layer) {
      layer.bindTooltip(textNode(f.properties.name + " (" + f.properties.kind + ")" +
                                 (f.properties.invalid ? " — invalid" : "")));
    }
  });
  // The view must be set before any vector layer is added (Leaflet clips paths against it).
  var bounds = fences.getBounds();
  data.positions.forEach(function (p) { bounds.extend([p.lat, p.lon]); });
  if (bounds.isValid()) { map.fitBounds(bounds.pad(0.2), { maxZoom: 15 }); } else { map.setView([20, 0], 2); }
  fences.addTo(map);
  state.fences = fences;

  function setStatus(kind, text) { statusEl.dataset.state = kind; statusEl.textContent = text; }

  function describe(p) {
    var speed = (p.speed_kph === null || p.speed_kph === undefined) ? "" : ", " + Math.round(p.speed_kph) + " km/h";
    return (names[p.vehicle_id] || p.vehicle_id) + " · " + clock(p.fix_time) + speed;
  }

  function renderList() {
    listEl.textContent = "";
    data.vehicles.forEach(function (v) {
      var li = document.createElement("li");
      var m = state.markers[v.id];
      li.dataset.vehicleId = v.id;
      li.textContent = (v.name || v.id) + (v.device_id ? " [" + v.device_id + "]" : "") +
        (m ? " — " + m.lat.toFixed(5) + ", " + m.lon.toFixed(5) : " — no position yet");
      listEl.appendChild(li);
    });
  }

  function place(p) {
    var known = state.markers[p.vehicle_id];
    if (known && known.fix_time > p.fix_time) { return; }  // an older fix arriving late
    var latlng = [p.lat, p.lon];
    if (known) {
      known.layer.setLatLng(latlng);
      known.layer.setTooltipContent(textNode(describe(p)));
    } else {
      var layer = L.circleMarker(latlng, { radius: 8, color: "#17212b", weight: 2, fillColor: "#f0883e", fillOpacity: 0.9 });
      layer.bindTooltip(textNode(describe(p)), { permanent: false });
      layer.addTo(map);
      known = state.markers[p.vehicle_id] = { layer: layer };
      if (!names[p.vehicle_id]) { names[p.vehicle_id] = p.vehicle_id; data.vehicles.push({ id: p.vehicle_id, name: p.vehicle_id }); }
    }
    known.lat = p.lat; known.lon = p.lon; known.fix_time = p.fix_time;
  }

  data.positions.forEach(place);
  renderList();

  function addEvent(e) {
    state.events.push(e);
    if (state.events.length === 1) { eventsEl.textContent = ""; }
    var li = document.createElement("li");
    li.textContent = clock(e.event_time) + " " + (names[e.vehicle_id] || e.vehicle_id) + ": " + e.kind +
      (e.geofence_id ? " " + (fenceNames[e.geofence_id] || e.geofence_id) : "");
    eventsEl.insertBefore(li, eventsEl.firstChild);
    while (eventsEl.children.length > 50) { eventsEl.removeChild(eventsEl.lastChild); }
  }

  var backoff = 500;
  function reconnect() {
    state.connected = false;
    setStatus("offline", "Live positions disconnected; retrying…");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 15000);
  }

  function connect() {
    setStatus("connecting", "Connecting to live positions…");
    fetch(el.dataset.tokenUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": el.dataset.csrf },
      body: "tenant=" + encodeURIComponent(data.tenant)
    }).then(function (r) {
      if (!r.ok) { throw new Error("live token: HTTP " + r.status); }
      return r.json();
    }).then(function (t) {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var sep = t.path.indexOf("?") >= 0 ? "&" : "?";
      var ws = new WebSocket(scheme + location.host + t.path + sep + "token=" + encodeURIComponent(t.token));
      ws.onmessage = function (msg) {
        var m = JSON.parse(msg.data);
        if (m.type === "ready") {
          state.connected = true; state.connects += 1; backoff = 500;
          setStatus("live", "Live: positions update as they arrive.");
        } else if (m.type === "position") {
          place(m); state.updates += 1; renderList();
        } else if (m.type === "event") {
          addEvent(m);
        }
      };
      ws.onclose = reconnect;
    }).catch(function () { reconnect(); });
  }
  connect();
})();
