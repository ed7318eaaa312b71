// The support page: plain JavaScript over the JSON API. Every value from the server is shown with
// textContent, never parsed as HTML. The token lives in this tab's sessionStorage only.
"use strict";

const EVENT_TYPES = [
  "AccountOpened", "PlanChanged", "AccountClosed", "DeviceRegistered", "DeviceDeactivated",
  "LicenseIssued", "PlaybackStarted", "LicenseRenewed", "LicenseReleased", "LicenseRevoked", "LicenseExpired",
  "RequestAnswered",
];
const PAGE = 50;

const state = { token: null, role: null, account: null, cursors: [0], next: null, filter: {}, event: null, mark: null };
const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function say(message, error) {
  $("status").textContent = message;
  $("status").className = error ? "error" : "";
}

function roleOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload + "===".slice((payload.length + 3) % 4))).role || null;
  } catch (e) {
    return null;
  }
}

async function api(method, path, body) {
  const options = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = (data && data.error) || { code: String(response.status), message: response.statusText };
    const failure = new Error(error.code + ": " + error.message);
    failure.status = response.status;
    failure.code = error.code;
    failure.details = error.details || {};
    throw failure;
  }
  return data;
}

function row(table, cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.appendChild(td);
  }
  $(table).querySelector("tbody").appendChild(tr);
  return tr;
}

function clear(table) {
  $(table).querySelector("tbody").replaceChildren();
}

function describe(data) {
  return Object.entries(data || {})
    .filter(([k]) => k !== "at" && k !== "account_id")
    .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v))
    .join(" ");
}

// -- signing in ---------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  state.role = roleOf(token);
  try {
    await api("GET", "/v1/accounts/" + encodeURIComponent("__sign-in-check__"));
  } catch (e) {
    if (e.status === 401) return refuse("That token was refused: it is not valid (or it expired).");
    if (e.status === 403) return refuse("That token's role cannot read accounts.");
    if (e.code !== "ACCOUNT_NOT_FOUND") return refuse("The service did not answer: " + e.message);
  }
  if (state.role !== "support" && state.role !== "admin") return refuse("This page needs a support or admin token.");
  sessionStorage.setItem("downloads-token", token);
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = "signed in as " + state.role;
  document.body.dataset.role = state.role;
  for (const node of document.querySelectorAll(".admin-only")) node.hidden = state.role !== "admin";
  say("");
  $("find-value").focus();
  loadProjections();
}

function refuse(message) {
  state.token = null;
  sessionStorage.removeItem("downloads-token");
  say(message, true);
}

// -- finding an account --------------------------------------------------------------

async function find(kind, value) {
  $("found").replaceChildren();
  if (kind === "account") return openAccount(value);
  try {
    const answer = await api("GET", "/v1/lookup?" + new URLSearchParams({ [kind]: value }));
    if (answer.accounts.length === 0) return say("No account holds " + kind + " " + value + ".");
    if (answer.accounts.length === 1) return openAccount(answer.accounts[0]);
    for (const account of answer.accounts) {
      const button = el("button", account, { type: "button" });
      button.addEventListener("click", () => openAccount(account));
      $("found").appendChild(el("li")).appendChild(button);
    }
    say(answer.accounts.length + " accounts hold " + kind + " " + value + ".");
  } catch (e) {
    say(e.message, true);
  }
}

async function openAccount(accountId) {
  try {
    const account = await api("GET", "/v1/accounts/" + encodeURIComponent(accountId));
    state.account = accountId;
    state.mark = null;
    $("marked").textContent = "";
    $("diff-marked").disabled = true;
    showAccount(account);
    $("account").hidden = false;
    $("event").hidden = true;
    $("state").hidden = true;
    state.cursors = [0];
    await loadTimeline();
    await loadDenials();
    say("Account " + accountId + ".");
    $("account-title").focus();
  } catch (e) {
    if (e.code === "ACCOUNT_ERASED") {
      // Nothing of an erased member is shown, not even the account as it was before.
      state.account = null;
      $("account").hidden = true;
      $("event").hidden = true;
      $("state").hidden = true;
      const when = e.details && e.details.erased_at ? " on " + e.details.erased_at : "";
      return say("Account " + accountId + " was erased" + when + ": its member was forgotten, nothing about it is kept.");
    }
    say(e.message, true);
  }
}

function showAccount(account) {
  $("account-title").textContent = "Account " + account.account_id;
  $("account-title").setAttribute("tabindex", "-1");
  const summary = $("account-summary");
  summary.replaceChildren();
  for (const key of ["plan", "status", "device_limit", "devices_with_downloads", "version"]) {
    summary.appendChild(el("dt", key.replace(/_/g, " ")));
    summary.appendChild(el("dd", account[key]));
  }
  clear("devices");
  const active = account.devices.filter((d) => d.status === "active").length;
  $("devices-title").textContent = "Devices: " + account.devices.length + " registered, " + active + " active";
  $("devices-box").open = account.devices.length <= 20;
  const ordered = [...account.devices].sort((a, b) => (a.status === "active" ? 0 : 1) - (b.status === "active" ? 0 : 1));
  for (const device of ordered) {
    const cells = [device.device_id, device.model, device.status, device.active_downloads];
    if (state.role === "admin") {
      const button = el("button", "Deactivate", { type: "button", "data-command": "deactivate" });
      button.disabled = device.status !== "active";
      button.addEventListener("click", () => deactivate(device.device_id));
      cells.push(button);
    }
    row("devices", cells);
  }
}

async function deactivate(deviceId) {
  if (!confirm("Deactivate device " + deviceId + "? Its downloads are released.")) return;
  try {
    const path = "/v1/accounts/" + encodeURIComponent(state.account) + "/devices/" + encodeURIComponent(deviceId);
    await api("DELETE", path);
    await openAccount(state.account);
    say("Device " + deviceId + " deactivated.");
  } catch (e) {
    say(e.message, true);
  }
}

// -- the timeline ----------------------------------------------------------------------

function utc(local) {
  return local ? local + (local.length === 16 ? ":00" : "") + "Z" : null;
}

async function loadTimeline() {
  const after = state.cursors[state.cursors.length - 1];
  const query = new URLSearchParams({ after: String(after), limit: String(PAGE) });
  if (state.filter.type) query.append("type", state.filter.type);
  if (state.filter.from) query.set("from", state.filter.from);
  if (state.filter.to) query.set("to", state.filter.to);
  try {
    const page = await api("GET", "/v1/accounts/" + encodeURIComponent(state.account) + "/events?" + query);
    clear("timeline");
    for (const event of page.events) {
      const open = el("button", "Open", { type: "button", "aria-label": "Open event " + event.seq });
      open.addEventListener("click", () => showEvent(event));
      row("timeline", [event.seq, event.recorded_at, event.type, describe(event.data), open], { "data-seq": event.seq });
    }
    state.next = page.next;
    $("next-page").disabled = page.next === null;
    $("prev-page").disabled = state.cursors.length === 1;
    $("page-info").textContent = page.events.length
      ? "events " + page.events[0].seq + " to " + page.events[page.events.length - 1].seq + " (page " + state.cursors.length + ")"
      : "no events here";
  } catch (e) {
    say(e.message, true);
  }
}

function showEvent(event) {
  state.event = event;
  $("event").hidden = false;
  $("event-title").textContent = "Event " + event.seq + ": " + event.type;
  const meta = $("event-meta");
  meta.replaceChildren();
  const facts = {
    "recorded at": event.recorded_at,
    "schema version": event.metadata.schema_version,
    "request id": event.metadata.request_id,
    command: event.metadata.command,
    arguments: event.metadata.args ? JSON.stringify(event.metadata.args) : "",
  };
  for (const [k, v] of Object.entries(facts)) {
    meta.appendChild(el("dt", k));
    meta.appendChild(el("dd", v === undefined ? "" : v));
  }
  $("event-data").textContent = JSON.stringify(event.data, null, 2);
  $("event-title").setAttribute("tabindex", "-1");
  $("event-title").focus();
}

// -- state at a point, and the difference ----------------------------------------------------

async function showState(query, label) {
  try {
    const then = await api("GET", "/v1/accounts/" + encodeURIComponent(state.account) + "?" + query);
    $("state").hidden = false;
    $("state-title").textContent = "State " + label;
    $("state-json").textContent = JSON.stringify(then, null, 2);
    $("diff").hidden = true;
    return then;
  } catch (e) {
    say(e.message, true);
    return null;
  }
}

function flatten(value, prefix, out) {
  if (value && typeof value === "object") {
    const entries = Array.isArray(value)
      ? value.map((v, i) => [(v && (v.device_id || v.license_id)) || String(i), v])
      : Object.entries(value);
    for (const [k, v] of entries) flatten(v, prefix ? prefix + "." + k : k, out);
  } else {
    out[prefix] = value;
  }
  return out;
}

async function diffToNow() {
  const then = await showState("version=" + state.event.seq, "after event " + state.event.seq);
  if (!then) return;
  try {
    const now = await api("GET", "/v1/accounts/" + encodeURIComponent(state.account));
    showDiff(then, now, "after event " + state.event.seq, "now");
  } catch (e) {
    say(e.message, true);
  }
}

async function diffToMarked() {
  const [first, second] = [state.mark, state.event.seq].sort((x, y) => x - y);
  const then = await showState("version=" + first, "after event " + first);
  if (!then) return;
  try {
    const later = await api("GET", "/v1/accounts/" + encodeURIComponent(state.account) + "?version=" + second);
    showDiff(then, later, "after event " + first, "after event " + second);
  } catch (e) {
    say(e.message, true);
  }
}

function showDiff(then, now, thenLabel, nowLabel) {
  const heads = $("diff").querySelectorAll("thead th");
  heads[1].textContent = thenLabel;
  heads[2].textContent = nowLabel;
  const a = flatten(then, "", {});
  const b = flatten(now, "", {});
  clear("diff");
  let changes = 0;
  for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    if (a[key] !== b[key]) {
      row("diff", [key, a[key], b[key]], { class: "changed" });
      changes += 1;
    }
  }
  if (!changes) row("diff", ["(no difference)", "", ""]);
  $("diff").hidden = false;
}

// -- denials, what-if, the read side ---------------------------------------------------------

async function loadDenials() {
  clear("denials");
  try {
    const page = await api("GET", "/v1/accounts/" + encodeURIComponent(state.account) + "/denials?limit=100");
    for (const d of page.denials) {
      row("denials", [d.at, d.command, describe(d.args), d.code, d.message, JSON.stringify(d.details)]);
    }
    if (!page.denials.length) row("denials", ["none recorded", "", "", "", "", ""]);
  } catch (e) {
    say(e.message, true);
  }
}

async function whatIf(policy) {
  clear("what-if");
  $("what-if-summary").textContent = "re-deciding...";
  try {
    const answer = await api("POST", "/v1/accounts/" + encodeURIComponent(state.account) + "/what-if", { policy });
    const outcome = (o) => (o.code ? o.status + " (" + o.code + ")" : o.status);
    for (const d of answer.decisions) {
      row("what-if", [d.at, d.command, describe(d.args), outcome(d.was), outcome(d.would_be)]);
    }
    const after = answer.account.would_be;
    $("what-if-summary").textContent = answer.changed + " decision(s) would change; "
      + (after === null ? "the account would never have been opened."
        : "devices with downloads " + answer.account.was.devices_with_downloads + " -> " + after.devices_with_downloads + ".");
  } catch (e) {
    $("what-if-summary").textContent = "";
    say(e.message, true);
  }
}

async function loadProjections() {
  clear("projection-table");
  try {
    const answer = await api("GET", "/v1/projections");
    for (const p of answer.projections) {
      row("projection-table", [p.name, p.status, p.position, p.lag_events, p.lag_seconds, p.error || ""]);
    }
  } catch (e) {
    row("projection-table", ["(unavailable)", e.message, "", "", "", ""]);
  }
}

// -- wiring ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("needs-script").hidden = true;
  $("sign-in").hidden = false;
  for (const type of EVENT_TYPES) $("filter-type").appendChild(el("option", type, { value: type }));
  $("sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
  $("sign-out").addEventListener("click", () => { sessionStorage.removeItem("downloads-token"); location.reload(); });
  $("find-form").addEventListener("submit", (e) => { e.preventDefault(); find($("find-kind").value, $("find-value").value.trim()); });
  $("filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.filter = { type: $("filter-type").value, from: utc($("filter-from").value), to: utc($("filter-to").value) };
    state.cursors = [0];
    loadTimeline();
  });
  $("next-page").addEventListener("click", () => { if (state.next !== null) { state.cursors.push(state.next); loadTimeline(); } });
  $("prev-page").addEventListener("click", () => { if (state.cursors.length > 1) { state.cursors.pop(); loadTimeline(); } });
  $("state-at").addEventListener("click", () => showState("version=" + state.event.seq, "after event " + state.event.seq));
  $("diff-now").addEventListener("click", diffToNow);
  $("mark").addEventListener("click", () => {
    state.mark = state.event.seq;
    $("marked").textContent = "event " + state.mark + " is marked";
    $("diff-marked").disabled = false;
  });
  $("diff-marked").addEventListener("click", diffToMarked);
  $("as-of-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const when = utc($("as-of").value);
    if (when) showState("as_of=" + encodeURIComponent(when), "as of " + when);
  });
  $("what-if-form").addEventListener("submit", (e) => { e.preventDefault(); whatIf($("what-if-policy").value); });
  $("refresh-projections").addEventListener("click", loadProjections);
  const saved = sessionStorage.getItem("downloads-token");
  if (saved) signIn(saved); else $("token").focus();
});
