/* BESS dashboard: the operator control panel and the command history of a battery page.
 *
 * The panel's actions are POSTs to /api/control/{battery}/{command|mode|replan} (JSON, with the anti-CSRF token
 * from GET /api/control/{battery} in X-CSRF-Token); the server turns them into the contract's request topics and
 * answers with the gateway's verdict: the Command it sent and its lease, or the refusal with the gateway's own
 * status and text. The running command and its lease countdown follow the live stream (dashboard.js re-dispatches
 * every event as "bess:event": command, state, control, request). The command history comes from
 * GET /api/commands/{battery}?<window> (stored commands and their outcomes), again after every action.
 *
 * Hooks for browser tests:
 *   #control-panel[data-enabled=true|false][data-busy]          control on; a request in flight
 *   #cp-result[data-outcome=accepted|refused|planned|requested|error][data-request-id][data-status]
 *     [data-command-id]                                         the answer to the last action
 *   #cp-running[data-command-id][data-valid-until][data-source][data-remaining-s]   the battery's running command
 *   #cp-mode[data-mode]                                         the control mode in force (autopilot|manual|idle|default)
 *   #command-history[data-state=waiting|rendered|error][data-rows]
 *     tr[data-command-id][data-source][data-outcome][data-end]  one row per command, newest first
 * Data is never parsed as HTML: every text is set with textContent.
 */
(function () {
  "use strict";

  const panel = document.getElementById("control-panel");
  const history = document.getElementById("command-history");
  if (!panel) return;
  const battery = panel.dataset.battery;
  const base = "/api/control/" + encodeURIComponent(battery);
  const $ = (id) => document.getElementById(id);
  let csrf = { header: "X-CSRF-Token", token: "" };
  let action = "discharge";
  let running = null; // the latest Command seen on the battery's set topic
  let stateLease = null; // the battery's own view of its lease: {command_id, valid_until}
  let historyTimer = null;
  const OPERATOR = new Set(["dashboard", "gateway", "homeassistant", "operator"]);

  function fmtTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "—" : d.toISOString().slice(11, 19);
  }

  function fmtDateTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "—" : d.toISOString().slice(5, 19).replace("T", " ");
  }

  function fmtLeft(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(r).padStart(2, "0");
  }

  function commandText(c) {
    if (c.text) return c.text;
    return c.action === "idle" ? "IDLE" : c.action.toUpperCase() + " " + c.power_kw + " kW";
  }

  // -- the panel's data -----------------------------------------------------------------------------------

  async function load() {
    let data;
    try {
      const response = await fetch(base, { credentials: "same-origin", cache: "no-store" });
      data = await response.json();
      if (!response.ok) throw new Error(data.error || response.status);
    } catch (err) {
      setEnabled(false, "control unavailable: " + err.message);
      return;
    }
    csrf = { header: data.csrf_header, token: data.csrf_token };
    setEnabled(data.enabled, data.disabled_reason);
    if (data.limits) {
      $("cp-limits").textContent = "limits: charge ≤ " + data.limits.max_charge_kw + " kW, discharge ≤ " +
        data.limits.max_discharge_kw + " kW (from the battery's spec; the gateway checks them)";
      $("cp-power").dataset.maxCharge = data.limits.max_charge_kw;
      $("cp-power").dataset.maxDischarge = data.limits.max_discharge_kw;
      limitPower();
    }
    if (data.command && (!running || Date.parse(data.command.issued_at) >= Date.parse(running.issued_at))) {
      running = data.command;
    }
    if (data.state) takeState(data.state);
    if (data.control) showMode(data.control);
    if (data.schedule) showPlan(data.schedule);
    if (history) $("ch-help").title = data.outcome_help;
    tick();
  }

  function setEnabled(on, why) {
    panel.dataset.enabled = on ? "true" : "false";
    const note = $("cp-disabled");
    note.hidden = on;
    note.textContent = on ? "" : why || "control is off";
    for (const control of panel.querySelectorAll("button, input, select")) control.disabled = !on;
    if (on) limitPower();
  }

  function limitPower() {
    const power = $("cp-power");
    const max = action === "charge" ? power.dataset.maxCharge : power.dataset.maxDischarge;
    if (max) power.max = max; // a hint: the gateway decides
    power.disabled = action === "idle" || panel.dataset.enabled !== "true";
  }

  function showMode(msg) {
    const el = $("cp-mode");
    const c = msg.control;
    const ended = c && c.until && Date.parse(c.until) <= Date.now();
    const mode = !c || ended ? "default" : c.mode;
    el.dataset.mode = mode;
    if (mode === "default") {
      el.textContent = "planner default (no mode in force)";
    } else {
      el.textContent = mode === "autopilot" ? "autopilot on" : mode === "manual" ? "autopilot paused" : "held idle";
      if (c.until) el.textContent += " until " + fmtTime(c.until) + " UTC";
      el.title = "set " + fmtDateTime(c.set_at) + " UTC by " + (c.source || "?") + (c.reason ? ": " + c.reason : "");
    }
    for (const [id, m] of [["cp-pause", "manual"], ["cp-resume", "autopilot"], ["cp-hold-idle", "idle"]]) {
      $(id).setAttribute("aria-pressed", mode === m ? "true" : "false");
    }
  }

  function showPlan(schedule) {
    $("cp-plan-info").textContent = "current plan " + schedule.plan_id + ", made " + fmtDateTime(schedule.created_at) +
      " UTC";
  }

  function takeState(state) {
    stateLease = state.command_id ? { command_id: state.command_id, valid_until: state.valid_until } : null;
  }

  function tick() {
    tickHistory();
    const box = $("cp-running");
    const text = $("cp-running-text");
    const lease = $("cp-running-lease");
    if (!running) {
      box.dataset.commandId = "";
      return;
    }
    // the battery's own lease wins when it names the command (a device caps a far lease)
    const until = stateLease && stateLease.command_id === running.command_id && stateLease.valid_until
      ? stateLease.valid_until : running.valid_until;
    const left = (Date.parse(until) - Date.now()) / 1000;
    box.dataset.commandId = running.command_id;
    box.dataset.source = running.source;
    box.dataset.validUntil = until;
    box.dataset.remainingS = String(Math.max(0, Math.round(left)));
    text.textContent = commandText(running) + " · from " + running.source;
    text.title = "command " + running.command_id + ", issued " + fmtDateTime(running.issued_at) + " UTC";
    lease.textContent = (left > 0
      ? "lease " + fmtLeft(left) + " left (until " + fmtTime(until) + " UTC), then the battery goes idle"
      : "lease ended " + fmtTime(until) + " UTC") + " · " + running.command_id;
    box.dataset.expired = left > 0 ? "false" : "true";
  }

  function tickHistory() {
    // a running command's "end" counts down between refreshes of the table
    if (!history) return;
    for (const td of history.querySelectorAll("td[data-running-until]")) {
      const left = (Date.parse(td.dataset.runningUntil) - Date.now()) / 1000;
      td.textContent = left > 0 ? "running, " + fmtLeft(left) + " left (ends " + fmtTime(td.dataset.runningUntil) + ")"
        : "lease ended " + fmtTime(td.dataset.runningUntil);
    }
  }

  // -- actions --------------------------------------------------------------------------------------------

  function showResult(outcome, text, extra) {
    const box = $("cp-result");
    box.hidden = false;
    box.dataset.outcome = outcome;
    box.dataset.requestId = (extra && extra.request_id) || "";
    box.dataset.status = (extra && String(extra.status)) || "";
    box.dataset.commandId = (extra && extra.command_id) || "";
    box.textContent = text;
  }

  async function post(path, body) {
    panel.dataset.busy = "true";
    try {
      let response = await send(path, body);
      if (response.status === 403 && /anti-CSRF/.test((await response.clone().json()).error || "")) {
        await load(); // a renderer restart changed the token: take the new one and try once more
        response = await send(path, body);
      }
      const data = await response.json();
      return { status: response.status, data: data };
    } catch (err) {
      return { status: 0, data: { error: "no answer from the dashboard: " + err.message } };
    } finally {
      panel.dataset.busy = "false";
      refreshHistory(0);
    }
  }

  function send(path, body) {
    return fetch(base + "/" + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", [csrf.header]: csrf.token },
      body: JSON.stringify(body),
    });
  }

  function refusal(answer) {
    const where = answer.data.field ? " (" + answer.data.field + ")" : "";
    showResult(answer.status === 0 ? "error" : "refused",
      "Refused" + (answer.status ? " (" + answer.status + ")" : "") + where + ": " + answer.data.error,
      { request_id: answer.data.request_id, status: answer.status });
  }

  async function sendCommand(ev) {
    ev.preventDefault();
    const body = { action: action };
    if (action !== "idle") body.power_kw = Number($("cp-power").value);
    const minutes = Number($("cp-lease").value);
    if (minutes) body.lease_s = Math.round(minutes * 60);
    const answer = await post("command", body);
    if (answer.status !== 202) return refusal(answer);
    const c = answer.data.command;
    const r = answer.data.result;
    if (c) {
      running = c;
      tick();
    }
    const paused = r.mode === "manual" ? "; autopilot paused until the lease ends" : "";
    showResult("accepted", "Sent " + (c ? commandText(c) + " (" + c.command_id + "), lease until " +
      fmtTime(c.valid_until) + " UTC" : r.text + " (" + r.command_id + ")") + paused,
      { request_id: answer.data.request_id, status: 202, command_id: r.command_id });
  }

  async function sendMode(mode) {
    const body = { mode: mode };
    const forS = $("cp-pause-for").value;
    if (mode === "manual" && forS) body.for_s = Number(forS);
    const answer = await post("mode", body);
    if (answer.status !== 202) return refusal(answer);
    const words = { autopilot: "Autopilot resumed", manual: "Autopilot paused", idle: "Battery held idle" };
    showResult("accepted", words[mode] + (body.for_s ? " for " + Math.round(body.for_s / 60) + " min" : " until changed"),
      { request_id: answer.data.request_id, status: 202, command_id: answer.data.result.command_id });
  }

  async function replan() {
    const answer = await post("replan", {});
    if (answer.status !== 202) return refusal(answer);
    const s = answer.data.schedule;
    if (s) showPlan(s);
    showResult(answer.data.outcome, s ? "New plan " + s.plan_id + " (" + s.slots + " slots, made " +
      fmtTime(s.created_at) + " UTC)" : "Re-plan requested: " + answer.data.note, { request_id: answer.data.request_id,
      status: 202 });
  }

  function wire() {
    $("cp-action").addEventListener("click", (ev) => {
      const button = ev.target.closest("[data-action]");
      if (!button) return;
      action = button.dataset.action;
      for (const b of $("cp-action").querySelectorAll("[data-action]")) {
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      }
      limitPower();
    });
    $("cp-command").addEventListener("submit", sendCommand);
    $("cp-pause").addEventListener("click", () => sendMode("manual"));
    $("cp-resume").addEventListener("click", () => sendMode("autopilot"));
    $("cp-hold-idle").addEventListener("click", () => {
      if (window.confirm("Send IDLE to " + battery + " and hold it idle until the mode changes?")) sendMode("idle");
    });
    $("cp-replan").addEventListener("click", replan);
    if (history) $("ch-operator-only").addEventListener("change", () => refreshHistory(0));
    document.addEventListener("bess:event", (ev) => {
      const m = ev.detail;
      if (!m || m.battery !== battery) return;
      if (m.kind === "command") {
        running = m.data;
        tick();
        refreshHistory(1000);
      } else if (m.kind === "state") {
        takeState(m.data);
        tick();
      } else if (m.kind === "control") {
        showMode(m.data);
      }
    });
  }

  // -- the command history --------------------------------------------------------------------------------

  function refreshHistory(delayMs) {
    if (!history) return;
    clearTimeout(historyTimer);
    historyTimer = setTimeout(loadHistory, delayMs);
  }

  async function loadHistory() {
    let data;
    try {
      const params = new URLSearchParams(location.search);
      const query = new URLSearchParams();
      for (const k of ["window", "begin", "end"]) if (params.get(k)) query.set(k, params.get(k));
      const response = await fetch("/api/commands/" + encodeURIComponent(battery) + "?" + query.toString(),
        { credentials: "same-origin", cache: "no-store" });
      data = await response.json();
      if (!response.ok) throw new Error(data.error || response.status);
    } catch (err) {
      history.dataset.state = "error";
      $("ch-note").hidden = false;
      $("ch-note").textContent = "command history unavailable: " + err.message;
      return;
    }
    const onlyOperator = $("ch-operator-only").checked;
    const rows = data.rows.filter((r) => !onlyOperator || OPERATOR.has(r.source));
    const body = $("ch-rows");
    body.replaceChildren(...rows.map(row));
    if (!rows.length) {
      const empty = document.createElement("tr");
      empty.className = "ch-empty";
      const cell = document.createElement("td");
      cell.colSpan = 6;
      cell.textContent = onlyOperator ? "no operator command in this window" : "no command in this window";
      empty.append(cell);
      body.append(empty);
    }
    const note = data.note || (data.rows.length >= data.limit ? "the newest " + data.limit + " commands" : "");
    $("ch-note").hidden = !note;
    $("ch-note").textContent = note;
    $("ch-help").title = data.outcome_help;
    history.dataset.rows = String(rows.length);
    history.dataset.state = "rendered";
    tickHistory();
  }

  function cell(text, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (title) td.title = title;
    return td;
  }

  function row(r) {
    const tr = document.createElement("tr");
    tr.dataset.commandId = r.command_id;
    tr.dataset.source = r.source;
    tr.dataset.outcome = r.outcome;
    tr.dataset.end = r.end;
    const outcome = cell(r.outcome, r.outcome_detail);
    outcome.className = "ch-outcome";
    outcome.dataset.outcome = r.outcome;
    const end = cell(r.end + " " + r.end_detail);
    if (r.end === "running") end.dataset.runningUntil = r.valid_until;
    const source = cell(r.source);
    source.className = "ch-source";
    source.dataset.source = r.source;
    tr.append(
      cell(fmtDateTime(r.issued_at), r.command_id),
      source,
      cell(r.text, r.command_id),
      cell(fmtDateTime(r.valid_until), "lease of " + fmtLeft(r.lease_s)),
      outcome,
      end,
    );
    return tr;
  }

  wire();
  load();
  setInterval(tick, 1000);
  setInterval(load, 15000); // the token, the limits and the mode stay current
  setInterval(() => refreshHistory(0), 15000);
  // the viewer picked another window (dashboard.js sets body[data-window-key] and the address): its commands
  new MutationObserver(() => refreshHistory(0)).observe(document.body, { attributeFilter: ["data-window-key"] });
  refreshHistory(0);
})();
