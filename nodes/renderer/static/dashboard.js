/* BESS dashboard: live figures and status over server-sent events (GET /events), no page reloads.
 *
 * Every event's data is {"kind", "battery", "data"}. Kinds: figure (a contract Figure: Plotly data +
 * layout, default window only), status (NodeStatus, or {node, removed: true} for a node removed for good), state (BatteryState), control ({control, mode, text,
 * until}), telemetry (Telemetry), alarm (Alarm: raised or cleared, the latest of each rule), and on a battery
 * page command (Command) and request (RequestResult), which static/control.js draws (each event is re-dispatched
 * as a "bess:event" DOM event).
 *
 * The time window is this viewer's own and lives in the URL (?window=7d or ?begin=..&end=..). On the default
 * window (last 24 h) the page takes the live figure events; on any other it asks
 * GET /api/figures/{battery}?<window> and asks again after the answer's refresh_s. Nothing is sent to the
 * server that could change what another viewer sees.
 *
 * Hooks for browser tests (stable ids and data- attributes):
 *   body[data-connected], body[data-ts], body[data-window-key]  stream open; latest telemetry; window shown
 *   #panel-{figure}[data-state=waiting|rendered]   plus data-points, data-traces, data-points-by-trace,
 *                                                  data-last-update, data-generated-at, data-ts, data-empty,
 *                                                  data-x-range (the time axis range, JSON)
 *   #nodes [data-node=name][data-state]            one chip per node
 *   #mode[data-mode], #control[data-control], #lease[data-valid-until][data-remaining-s], #readout[data-ts],
 *   #notes                                         per-battery notes from the nodes (e.g. "not planned")
 *   #window-presets [data-window][aria-pressed]    the time-window selector (links)
 *   index: #battery-{id} [data-field=soc|power|age|mode|control|alarms]
 *   #alarm-banner[data-count][data-severity]       the alarms up now (this battery's, or every battery's on the
 *     .alarm[data-battery][data-rule][data-severity][data-since]   index), most urgent first; hidden when none
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
  let control = null;
  let windowQuery = ""; // "" = the default window
  let pollTimer = null;
  let source = null;
  const notes = {}; // node -> note about this battery
  const alarms = {}; // battery -> rule -> the latest Alarm (raised or cleared)
  const SEVERITY_RANK = { critical: 3, warning: 2, info: 1 };

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

  function fmtAge(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (isNaN(s)) return "—";
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
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
    if (status.removed) {  // a node removed for good (deploy/up cleared its retained status): gone, not offline
      const gone = nodes && nodes.querySelector('[data-node="' + CSS.escape(status.node) + '"]');
      if (gone) gone.remove();
      delete notes[status.node];
      if (page === "battery") renderNotes();
      document.querySelectorAll('[data-note-node="' + CSS.escape(status.node) + '"]').forEach((n) => n.remove());
      return;
    }
    if (nodes) {
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
      chip.title = "node " + status.node + ": " + status.state + (status.reason ? " (" + status.reason + ")" : "");
      chip.replaceChildren(el("span", { class: "dot" }), document.createTextNode(status.node + " "), el("b", {}, status.state));
      if (status.reason && status.state !== "online") chip.append(document.createTextNode(" · " + status.reason));
    }
    const details = status.details || {};
    if (page === "battery") {
      if (details[battery] !== undefined) notes[status.node] = details[battery];
      else delete notes[status.node];
      renderNotes();
    } else if (page === "index") {
      document.querySelectorAll(".battery-card").forEach((card) => {
        const name = card.dataset.battery;
        let note = card.querySelector('[data-note-node="' + CSS.escape(status.node) + '"]');
        if (details[name] === undefined) {
          if (note) note.remove();
          return;
        }
        if (!note) {
          note = el("span", { class: "card-note", dataset: { noteNode: status.node }, title: "reported by the " + status.node });
          card.append(note);
        }
        note.textContent = status.node + ": " + details[name];
      });
    }
  }

  function renderNotes() {
    const box = $("notes");
    if (!box) return;
    const entries = Object.entries(notes);
    box.hidden = entries.length === 0;
    box.replaceChildren(...entries.map(([node, text]) => el("span", { class: "chip chip-warn", title: "reported by the " + node, dataset: { noteNode: node } }, node + ": " + text)));
  }

  // -- battery state, control, lease, readout --------------------------------------------------------------

  function renderState(name, state) {
    if (page === "index") {
      const chip = ensureCard(name).querySelector(".chip-mode");
      chip.dataset.mode = state.mode;
      chip.textContent = state.mode;
      return;
    }
    const mode = $("mode");
    mode.dataset.mode = state.mode;
    mode.replaceChildren(document.createTextNode("battery "), el("b", {}, state.mode));
    mode.title = "what the battery reports doing" + (state.reason ? ": " + state.reason : "");
    leaseUntil = state.valid_until ? new Date(state.valid_until) : null;
    const lease = $("lease");
    lease.dataset.validUntil = state.valid_until || "";
    lease.dataset.source = state.command_source || "";
    lease.dataset.commandId = state.command_id || "";
    lease.title = "the current command ends then and the battery goes idle" + (state.command_id ? " (command " + state.command_id + ")" : "");
    const limits = $("limits");
    if (state.limits_hit && state.limits_hit.length) {
      limits.hidden = false;
      limits.textContent = "limits hit: " + state.limits_hit.join(", ");
    } else {
      limits.hidden = true;
    }
    tickLease();
  }

  function controlText(msg) {
    const c = msg.control;
    if (!c) return { mode: "default", text: "Control: planner default (no mode set)" };
    if (c.until && Date.parse(c.until) <= Date.now()) {
      return { mode: "default", text: "Control: planner default (" + c.mode + " ended " + fmtTime(c.until).slice(11, 16) + " UTC)" };
    }
    return { mode: c.mode, text: msg.text };
  }

  function renderControl(name, msg) {
    if (page === "index") {
      const chip = ensureCard(name).querySelector(".chip-control");
      const shown = controlText(msg);
      chip.dataset.control = shown.mode;
      chip.textContent = shown.text;
      return;
    }
    control = msg;
    tickControl();
  }

  function tickControl() {
    const chip = $("control");
    if (!chip || !control) return;
    const shown = controlText(control);
    chip.dataset.control = shown.mode;
    chip.textContent = shown.text;
    const c = control.control;
    chip.title = "who may command the battery: autopilot (the planner), manual (operator commands only) or idle" +
      (c ? "; set " + fmtTime(c.set_at) + " by " + (c.source || "?") : "");
  }

  function tickLease() {
    const lease = $("lease");
    if (!lease) return;
    if (!leaseUntil) {
      lease.textContent = "no command running";
      lease.dataset.remainingS = "";
      lease.dataset.expired = "false";
      return;
    }
    const left = Math.round((leaseUntil.getTime() - Date.now()) / 1000);
    lease.dataset.remainingS = String(Math.max(left, 0));
    lease.dataset.expired = left <= 0 ? "true" : "false";
    const who = lease.dataset.source ? " · from " + lease.dataset.source : "";
    if (left <= 0) {
      lease.textContent = "command ended " + fmtTime(leaseUntil.toISOString()) + who;
    } else {
      const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      const clock = (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(s).padStart(2, "0");
      lease.textContent = "command " + clock + " left" + who;
    }
  }

  function setLatestTs(ts) {
    if (!ts) return;
    if (!body.dataset.ts || Date.parse(ts) >= Date.parse(body.dataset.ts)) body.dataset.ts = ts;
  }

  function renderTelemetry(name, t) {
    if (page === "index") {
      const card = ensureCard(name);
      card.querySelector('[data-field="soc"]').textContent = fmtNum(t.soc_kwh, 1) + " kWh";
      const power = t.power_kw === undefined || t.power_kw === null ? null : t.power_kw;
      card.querySelector('[data-field="power"]').textContent = power === null ? "not reported" : fmtNum(power, 1) + " kW";
      const age = card.querySelector('[data-field="age"]');
      age.dataset.ts = t.ts;
      age.textContent = fmtAge(t.ts);
      return;
    }
    const readout = $("readout");
    readout.dataset.ts = t.ts;
    const power = t.power_kw === undefined || t.power_kw === null ? null : t.power_kw;
    const dir = power === null ? "" : power > 0 ? " discharging" : power < 0 ? " charging" : " idle";
    readout.textContent =
      "SOC " + fmtNum(t.soc_kwh, 1) + " kWh · " + (power === null ? "power not reported" : fmtNum(power, 1) + " kW" + dir) + " · " + fmtTime(t.ts);
    readout.title = "the latest telemetry as reported (" + (t.source || "device") + "); + discharging, − charging";
    setLatestTs(t.ts);
  }

  function tickAges() {
    document.querySelectorAll('[data-field="age"][data-ts]').forEach((n) => {
      if (n.dataset.ts) n.textContent = fmtAge(n.dataset.ts);
    });
  }

  // -- alarms ------------------------------------------------------------------------------------------

  function activeAlarms(only) {
    const up = [];
    for (const [name, byRule] of Object.entries(alarms)) {
      if (only && name !== only) continue;
      for (const a of Object.values(byRule)) if (a.state === "raised") up.push([name, a]);
    }
    return up.sort((x, y) => (SEVERITY_RANK[y[1].severity] || 0) - (SEVERITY_RANK[x[1].severity] || 0) ||
      Date.parse(x[1].since) - Date.parse(y[1].since));
  }

  function renderAlarm(name, alarm) {
    (alarms[name] = alarms[name] || {})[alarm.rule] = alarm;
    renderBanner();
    if (page === "index") renderCardAlarms(name);
  }

  function renderBanner() {
    const banner = $("alarm-banner");
    if (!banner) return;
    const up = activeAlarms(page === "battery" ? battery : null);
    banner.hidden = up.length === 0;
    banner.dataset.count = String(up.length);
    banner.dataset.severity = up.length ? up[0][1].severity : "";
    const head = el("div", { class: "alarm-head" }, up.length + (up.length === 1 ? " alarm" : " alarms") + " up now");
    banner.replaceChildren(head, ...up.map(([name, a]) => {
      const item = el("div", { class: "alarm alarm-" + a.severity, title: "battery/" + name + "/alarm/" + a.rule,
        dataset: { battery: name, rule: a.rule, severity: a.severity, since: a.since } });
      item.append(el("span", { class: "sev" }, a.severity));
      if (page !== "battery") item.append(el("a", { href: "/battery/" + encodeURIComponent(name) }, name));
      item.append(el("b", {}, a.rule.replace(/_/g, " ")), document.createTextNode(a.message),
        el("span", { class: "since", dataset: { ts: a.since } }, "since " + fmtTime(a.since) + " (" + fmtAge(a.since) + ")"));
      return item;
    }));
  }

  function renderCardAlarms(name) {
    const card = ensureCard(name);
    let chip = card.querySelector('[data-field="alarms"]');
    if (!chip) {
      chip = el("span", { class: "chip chip-alarm", dataset: { field: "alarms" } });
      card.append(chip);
    }
    const up = activeAlarms(name);
    chip.dataset.count = String(up.length);
    chip.dataset.severity = up.length ? up[0][1].severity : "none";
    chip.textContent = up.length ? up.length + (up.length === 1 ? " alarm" : " alarms") : "no alarm";
    chip.title = up.map(([, a]) => a.severity + ": " + a.message).join("\n") || "alarms up now";
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
      trace.type === "scatter" && trace.mode === "text"
        ? Object.assign({}, trace, { textfont: Object.assign({}, trace.textfont, { size: Math.max(9, Math.round((trace.textfont || {}).size * 0.75) || 9) }) })
        : trace;
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
        const key = trace.name || trace.type || String(i);
        perTrace[key] = (perTrace[key] || 0) + n;
        total += n;
      });
      const meta = fig.layout.meta || {};
      const empty = (fig.layout.annotations || []).some((a) => a.name === "empty-state");
      panel.hidden = meta.absent === true; // e.g. the battery panel of a battery without a BMS
      panel.dataset.absent = meta.absent === true ? "true" : "false";
      panel.dataset.state = "rendered";
      panel.dataset.points = String(total);
      panel.dataset.traces = String(fig.data.length);
      panel.dataset.pointsByTrace = JSON.stringify(perTrace);
      panel.dataset.generatedAt = fig.generated_at;
      panel.dataset.lastUpdate = new Date().toISOString();
      panel.dataset.empty = empty ? "true" : "false";
      panel.dataset.windowKey = body.dataset.windowKey || "";
      const xaxis = fig.layout.xaxis || {};
      panel.dataset.xRange = xaxis.range ? JSON.stringify(xaxis.range) : "";
      if (meta.last_ts) {
        panel.dataset.ts = meta.last_ts;
        setLatestTs(meta.last_ts);
      }
    });
  }

  // -- time window (the viewer's own, in the URL) ------------------------------------------------------------

  function queryOf(search) {
    const params = new URLSearchParams(search);
    const out = new URLSearchParams();
    for (const k of ["window", "begin", "end"]) if (params.get(k)) out.set(k, params.get(k));
    return out.toString();
  }

  function showWindow() {
    const params = new URLSearchParams(windowQuery);
    const rel = params.get("window") || (windowQuery ? null : "24h");
    let matched = false;
    document.querySelectorAll("#window-presets [data-window]").forEach((a) => {
      const on = a.dataset.window === rel;
      matched = matched || on;
      a.setAttribute("aria-pressed", on ? "true" : "false");
    });
    const custom = $("custom-toggle");
    if (custom) custom.setAttribute("aria-pressed", matched ? "false" : "true");
    const label = $("window-label");
    if (label) {
      if (rel) label.textContent = "last " + rel.replace(/(\d+)([mhd])/, "$1 $2") + ", live";
      else label.textContent = fmtTime(params.get("begin")).slice(0, 16) + " → " + (params.get("end") ? fmtTime(params.get("end")).slice(0, 16) + " UTC" : "now");
    }
    if (!matched && params.get("begin")) {
      $("custom-window").hidden = false;
      $("window-begin").value = params.get("begin").slice(0, 16);
      $("window-end").value = params.get("end") ? params.get("end").slice(0, 16) : "";
    }
  }

  async function loadWindowFigures() {
    clearTimeout(pollTimer);
    const mine = windowQuery;
    const error = $("window-error");
    try {
      const response = await fetch("/api/figures/" + encodeURIComponent(battery) + "?" + windowQuery, { cache: "no-store" });
      const answer = await response.json();
      if (mine !== windowQuery) return; // the viewer moved on meanwhile
      if (!response.ok) {
        error.textContent = answer.error + (answer.field ? " (" + answer.field + ")" : "");
        return;
      }
      error.textContent = "";
      for (const id of Object.keys(answer.figures)) renderFigure(answer.figures[id]);
      if (answer.refresh_s) pollTimer = setTimeout(loadWindowFigures, answer.refresh_s * 1000);
    } catch (err) {
      if (mine !== windowQuery) return;
      error.textContent = "could not reach the dashboard: " + err;
      pollTimer = setTimeout(loadWindowFigures, 10000);
    }
  }

  function applyWindow(query, push) {
    windowQuery = query;
    windowGeneration += 1;
    body.dataset.windowKey = query || "default";
    if (push) history.pushState({ window: query }, "", location.pathname + (query ? "?" + query : ""));
    showWindow();
    clearTimeout(pollTimer);
    connect();
    if (query) loadWindowFigures();
  }

  function wireWindow() {
    const presets = $("window-presets");
    if (!presets) return;
    presets.addEventListener("click", (ev) => {
      const target = ev.target.closest("a, button");
      if (!target) return;
      if (target.dataset.custom) {
        $("custom-window").hidden = !$("custom-window").hidden;
        return;
      }
      ev.preventDefault();
      $("custom-window").hidden = true;
      applyWindow(target.dataset.window === "24h" ? "" : "window=" + target.dataset.window, true);
    });
    $("custom-window").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const begin = $("window-begin").value, end = $("window-end").value;
      const asUtc = (v) => (v.length === 16 ? v + ":00Z" : v + "Z"); // the inputs are read as UTC
      const q = new URLSearchParams({ begin: asUtc(begin) });
      if (end) q.set("end", asUtc(end));
      applyWindow(q.toString(), true);
    });
    window.addEventListener("popstate", () => applyWindow(queryOf(location.search), false));
  }

  // -- index cards ---------------------------------------------------------------------------------------

  function ensureCard(name) {
    let card = $("battery-" + name);
    if (card) return card;
    const none = $("no-batteries");
    if (none) none.remove();
    card = el("a", { class: "card battery-card", id: "battery-" + name, href: "/battery/" + encodeURIComponent(name), dataset: { battery: name } });
    const row = el("span", { class: "card-row" });
    row.append(
      el("span", { class: "chip chip-mode", dataset: { mode: "unknown" }, title: "what the battery reports doing (its state topic)" }, "no state reported"),
      el("span", { class: "chip chip-control", dataset: { control: "default" }, title: "who may command it (the control topic)" }, "Control: planner default (no mode set)"),
    );
    const stats = el("dl", { class: "card-stats" });
    for (const [field, label, tip] of [
      ["soc", "SOC", "state of charge in the latest telemetry"],
      ["power", "power", "power in the latest telemetry: + discharging, − charging"],
      ["age", "telemetry", "time since the latest telemetry (its own timestamp)"],
    ]) {
      const item = el("div", { title: tip });
      item.append(el("dt", {}, label), el("dd", { dataset: { field: field } }, "—"));
      stats.append(item);
    }
    card.append(el("span", { class: "card-title" }, name), row, stats);
    $("batteries").append(card);
    return card;
  }

  // -- stream --------------------------------------------------------------------------------------------

  function connect() {
    if (source) source.close();
    let url = "/events";
    if (battery) url += "?battery=" + encodeURIComponent(battery) + (windowQuery ? "&figures=0" : "");
    source = new EventSource(url);
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
        // the control panel (static/control.js) takes the same stream: every event as a DOM event
        document.dispatchEvent(new CustomEvent("bess:event", { detail: msg }));
      });
    on("figure", (m) => page === "battery" && !windowQuery && renderFigure(m.data));
    on("status", (m) => renderStatus(m.data));
    on("state", (m) => renderState(m.battery, m.data));
    on("control", (m) => renderControl(m.battery, m.data));
    on("telemetry", (m) => renderTelemetry(m.battery, m.data));
    on("alarm", (m) => renderAlarm(m.battery, m.data));
    on("command", () => {});
    on("request", () => {});
  }

  if (page === "battery") {
    wireWindow();
    setInterval(() => {
      tickLease();
      tickControl();
      renderBanner(); // the "since ... ago" texts
    }, 1000);
    applyWindow(queryOf(location.search), false);
  } else {
    setInterval(() => {
      tickAges();
      renderBanner();
    }, 1000);
    tickAges();
    connect();
  }
})();
