/* BESS dashboard: live figures and status over server-sent events (GET /events), no page reloads.
 *
 * Every event's data is {"kind", "battery", "data"}. Kinds: figure (a contract Figure: Plotly data +
 * layout), status (NodeStatus), state (BatteryState), telemetry (Telemetry), window (the chosen window).
 *
 * Hooks for browser tests (stable ids and data- attributes):
 *   body[data-connected], body[data-ts]            stream open; time of the latest telemetry
 *   #panel-{figure}[data-state=waiting|rendered]   plus data-points, data-traces, data-points-by-trace,
 *                                                  data-last-update, data-generated-at, data-ts, data-empty
 *   #nodes [data-node=name][data-state]            one chip per node
 *   #mode[data-mode], #lease[data-valid-until][data-remaining-s], #readout[data-ts]
 *   #window-presets [data-window-s][aria-pressed]  the time-window selector
 * Data is never parsed as HTML: ids and reasons are set with textContent.
 */
(function () {
  "use strict";

  const body = document.body;
  const page = body.dataset.page;
  const battery = body.dataset.battery || null;
  const PLOT_CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "toggleSpikelines"],
  };
  let windowGeneration = 0; // bumps on a new window so Plotly drops the old zoom (uirevision changes)
  let leaseUntil = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "—";
    return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function fmtNum(x, digits) {
    if (x === null || x === undefined) return "—";
    return Number(x).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }).replace("-", "−");
  }

  // -- connection --------------------------------------------------------------------------------------

  function setConn(state, text) {
    const conn = $("conn");
    if (!conn) return;
    conn.dataset.state = state;
    $("conn-text").textContent = text;
    body.dataset.connected = state === "live" ? "true" : "false";
  }

  // -- node status strip -------------------------------------------------------------------------------

  function renderStatus(status) {
    const nodes = $("nodes");
    if (!nodes) return;
    const placeholder = nodes.querySelector("[data-empty]");
    if (placeholder) placeholder.remove();
    let chip = nodes.querySelector('[data-node="' + CSS.escape(status.node) + '"]');
    if (!chip) {
      chip = el("span", { dataset: { node: status.node } });
      const chips = Array.from(nodes.querySelectorAll("[data-node]"));
      const after = chips.find((c) => c.dataset.node > status.node);
      nodes.insertBefore(chip, after || null);
    }
    chip.className = "chip chip-" + status.state;
    chip.dataset.state = status.state;
    chip.title = status.reason || status.state;
    chip.replaceChildren(el("span", { class: "dot" }), document.createTextNode(status.node + " "), el("b", {}, status.state));
    if (status.reason && status.state !== "online") chip.append(document.createTextNode(" · " + status.reason));
  }

  // -- battery state, lease, readout --------------------------------------------------------------------

  function renderState(name, state) {
    if (page === "index") {
      const card = ensureCard(name);
      const chip = card.querySelector(".chip-mode");
      chip.dataset.mode = state.mode;
      chip.textContent = state.mode;
      return;
    }
    const mode = $("mode");
    mode.dataset.mode = state.mode;
    mode.replaceChildren(document.createTextNode("mode "), el("b", {}, state.mode));
    mode.title = state.reason || "what the device is doing";
    leaseUntil = state.valid_until ? new Date(state.valid_until) : null;
    const lease = $("lease");
    lease.dataset.validUntil = state.valid_until || "";
    lease.dataset.source = state.command_source || "";
    lease.dataset.commandId = state.command_id || "";
    const limits = $("limits");
    if (state.limits_hit && state.limits_hit.length) {
      limits.hidden = false;
      limits.textContent = "limits hit: " + state.limits_hit.join(", ");
    } else {
      limits.hidden = true;
    }
    tickLease();
  }

  function tickLease() {
    const lease = $("lease");
    if (!lease) return;
    if (!leaseUntil) {
      lease.textContent = "no command lease";
      lease.dataset.remainingS = "";
      lease.dataset.expired = "false";
      return;
    }
    const left = Math.round((leaseUntil.getTime() - Date.now()) / 1000);
    lease.dataset.remainingS = String(Math.max(left, 0));
    lease.dataset.expired = left <= 0 ? "true" : "false";
    const who = lease.dataset.source ? " · " + lease.dataset.source : "";
    if (left <= 0) {
      lease.textContent = "lease expired " + fmtTime(leaseUntil.toISOString()) + who;
    } else {
      const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      const clock = (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(s).padStart(2, "0");
      lease.textContent = "lease " + clock + " left" + who;
    }
  }

  function setLatestTs(ts) {
    if (!ts) return;
    if (!body.dataset.ts || Date.parse(ts) >= Date.parse(body.dataset.ts)) body.dataset.ts = ts;
  }

  function renderTelemetry(name, t) {
    if (page !== "battery") return;
    const readout = $("readout");
    readout.dataset.ts = t.ts;
    const power = t.power_kw === undefined || t.power_kw === null ? null : t.power_kw;
    const dir = power === null ? "" : power > 0 ? " discharging" : power < 0 ? " charging" : " idle";
    readout.textContent =
      "SOC " + fmtNum(t.soc_kwh, 1) + " kWh · " + (power === null ? "— kW" : fmtNum(power, 1) + " kW" + dir) + " · " + fmtTime(t.ts);
    setLatestTs(t.ts);
  }

  // -- figures -----------------------------------------------------------------------------------------

  function tracePoints(trace) {
    if (trace.type === "table") {
      const values = trace.cells && trace.cells.values;
      return values && values.length ? values[0].length : 0;
    }
    if (trace.type === "indicator") return 1;
    const xs = Array.isArray(trace.x) ? trace.x : trace.y;
    return Array.isArray(xs) ? xs.length : 0;
  }

  function ensurePanel(id) {
    let panel = $("panel-" + id);
    if (panel) return panel;
    panel = el("section", { class: "panel", id: "panel-" + id, dataset: { figure: id, state: "waiting", points: "0" } });
    panel.append(el("div", { class: "plot", id: "plot-" + id }), el("div", { class: "panel-waiting" }, "waiting"));
    $("panels").append(panel);
    return panel;
  }

  const NARROW_PX = 520;

  // On a phone the top legend wraps into the title: move it under the plot, drop the mode bar and shrink
  // the headline numbers. The server's figure stays as sent; only this copy is adapted.
  function compact(data, layout) {
    layout.legend = Object.assign({}, layout.legend, { orientation: "h", x: 0, xanchor: "left", y: -0.22, yanchor: "top" });
    layout.margin = Object.assign({}, layout.margin, { l: 48, r: 40, t: 64, b: 110 });
    layout.title = Object.assign({}, layout.title, { font: { size: 13 } });
    const small = (trace) =>
      trace.type !== "indicator"
        ? trace
        : Object.assign({}, trace, {
            number: Object.assign({}, trace.number, { font: { size: 18 } }),
            title: Object.assign({}, trace.title, { font: { size: 10 } }),
          });
    return data.map(small);
  }

  function renderFigure(fig) {
    const panel = ensurePanel(fig.figure);
    const plot = panel.querySelector(".plot");
    if (typeof Plotly === "undefined") {
      panel.querySelector(".panel-waiting").textContent = "plotly.js did not load";
      return;
    }
    let data = fig.data;
    const layout = Object.assign({}, fig.layout, { autosize: true });
    delete layout.width;
    layout.uirevision = String(layout.uirevision === undefined ? fig.figure : layout.uirevision) + "#" + windowGeneration;
    const narrow = panel.clientWidth < NARROW_PX;
    if (narrow) data = compact(data, layout);
    panel.dataset.compact = narrow ? "true" : "false";
    const config = Object.assign({}, PLOT_CONFIG, { displayModeBar: narrow ? false : "hover" });
    Plotly.react(plot, data, layout, config).then(() => {
      const perTrace = {};
      let total = 0;
      fig.data.forEach((trace, i) => {
        const n = tracePoints(trace);
        perTrace[trace.name || trace.type || String(i)] = n;
        total += n;
      });
      const meta = fig.layout.meta || {};
      const empty = (fig.layout.annotations || []).some((a) => a.name === "empty-state");
      panel.dataset.state = "rendered";
      panel.dataset.points = String(total);
      panel.dataset.traces = String(fig.data.length);
      panel.dataset.pointsByTrace = JSON.stringify(perTrace);
      panel.dataset.generatedAt = fig.generated_at;
      panel.dataset.lastUpdate = new Date().toISOString();
      panel.dataset.empty = empty ? "true" : "false";
      if (meta.last_ts) {
        panel.dataset.ts = meta.last_ts;
        setLatestTs(meta.last_ts);
      }
    });
  }

  // -- time window ---------------------------------------------------------------------------------------

  function showWindow(win) {
    body.dataset.window = JSON.stringify(win);
    const presets = document.querySelectorAll("#window-presets [data-window-s]");
    let matched = false;
    presets.forEach((b) => {
      const on = win.window_s !== undefined && win.window_s !== null && Number(b.dataset.windowS) === win.window_s;
      matched = matched || on;
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
    const custom = $("custom-toggle");
    if (custom) custom.setAttribute("aria-pressed", matched ? "false" : "true");
    if (!matched && win.begin) {
      $("custom-window").hidden = false;
      $("window-begin").value = win.begin.slice(0, 16);
      $("window-end").value = win.end ? win.end.slice(0, 16) : "";
    }
  }

  async function requestWindow(request) {
    const error = $("window-error");
    error.textContent = "";
    try {
      const response = await fetch("/api/window", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign({ battery: battery }, request)),
      });
      const answer = await response.json();
      if (!response.ok) {
        error.textContent = answer.error + (answer.field ? " (" + answer.field + ")" : "");
        return;
      }
      windowGeneration += 1;
      showWindow({ begin: request.begin, end: request.end, window_s: answer.window_s });
    } catch (err) {
      error.textContent = "could not reach the dashboard: " + err;
    }
  }

  function wireWindow() {
    const presets = $("window-presets");
    if (!presets) return;
    presets.addEventListener("click", (ev) => {
      const button = ev.target.closest("button");
      if (!button) return;
      if (button.dataset.custom) {
        $("custom-window").hidden = !$("custom-window").hidden;
        return;
      }
      $("custom-window").hidden = true;
      requestWindow({ window_s: Number(button.dataset.windowS) });
    });
    $("custom-window").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const begin = $("window-begin").value, end = $("window-end").value;
      const asUtc = (v) => (v.length === 16 ? v + ":00Z" : v + "Z"); // the inputs are read as UTC
      const request = { begin: asUtc(begin) };
      if (end) request.end = asUtc(end);
      requestWindow(request);
    });
    try {
      showWindow(JSON.parse(body.dataset.window || "{}"));
    } catch (err) {
      /* no initial window: nothing highlighted */
    }
  }

  // -- index cards ---------------------------------------------------------------------------------------

  function ensureCard(name) {
    let card = $("battery-" + name);
    if (card) return card;
    const none = $("no-batteries");
    if (none) none.remove();
    card = el("a", { class: "card battery-card", id: "battery-" + name, href: "/battery/" + encodeURIComponent(name), dataset: { battery: name } });
    card.append(el("span", { class: "card-title" }, name), el("span", { class: "chip chip-mode", dataset: { mode: "unknown" } }, "unknown"));
    $("batteries").append(card);
    return card;
  }

  // -- stream --------------------------------------------------------------------------------------------

  function connect() {
    const url = "/events" + (battery ? "?battery=" + encodeURIComponent(battery) : "");
    const source = new EventSource(url);
    source.onopen = () => setConn("live", "live");
    source.onerror = () => setConn("reconnecting", "reconnecting…");
    const on = (kind, fn) =>
      source.addEventListener(kind, (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (err) {
          console.warn("undecodable " + kind + " event", err);
          return;
        }
        fn(msg);
      });
    on("figure", (m) => page === "battery" && renderFigure(m.data));
    on("status", (m) => renderStatus(m.data));
    on("state", (m) => renderState(m.battery, m.data));
    on("telemetry", (m) => (page === "index" ? ensureCard(m.battery) : renderTelemetry(m.battery, m.data)));
    on("window", (m) => page === "battery" && showWindow(m.data));
  }

  if (page === "battery") {
    wireWindow();
    setInterval(tickLease, 1000);
  }
  connect();
})();
