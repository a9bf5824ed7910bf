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
 *   index: #fleet[data-sort-key][data-sort-dir] th[data-sort-key][aria-sort]; tr.battery-row#battery-{id}
 *     [data-fresh] td[data-field=battery|soc|power|mode|control|alarms|revenue|age][data-sort-value];
 *     #fleet-totals [data-total=energy|power|alarms|revenue|batteries][data-value]
 *   #tz-toggle [data-tz][aria-pressed], body[data-tz]   the zone times are shown in (UTC or BESS_DISPLAY_TZ)
 *   #panel-diagnostics[data-state][data-status][data-rows] #diagnostics-table tr[data-key][data-value]
 *   .panel-csv[data-series][href]                  a panel's CSV export of the window shown
 *   #alarm-banner[data-count][data-severity]       the alarms up now (this battery's, or every battery's on the
 *     .alarm[data-battery][data-rule][data-severity][data-since]   index), most urgent first; hidden when none
 * Data is never parsed as HTML: ids and reasons are set with textContent.
 *
 * Time zones: every time a person reads is written in the zone of the toggle (UTC or the configured
 * BESS_DISPLAY_TZ, remembered in localStorage); figures' time axes are shifted by the zone's offset at each
 * point (Plotly.js has no zones) and relabelled. Data sent to the server and CSV exports stay UTC.
 */
(function () {
  "use strict";

  const body = document.body;
  const page = body.dataset.page;
  const battery = body.dataset.battery || null;
  const SVG_ICON = { width: 1000, height: 1000, path: "M200 100h450l150 150v650H200z M300 550h400v60H300z M300 700h400v60H300z", transform: "matrix(1 0 0 -1 0 1000)" };
  // the mode bar keeps Plotly's PNG download and gets an SVG one (vector, for reports)
  const PLOT_CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "toggleSpikelines"],
    modeBarButtonsToAdd: [{
      name: "download as SVG",
      title: "Download plot as an SVG (vector)",
      icon: SVG_ICON,
      click: (gd) => Plotly.downloadImage(gd, { format: "svg", filename: imageName(gd) }),
    }],
  };
  const DISPLAY_TZ = body.dataset.displayTz || "UTC";
  const ZONES = DISPLAY_TZ === "UTC" ? ["UTC"] : ["UTC", DISPLAY_TZ];
  let zone = (() => {
    try {
      const saved = localStorage.getItem("bess.tz");
      return ZONES.includes(saved) ? saved : DISPLAY_TZ;
    } catch (err) {
      return DISPLAY_TZ;
    }
  })();
  const rawFigures = {}; // figure id -> the figure as the server sent it (UTC), to redraw on a zone change
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

  // -- time zones -------------------------------------------------------------------------------------

  const formatters = {};
  function zoned(d) {
    if (!formatters[zone]) {
      formatters[zone] = new Intl.DateTimeFormat("en-CA", {
        timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
        second: "2-digit", hourCycle: "h23", timeZoneName: "short",
      });
    }
    const p = {};
    for (const part of formatters[zone].formatToParts(d)) p[part.type] = part.value;
    return {
      date: p.year + "-" + p.month + "-" + p.day,
      clock: p.hour + ":" + p.minute + ":" + p.second,
      abbr: zone === "UTC" ? "UTC" : p.timeZoneName || zone,
      wall: Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second)),
    };
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "—";
    const z = zoned(d);
    return z.date + " " + z.clock + " " + z.abbr;
  }

  function fmtMinute(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "—";
    const z = zoned(d);
    return z.date + " " + z.clock.slice(0, 5) + " " + z.abbr;
  }

  function fmtClock(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "—";
    const z = zoned(d);
    return z.clock.slice(0, 5) + " " + z.abbr;
  }

  const offsets = {}; // zone|hour -> ms the zone's clock is ahead of UTC (daylight saving changes on the hour)
  function offsetMs(t) {
    const key = zone + "|" + Math.floor(t / 3600000);
    if (offsets[key] === undefined) {
      const whole = Math.floor(t / 1000) * 1000;
      offsets[key] = zoned(new Date(whole)).wall - whole;
    }
    return offsets[key];
  }

  function shiftValue(v) {
    if (typeof v !== "string") return v;
    const t = Date.parse(/(Z|[+-]\d\d:\d\d)$/.test(v) ? v : v + "Z");
    if (isNaN(t)) return v;
    return new Date(t + offsetMs(t)).toISOString().slice(0, 23);
  }

  // A copy of a figure whose time axes show the chosen zone: the x values of traces, shapes and annotations on a
  // date axis move by the zone's offset at that instant, and the axis title and hover format name the zone.
  function zonedFigure(fig) {
    if (zone === "UTC") return fig;
    const f = JSON.parse(JSON.stringify(fig));
    const axes = new Set();
    const label = zoned(new Date()).abbr;
    for (const [key, axis] of Object.entries(f.layout)) {
      if (!/^xaxis\d*$/.test(key) || !axis || axis.type !== "date") continue;
      axes.add("x" + key.slice(5));
      if (Array.isArray(axis.range)) axis.range = axis.range.map(shiftValue);
      if (axis.title && typeof axis.title.text === "string") axis.title.text = axis.title.text.replace("UTC", zone);
      if (typeof axis.hoverformat === "string") axis.hoverformat = axis.hoverformat.replace("UTC", label);
    }
    for (const trace of f.data) {
      if (axes.has(trace.xaxis || "x") && Array.isArray(trace.x)) trace.x = trace.x.map(shiftValue);
    }
    for (const shape of f.layout.shapes || []) {
      if (axes.has(shape.xref)) { shape.x0 = shiftValue(shape.x0); shape.x1 = shiftValue(shape.x1); }
    }
    for (const note of f.layout.annotations || []) if (axes.has(note.xref)) note.x = shiftValue(note.x);
    return f;
  }

  function imageName(gd) {
    const panel = gd.closest ? gd.closest(".panel") : null;
    const figure = panel ? panel.dataset.figure : "figure";
    return "bess-" + (battery || "fleet") + "-" + figure + "-" + (body.dataset.windowKey || "default").replace(/[^a-z0-9]+/gi, "-");
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
      document.querySelectorAll(".battery-row").forEach((row) => {
        const name = row.dataset.battery;
        const cell = row.querySelector('[data-field="battery"]');
        let note = cell.querySelector('[data-note-node="' + CSS.escape(status.node) + '"]');
        if (details[name] === undefined) {
          if (note) note.remove();
          return;
        }
        if (!note) {
          note = el("span", { class: "row-note", dataset: { noteNode: status.node }, title: "reported by the " + status.node });
          cell.append(note);
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
      const cell = ensureRow(name).querySelector('[data-field="mode"]');
      const chip = cell.querySelector(".chip-mode");
      chip.dataset.mode = state.mode;
      chip.textContent = state.mode;
      cell.dataset.sortValue = state.mode;
      cell.title = state.reason ? "what the battery reports doing: " + state.reason : "what the battery reports doing";
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

  // the server's control_summary (nodes/renderer/dashboard.py), written in the chosen zone
  function controlText(msg) {
    const c = msg.control;
    if (!c) return { mode: "default", text: "Control: planner default (no mode set)" };
    if (c.until && Date.parse(c.until) <= Date.now()) {
      return { mode: "default", text: "Control: planner default (" + c.mode + " ended " + fmtClock(c.until) + ")" };
    }
    const why = c.reason || (c.source ? "set by " + c.source : "");
    return { mode: c.mode, text: "Control: " + c.mode + (c.until ? " until " + fmtClock(c.until) : "") + (why ? " (" + why + ")" : "") };
  }

  function renderControl(name, msg) {
    if (page === "index") {
      controls[name] = msg;
      const cell = ensureRow(name).querySelector('[data-field="control"]');
      const chip = cell.querySelector(".chip-control");
      const shown = controlText(msg);
      chip.dataset.control = shown.mode;
      chip.textContent = shown.text.replace(/^Control: /, "");
      cell.title = shown.text;
      cell.dataset.sortValue = shown.mode;
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
      const row = ensureRow(name);
      const age = row.querySelector('[data-field="age"]');
      if (age.dataset.ts && Date.parse(age.dataset.ts) > Date.parse(t.ts)) return; // a back-dated write
      const soc = row.querySelector('[data-field="soc"]');
      soc.dataset.socKwh = String(t.soc_kwh);
      renderSoc(soc);
      const power = t.power_kw === undefined || t.power_kw === null ? null : t.power_kw;
      const cell = row.querySelector('[data-field="power"]');
      cell.textContent = power === null ? "not reported" : fmtNum(power, 1) + " kW";
      cell.dataset.value = power === null ? "" : String(power);
      cell.dataset.sortValue = cell.dataset.value;
      cell.dataset.sign = power === null ? "" : power > 0 ? "+" : power < 0 ? "-" : "0";
      age.dataset.ts = t.ts;
      age.textContent = fmtAge(t.ts);
      age.title = "latest reading " + fmtTime(t.ts);
      fleetDirty = true;
      return;
    }
    lastTelemetry = t;
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
      if (!n.dataset.ts) return;
      n.textContent = fmtAge(n.dataset.ts);
      n.dataset.sortValue = String(Math.max(0, (Date.now() - Date.parse(n.dataset.ts)) / 1000));
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
    if (page === "index") renderRowAlarms(name);
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

  function renderRowAlarms(name) {
    const cell = ensureRow(name).querySelector('[data-field="alarms"]');
    const chip = cell.querySelector(".chip-alarm");
    const up = activeAlarms(name);
    chip.dataset.count = String(up.length);
    chip.dataset.severity = up.length ? up[0][1].severity : "none";
    chip.textContent = up.length ? up.length + (up.length === 1 ? " alarm" : " alarms") : "no alarm";
    cell.title = up.map(([, a]) => a.severity + ": " + a.message).join("\n") || "no alarm up now";
    cell.dataset.sortValue = String((up.length ? SEVERITY_RANK[up[0][1].severity] || 0 : 0) * 1000 + up.length);
    fleetDirty = true;
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
    rawFigures[fig.figure] = fig;
    const shown = zonedFigure(fig);
    let data = shown.data;
    const layout = Object.assign({}, shown.layout, { autosize: true });
    delete layout.width;
    layout.uirevision = String(layout.uirevision === undefined ? fig.figure : layout.uirevision) + "#" + windowGeneration;
    const narrow = panel.clientWidth < NARROW_PX;
    if (narrow) data = compact(data, layout);
    panel.dataset.compact = narrow ? "true" : "false";
    const config = Object.assign({}, PLOT_CONFIG, {
      displayModeBar: narrow ? false : "hover",
      toImageButtonOptions: { format: "png", filename: "bess-" + battery + "-" + fig.figure + "-" + (body.dataset.windowKey || "default") },
    });
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
      else label.textContent = fmtMinute(params.get("begin")) + " → " + (params.get("end") ? fmtMinute(params.get("end")) : "now");
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
    for (const link of document.querySelectorAll(".panel-csv[data-series]")) {
      const q = new URLSearchParams(query);
      q.set("series", link.dataset.series);
      link.href = "/battery/" + encodeURIComponent(battery) + "/export.csv?" + q.toString();
    }
    loadDiagnostics();
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

  // -- the fleet table (index) ---------------------------------------------------------------------------
  // Rows as nodes/renderer/web_fleet.py writes them; totals by the rules of nodes/renderer/fleet.py.

  const controls = {}; // battery -> the latest control event (redrawn on a zone change)
  let fleetDirty = true;
  const num = (v) => (v === undefined || v === null || v === "" || isNaN(Number(v)) ? null : Number(v));

  function symbols() {
    const table = $("fleet");
    try {
      return JSON.parse((table && table.dataset.symbols) || "{}");
    } catch (err) {
      return {};
    }
  }

  function money(value, code) {
    if (value === null || value === undefined) return "—";
    const symbol = symbols()[code] || code + " ";
    return (value < 0 ? "−" : "") + symbol + Math.abs(value).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  // a partial page (one page of many, or a search: nodes/renderer/paging.py) holds only its own rows: events of
  // other batteries land in a detached scratch row, and the totals are the server's (of every battery)
  const paged = () => ($("fleet") || { dataset: {} }).dataset.paged === "true";
  let scratch = null;

  function ensureRow(name) {
    let row = $("battery-" + name);
    if (row) return row;
    if (paged()) {
      if (!scratch) scratch = buildRow("");
      return scratch;
    }
    const none = $("no-batteries");
    if (none) none.remove();
    row = buildRow(name);
    $("fleet").tBodies[0].append(row);
    fleetDirty = true;
    return row;
  }

  function buildRow(name) {
    const row = el("tr", { class: "battery-row", id: "battery-" + name, dataset: { battery: name, fresh: "false" } });
    const link = el("td", { dataset: { field: "battery", sortValue: name } });
    link.append(el("a", { href: "/battery/" + encodeURIComponent(name) }, name));
    const soc = el("td", { dataset: { field: "soc", sortValue: "", socKwh: "", capacityKwh: "", socMinKwh: "", socMaxKwh: "" } });
    const bar = el("span", { class: "socbar", dataset: { empty: "true" } });
    bar.append(el("span", { class: "fill", style: "width:0%" }));
    soc.append(bar, el("span", { class: "soc-text" }, "—"));
    const mode = el("td", { dataset: { field: "mode", sortValue: "unknown" } });
    mode.append(el("span", { class: "chip chip-mode", dataset: { mode: "unknown" } }, "not reported"));
    const ctl = el("td", { dataset: { field: "control", sortValue: "default" } });
    ctl.append(el("span", { class: "chip chip-control", dataset: { control: "default" } }, "planner default (no mode set)"));
    const alarmCell = el("td", { dataset: { field: "alarms", sortValue: "0" }, title: "no alarm up now" });
    alarmCell.append(el("span", { class: "chip chip-alarm", dataset: { count: "0", severity: "none" } }, "no alarm"));
    row.append(
      link, soc,
      el("td", { dataset: { field: "power", sortValue: "", value: "", sign: "" } }, "—"),
      mode, ctl, alarmCell,
      el("td", { dataset: { field: "revenue", sortValue: "", value: "", currency: "" }, title: "no plan received" }, "—"),
      el("td", { dataset: { field: "age", sortValue: "", ts: "" }, title: "no telemetry yet" }, "none yet"),
    );
    return row;
  }

  function renderSoc(cell) {
    const kwh = num(cell.dataset.socKwh), cap = num(cell.dataset.capacityKwh);
    const lo = num(cell.dataset.socMinKwh), hi = num(cell.dataset.socMaxKwh);
    const pct = kwh !== null && cap ? (kwh / cap) * 100 : null;
    cell.dataset.sortValue = pct !== null ? String(pct) : kwh !== null ? String(kwh) : "";
    const bar = cell.querySelector(".socbar");
    bar.dataset.empty = pct === null ? "true" : "false";
    bar.querySelector(".fill").style.width = (pct === null ? 0 : Math.min(Math.max(pct, 0), 100)).toFixed(1) + "%";
    bar.querySelectorAll(".tick").forEach((t) => t.remove());
    if (cap && lo !== null && hi !== null) {
      for (const v of [lo, hi]) bar.append(el("i", { class: "tick", style: "left:" + ((v / cap) * 100).toFixed(1) + "%" }));
    }
    cell.querySelector(".soc-text").textContent = (kwh === null ? "—" : fmtNum(kwh, 1) + " kWh") + (pct === null ? "" : " · " + Math.round(pct) + " %");
    cell.title = kwh === null ? "no telemetry yet" : fmtNum(kwh, 1) + " kWh" + (pct === null ? "; no spec received, so no % of capacity"
      : " of " + fmtNum(cap, 0) + " kWh capacity (" + pct.toFixed(1) + " %)" + (lo !== null ? "; limits " + fmtNum(lo, 0) + "–" + fmtNum(hi, 0) + " kWh" : ""));
  }

  // a fleet event: the slow parts of a row (spec, plan revenue today), pushed when a spec or a plan arrives
  function renderFleetRow(r) {
    const row = ensureRow(r.battery);
    const soc = row.querySelector('[data-field="soc"]');
    const v = (x) => (x === null || x === undefined ? "" : String(x));
    soc.dataset.capacityKwh = v(r.capacity_kwh);
    soc.dataset.socMinKwh = v(r.soc_min_kwh);
    soc.dataset.socMaxKwh = v(r.soc_max_kwh);
    if (r.soc_kwh !== null && r.soc_kwh !== undefined && !soc.dataset.socKwh) soc.dataset.socKwh = v(r.soc_kwh);
    renderSoc(soc);
    const rev = row.querySelector('[data-field="revenue"]');
    rev.dataset.value = v(r.revenue_today);
    rev.dataset.sortValue = rev.dataset.value;
    rev.dataset.currency = r.currency || "";
    rev.textContent = r.revenue_today === null || r.revenue_today === undefined ? "—" : money(r.revenue_today, r.currency);
    rev.title = r.revenue_note || "planned for today (UTC) by the current plan, not metered; the column header says how";
    fleetDirty = true;
  }

  async function refreshFleet() {
    try {
      const response = await fetch("/api/fleet" + pageQuery(), { cache: "no-store" }); // this page's rows
      if (!response.ok) return;
      const answer = await response.json();
      for (const r of answer.rows) renderFleetRow(r); // revenue "today" moves on at midnight without an event
      serverTotals = answer.totals;
    } catch (err) {
      console.warn("could not refresh the fleet", err);
    }
  }

  function pageQuery() {
    const params = new URLSearchParams(location.search);
    const out = new URLSearchParams({ page: ($("fleet-pager") || { dataset: {} }).dataset.page || "1" });
    for (const k of ["q", "sort", "dir", "per_page"]) if (params.get(k)) out.set(k, params.get(k));
    return "?" + out.toString();
  }

  let serverTotals = null; // a partial page: the latest totals of every battery from GET /api/fleet

  async function refreshTotals() {
    try {
      const response = await fetch("/api/fleet?per_page=1", { cache: "no-store" });
      if (response.ok) serverTotals = (await response.json()).totals;
    } catch (err) {
      console.warn("could not refresh the fleet totals", err);
    }
  }

  function renderTotals() {
    const table = $("fleet");
    if (!table) return;
    if (paged()) {
      for (const row of table.tBodies[0].querySelectorAll(".battery-row")) {
        const ts = row.querySelector('[data-field="age"]').dataset.ts;
        row.dataset.fresh = !!ts && (Date.now() - Date.parse(ts)) / 1000 <= Number(table.dataset.freshS) ? "true" : "false";
      }
      const t = serverTotals;
      if (t) {
        paintTotals(t.batteries, t.counted, t.energy_kwh === null ? 0 : t.energy_kwh, t.energy_pct, t.power_kw === null ? 0 : t.power_kw,
          t.power_counted, t.alarms, SEVERITY_RANK[t.alarm_severity] || 0, t.revenue_today || {});
      }
      return;
    }
    const freshS = Number(table.dataset.freshS);
    let batteries = 0, counted = 0, energy = 0, capacity = 0, storedWithCapacity = 0, power = 0, powered = 0, up = 0, top = 0;
    const revenue = {};
    for (const row of table.tBodies[0].querySelectorAll(".battery-row")) {
      batteries += 1;
      const soc = row.querySelector('[data-field="soc"]');
      const ts = row.querySelector('[data-field="age"]').dataset.ts;
      const kwh = num(soc.dataset.socKwh);
      const fresh = !!ts && (Date.now() - Date.parse(ts)) / 1000 <= freshS;
      row.dataset.fresh = fresh ? "true" : "false";
      if (fresh && kwh !== null) {
        counted += 1;
        energy += kwh;
        const cap = num(soc.dataset.capacityKwh);
        if (cap !== null) {
          capacity += cap;
          storedWithCapacity += kwh;
        }
        const p = num(row.querySelector('[data-field="power"]').dataset.value);
        if (p !== null) {
          power += p;
          powered += 1;
        }
      }
      const rev = row.querySelector('[data-field="revenue"]');
      const amount = num(rev.dataset.value);
      if (amount !== null && rev.dataset.currency) revenue[rev.dataset.currency] = (revenue[rev.dataset.currency] || 0) + amount;
      const chip = row.querySelector(".chip-alarm");
      up += Number(chip.dataset.count) || 0;
      top = Math.max(top, SEVERITY_RANK[chip.dataset.severity] || 0);
    }
    paintTotals(batteries, counted, energy, capacity ? (storedWithCapacity / capacity) * 100 : null, power, powered, up, top, revenue);
  }

  function paintTotals(batteries, counted, energy, pct, power, powered, up, top, revenue) {
    const foot = $("fleet-totals");
    const cell = (k) => foot.querySelector('[data-total="' + k + '"]');
    cell("batteries").textContent = "fleet · " + batteries + " batteries, " + counted + " counted";
    const e = cell("energy");
    e.dataset.value = counted ? String(energy) : "";
    e.textContent = counted ? fmtNum(energy, 1) + " kWh" + (pct !== null && pct !== undefined ? " · " + Math.round(pct) + " %" : "") : "—";
    const p = cell("power");
    p.dataset.value = powered ? String(power) : "";
    p.textContent = powered ? fmtNum(power, 1) + " kW" : "—";
    const a = cell("alarms");
    a.dataset.value = String(up);
    const chip = a.querySelector(".chip-alarm");
    chip.dataset.count = String(up);
    chip.dataset.severity = Object.keys(SEVERITY_RANK).find((s) => SEVERITY_RANK[s] === top) || "none";
    chip.textContent = up + " up";
    const codes = Object.keys(revenue).sort();
    cell("revenue").textContent = codes.length ? codes.map((c) => money(revenue[c], c)).join(" + ") : "—";
    cell("revenue").dataset.value = codes.length === 1 ? String(revenue[codes[0]]) : "";
  }

  function sortFleet() {
    const table = $("fleet");
    const key = table.dataset.sortKey;
    if (!key) return;
    const sign = table.dataset.sortDir === "descending" ? -1 : 1;
    const textual = key === "battery" || key === "mode" || key === "control";
    const tbody = table.tBodies[0];
    const rows = Array.from(tbody.querySelectorAll(".battery-row"));
    const value = (row) => row.querySelector('[data-field="' + key + '"]').dataset.sortValue || "";
    const byName = (a, b) => a.dataset.battery.localeCompare(b.dataset.battery);
    const sorted = rows.slice().sort((a, b) => {
      const va = value(a), vb = value(b);
      if (va === "" || vb === "") return va === vb ? byName(a, b) : va === "" ? 1 : -1; // unknown last, both ways
      const c = textual ? va.localeCompare(vb) : Number(va) - Number(vb);
      return c ? c * sign : byName(a, b);
    });
    if (sorted.some((row, i) => row !== rows[i])) tbody.append(...sorted); // move rows only when the order changed
  }

  function wireFleet() {
    const table = $("fleet");
    if (!table) return;
    const params = new URLSearchParams(location.search);
    const setSort = (key, dir) => {
      table.dataset.sortKey = key;
      table.dataset.sortDir = dir;
      table.querySelectorAll("th[data-sort-key]").forEach((th) => th.setAttribute("aria-sort", th.dataset.sortKey === key ? dir : "none"));
      sortFleet();
    };
    table.tHead.addEventListener("click", (ev) => {
      const th = ev.target.closest("th[data-sort-key]");
      if (!th) return;
      const key = th.dataset.sortKey;
      const dir = table.dataset.sortKey === key && table.dataset.sortDir === "ascending" ? "descending" : "ascending";
      const q = new URLSearchParams(location.search);
      q.set("sort", key);
      q.set("dir", dir === "ascending" ? "asc" : "desc");
      if (paged()) {
        q.delete("page"); // the server sorts every battery, then pages: the first page of the new order
        location.search = q.toString();
        return;
      }
      setSort(key, dir);
      history.replaceState(null, "", location.pathname + "?" + q.toString()); // a sorted view can be bookmarked
    });
    const key = params.get("sort");
    if (key && table.querySelector('th[data-sort-key="' + CSS.escape(key) + '"]')) setSort(key, params.get("dir") === "desc" ? "descending" : "ascending");
  }

  // -- diagnostics (battery page) ------------------------------------------------------------------------

  let diagTimer = null;
  let lastDiagnostics = null;
  const DIGITS = { "%": 1, kWh: 1, "equivalent full cycles": 2, "s (median)": 0, "h in gaps": 2, "kWh/day drift": 2 };

  function fmtValue(value, unit) {
    if (value === null || value === undefined) return "—";
    const digits = DIGITS[unit] !== undefined ? DIGITS[unit] : unit.startsWith("%") ? 1 : 2;
    return fmtNum(value, digits) + " " + unit;
  }

  function renderDiagnostics(p) {
    const panel = $("panel-diagnostics");
    if (!panel) return;
    lastDiagnostics = p;
    panel.dataset.status = p.status;
    panel.dataset.state = p.status === "ready" ? "rendered" : "waiting";
    panel.dataset.rows = String(p.rows.length);
    panel.dataset.readings = String(p.readings);
    panel.dataset.commands = String(p.commands);
    panel.dataset.computedAt = p.computed_at || "";
    const waiting = $("waiting-diagnostics");
    waiting.textContent = p.status === "computing" ? "computing: " + p.note : p.note;
    const basis = $("diagnostics-basis");
    basis.textContent = p.status !== "ready" ? "" : fmtNum(p.readings, 0) + " readings and " + fmtNum(p.commands, 0) +
      " commands from " + fmtMinute(p.begin) + " to " + fmtMinute(p.end) + " · computed " + fmtClock(p.computed_at) +
      (p.refresh_s ? ", again every " + Math.round(p.refresh_s / 60) + " min" : "") + (p.note ? " · " + p.note : "");
    const tbody = $("diagnostics-table").tBodies[0];
    tbody.replaceChildren(...p.rows.map((r) => {
      const tr = el("tr", { dataset: { key: r.key, value: r.value === null ? "" : String(r.value), enough: r.need ? "false" : "true" }, title: "how: " + r.method });
      const unit = r.sample === 1 ? r.sample_unit.replace(/s$/, "") : r.sample_unit; // "1 gap", "2 gaps"
      const sample = (r.sample !== null && r.sample !== undefined ? fmtNum(r.sample, 0) + " " + unit + ", " : "") +
        fmtNum(r.readings, 0) + " readings, " + fmtNum(r.hours, 1) + " h";
      tr.append(
        el("th", { scope: "row" }, r.title),
        el("td", { class: "num" }, fmtValue(r.value, r.unit)),
        el("td", { class: "num" }, r.spec_value === null || r.spec_value === undefined ? "—" : fmtValue(r.spec_value, r.unit)),
        el("td", {}, sample),
        el("td", { class: r.need ? "need" : "" }, r.summary),
      );
      return tr;
    }));
  }

  async function loadDiagnostics() {
    clearTimeout(diagTimer);
    const panel = $("panel-diagnostics");
    if (!panel) return;
    const mine = windowQuery;
    try {
      const response = await fetch("/api/diagnostics/" + encodeURIComponent(battery) + (windowQuery ? "?" + windowQuery : ""), { cache: "no-store" });
      const answer = await response.json();
      if (mine !== windowQuery) return;
      if (!response.ok) {
        panel.dataset.status = "unavailable";
        $("waiting-diagnostics").textContent = answer.error || "diagnostics unavailable";
        diagTimer = setTimeout(loadDiagnostics, 30000);
        return;
      }
      renderDiagnostics(answer);
      if (answer.refresh_s) diagTimer = setTimeout(loadDiagnostics, answer.refresh_s * 1000);
    } catch (err) {
      if (mine !== windowQuery) return;
      $("waiting-diagnostics").textContent = "could not reach the dashboard: " + err;
      diagTimer = setTimeout(loadDiagnostics, 10000);
    }
  }

  // -- the zone toggle -----------------------------------------------------------------------------------

  let lastTelemetry = null;

  function showZone() {
    body.dataset.tz = zone;
    document.querySelectorAll("#tz-toggle [data-tz]").forEach((b) => b.setAttribute("aria-pressed", b.dataset.tz === zone ? "true" : "false"));
    const note = $("tz-note");
    if (note) note.textContent = zone === "UTC" ? "Times are UTC" : "Times are in " + zone;
  }

  function setZone(z) {
    if (!ZONES.includes(z) || z === zone) return;
    zone = z;
    try {
      localStorage.setItem("bess.tz", z);
    } catch (err) {
      // private mode: the choice lasts for this page only
    }
    showZone();
    renderBanner();
    if (page === "battery") {
      for (const fig of Object.values(rawFigures)) renderFigure(fig);
      if (lastTelemetry) renderTelemetry(battery, lastTelemetry);
      tickLease();
      tickControl();
      showWindow();
      if (lastDiagnostics) renderDiagnostics(lastDiagnostics);
    } else {
      for (const [name, msg] of Object.entries(controls)) renderControl(name, msg);
      document.querySelectorAll('.battery-row [data-field="age"]').forEach((n) => {
        if (n.dataset.ts) n.title = "latest reading " + fmtTime(n.dataset.ts);
      });
    }
  }

  function wireZone() {
    showZone();
    const box = $("tz-toggle");
    if (box) box.addEventListener("click", (ev) => {
      const b = ev.target.closest("[data-tz]");
      if (b) setZone(b.dataset.tz);
    });
  }

  // -- stream --------------------------------------------------------------------------------------------

  function connect() {
    if (source) source.close();
    let url = "/events";
    if (battery) url += "?battery=" + encodeURIComponent(battery) + (windowQuery ? "&figures=0" : "");
    else if (paged()) url += pageQuery(); // one page of many: the server streams that page's batteries only
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
    on("fleet", (m) => page === "index" && renderFleetRow(m.data));
    on("command", () => {});
    on("request", () => {});
  }

  wireZone();
  if (page === "battery") {
    wireWindow();
    setInterval(() => {
      tickLease();
      tickControl();
      renderBanner(); // the "since ... ago" texts
    }, 1000);
    applyWindow(queryOf(location.search), false);
  } else {
    wireFleet();
    setInterval(() => {
      tickAges();
      renderBanner();
      renderTotals(); // freshness moves with time, not only with events
      if (fleetDirty) sortFleet();
      fleetDirty = false;
    }, 1000);
    setInterval(refreshFleet, 60000);
    if (paged()) {
      setInterval(refreshTotals, 5000);
      refreshTotals();
    }
    tickAges();
    renderTotals();
    connect();
  }
})();
