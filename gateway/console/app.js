// The distcron console: a small single-page app over /api/v1, no build step, no dependencies.
// Every piece of user data goes into the page as text (textContent), never as HTML.
"use strict";

const SKEW_BOUND_MS = 500;
const main = document.getElementById("main");
let role = sessionStorage.getItem("distcron.role") || "";
let activeStream = null;

// ---- small DOM helpers ------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  if (activeStream) { activeStream.close(); activeStream = null; }
  main.replaceChildren(...nodes);
  main.focus();
}

function toast(message, bad) {
  const box = el("div", { class: bad ? "bad" : "", text: message });
  document.getElementById("toast").append(box);
  setTimeout(() => box.remove(), 5000);
}

function fmtTime(ms) {
  if (!ms) return "—";
  const d = new Date(Number(ms));
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function fmtDuration(run) {
  if (!run.startTime || !run.endTime) return run.status === "running" ? "running" : "—";
  const ms = run.endTime - run.startTime;
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// A time for a datetime-local input (this browser's zone, to the second), and back to ms.
function localInput(ms) {
  if (!ms) return "";
  return fmtTime(ms).replace(" ", "T");
}

function fromLocalInput(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? null : ms;
}

function statusBadge(status) {
  return el("span", { class: `status ${status || ""}`, text: status || "—" });
}

const may = (needed) => {
  const order = ["viewer", "operator", "admin"];
  return order.indexOf(role) >= order.indexOf(needed);
};

// ---- API ----------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.field = body && body.error && body.error.field;
  }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { "X-Requested-With": "XMLHttpRequest" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    role = "";
    sessionStorage.removeItem("distcron.role");
    location.hash = "#/login";
    throw new ApiError(401, null);
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const enc = encodeURIComponent;

// ---- login --------------------------------------------------------------------------------------
function loginPage() {
  document.getElementById("nav").hidden = true;
  const input = el("input", { id: "token", type: "password", autocomplete: "current-password", required: true });
  const error = el("div", { class: "field-error", id: "token-error" });
  const form = el("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const who = await api("POST", "/api/v1/session", { token: input.value });
      role = who.role;
      sessionStorage.setItem("distcron.role", role);
      sessionStorage.setItem("distcron.name", who.name);
      location.hash = "#/jobs";
    } catch (err) {
      error.textContent = err.status === 401 ? "Unknown token." : err.message;
    }
  } },
  el("h1", { text: "Log in" }),
  el("label", { for: "token", text: "Access token" }), input, error,
  el("div", { class: "bar" }, el("button", { class: "primary", type: "submit", text: "Log in" })));
  show(form);
  input.focus();
}

// ---- jobs ---------------------------------------------------------------------------------------
async function jobsPage() {
  const filter = el("input", { id: "filter", type: "search", placeholder: "Filter by name", "aria-label": "Filter jobs by name" });
  const body = el("tbody");
  const table = el("div", { class: "scroll" }, el("table", { id: "jobs" },
    el("thead", {}, el("tr", {}, ["Name", "Schedule", "Time zone", "Enabled", "Last run", "Next fire", "Actions"].map((h) => el("th", { text: h })))),
    body));
  show(el("h1", { text: "Jobs" }),
    el("div", { class: "bar" }, filter,
      may("admin") ? el("a", { class: "button primary", href: "#/jobs/new", id: "new-job", text: "New job" }) : null),
    table);
  let jobs = [];
  try {
    let token = "";
    do {
      const page = await api("GET", `/api/v1/jobs?pageSize=1000&pageToken=${enc(token)}`);
      jobs = jobs.concat(page.jobs);
      token = page.nextPageToken;
    } while (token);
  } catch (err) {
    if (err.status !== 401) toast(err.message, true);
    return;
  }
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    body.replaceChildren(...jobs.filter((j) => j.name.toLowerCase().includes(q)).map(jobRow));
  };
  filter.addEventListener("input", render);
  render();
}

function jobRow(job) {
  const last = el("td", { text: "…" });
  const next = el("td", { text: "…" });
  const description = el("div", { class: "hint" });
  const row = el("tr", { "data-job": job.name },
    el("td", {}, el("a", { href: `#/jobs/${enc(job.name)}/runs`, text: job.name }),
      el("div", {}, el("code", { class: "muted", text: job.command }))),
    el("td", {}, el("code", { text: job.cronExpr }), description),
    el("td", { text: job.timeZone || "UTC" }),
    el("td", {}, job.done ? el("span", { class: "status done", title: "Will never fire again", text: "done" })
      : job.enabled ? "yes" : "paused"),
    last, next,
    el("td", { class: "actions" },
      may("operator") ? el("button", { type: "button", text: "Run now", onclick: () => act(`/api/v1/jobs/${enc(job.name)}/trigger`, `Started ${job.name}`) }) : null, " ",
      may("operator") ? el("button", { type: "button", text: "Kill", onclick: () => act(`/api/v1/jobs/${enc(job.name)}/kill`, `Kill sent to ${job.name}`) }) : null, " ",
      may("operator") ? el("button", { type: "button", text: job.enabled ? "Disable" : "Enable",
        onclick: () => act(`/api/v1/jobs/${enc(job.name)}/${job.enabled ? "disable" : "enable"}`, `${job.name} ${job.enabled ? "paused" : "enabled"}`, true) }) : null, " ",
      may("admin") ? el("a", { class: "button", href: `#/jobs/${enc(job.name)}/edit`, text: "Edit" }) : null, " ",
      may("admin") ? el("button", { type: "button", class: "danger", text: "Delete", onclick: async () => {
        if (!confirm(`Delete job ${job.name}? Its history is kept.`)) return;
        await act(`/api/v1/jobs/${enc(job.name)}`, `Deleted ${job.name}`, true, "DELETE");
      } }) : null));
  api("GET", `/api/v1/jobs/${enc(job.name)}/stats`).then((s) => {
    last.replaceChildren(s.lastRun ? statusBadge(s.lastRun.status) : "—", s.lastRun ? ` ${fmtTime(s.lastRun.startTime)}` : "");
  }).catch(() => { last.textContent = "?"; });
  if (job.done) {
    next.textContent = "never (done)";
  } else if (job.enabled) {
    api("POST", "/api/v1/schedule/preview", { cronExpr: job.cronExpr, timeZone: job.timeZone, name: job.name, count: 1,
      startAt: job.startAt, endAt: job.endAt }).then((p) => {
      next.textContent = p.fireTimesMs.length ? fmtTime(p.fireTimesMs[0]) : "never";
      description.textContent = p.description || "";
    }).catch(() => { next.textContent = "?"; });
  } else {
    next.textContent = "paused";
  }
  return row;
}

async function act(path, done, reload, method) {
  try {
    await api(method || "POST", path);
    toast(done);
    if (reload) route();
  } catch (err) {
    if (err.status !== 401) toast(err.message, true);
  }
}

// ---- editor -------------------------------------------------------------------------------------
async function editorPage(name) {
  let job = { name: "", command: "", cronExpr: "", timeZone: "", timeoutSeconds: 0, overlapPolicy: "forbid",
    missedPolicy: "skip", missedWindowSeconds: 0, workingDir: "", env: {}, user: "", enabled: true };
  if (name) {
    try { job = await api("GET", `/api/v1/jobs/${enc(name)}`); } catch (err) { toast(err.message, true); return; }
  }
  const errors = {};
  const field = (id, label, input, hint, wide) => {
    errors[id] = el("div", { class: "field-error", id: `${id}-error` });
    return el("div", { class: wide ? "wide" : "" }, el("label", { for: id, text: label }), input,
      hint ? el("div", { class: "hint", text: hint }) : null, errors[id]);
  };
  const input = (id, value, attrs) => el("input", Object.assign({ id, name: id, value: value ?? "" }, attrs || {}));
  const select = (id, value, options) => {
    const s = el("select", { id, name: id }, options.map((o) => el("option", { value: o, text: o })));
    s.value = value;
    return s;
  };
  const nameInput = input("name", job.name, { required: true, readonly: !!name, autocomplete: "off" });
  const command = el("textarea", { id: "command", name: "command", required: true });
  command.value = job.command;
  const cron = input("cronExpr", job.cronExpr, { required: true, autocomplete: "off", placeholder: "*/5 * * * *" });
  const tz = input("timeZone", job.timeZone, { list: "zones", placeholder: "UTC", autocomplete: "off" });
  const startAt = input("startAt", localInput(job.startAt), { type: "datetime-local", step: 1 });
  const endAt = input("endAt", localInput(job.endAt), { type: "datetime-local", step: 1 });
  const zones = el("datalist", { id: "zones" }, (Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : []).map((z) => el("option", { value: z })));
  const timeout = input("timeoutSeconds", job.timeoutSeconds, { type: "number", min: 0 });
  const overlap = select("overlapPolicy", job.overlapPolicy, ["forbid", "allow", "replace"]);
  const missed = select("missedPolicy", job.missedPolicy, ["skip", "latest", "all"]);
  const windowInput = input("missedWindowSeconds", job.missedWindowSeconds, { type: "number", min: 0 });
  const env = el("textarea", { id: "env", name: "env", placeholder: "KEY=value, one per line" });
  env.value = Object.entries(job.env || {}).map(([k, v]) => `${k}=${v}`).join("\n");
  // Secret values never come back: a stored secret shows as its name alone ("set").
  const secretNames = Object.keys(job.secretEnv || {});
  const secrets = el("textarea", { id: "secretEnv", name: "secretEnv", placeholder: "KEY=value, one per line" });
  secrets.value = secretNames.join("\n");
  const secretsSet = el("div", { class: "hint", id: "secretEnv-set",
    text: secretNames.length ? `Set: ${secretNames.join(", ")}` : "None set" });
  const fires = el("ul", { class: "fires", id: "fires", "aria-live": "polite" });
  let previewTimer = 0;
  const preview = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      errors.cronExpr.textContent = "";
      errors.timeZone.textContent = "";
      errors.name.textContent = "";
      errors.startAt.textContent = "";
      errors.endAt.textContent = "";
      if (!cron.value.trim()) { fires.replaceChildren(); return; }
      try {
        const p = await api("POST", "/api/v1/schedule/preview", { cronExpr: cron.value, timeZone: tz.value, name: nameInput.value, count: 5,
          startAt: fromLocalInput(startAt.value), endAt: fromLocalInput(endAt.value) });
        fires.replaceChildren(...(p.description ? [el("li", { class: "muted", text: p.description })] : []),
          ...p.fireTimes.map((t) => el("li", { class: "fire", text: t })));
      } catch (err) {
        fires.replaceChildren();
        const target = ["timeZone", "name", "startAt", "endAt"].includes(err.field) ? errors[err.field] : errors.cronExpr;
        target.textContent = err.message;
      }
    }, 250);
  };
  cron.addEventListener("input", preview);
  tz.addEventListener("input", preview);
  nameInput.addEventListener("input", preview);
  startAt.addEventListener("input", preview);
  endAt.addEventListener("input", preview);
  const formError = el("div", { class: "field-error wide", id: "form-error" });
  const form = el("form", { class: "editor", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    for (const box of Object.values(errors)) box.textContent = "";
    formError.textContent = "";
    const envMap = {};
    for (const line of env.value.split("\n")) {
      if (!line.trim()) continue;
      const at = line.indexOf("=");
      if (at <= 0) { errors.env.textContent = `env: "${line}" is not KEY=value`; return; }
      envMap[line.slice(0, at).trim()] = line.slice(at + 1);
    }
    const secretMap = {};
    for (const line of secrets.value.split("\n")) {
      if (!line.trim()) continue;
      const at = line.indexOf("=");
      if (at === 0) { errors.secretEnv.textContent = `secretEnv: "${line}" has no name`; return; }
      // A name alone keeps the stored value.
      if (at < 0) secretMap[line.trim()] = "";
      else secretMap[line.slice(0, at).trim()] = line.slice(at + 1);
    }
    const body = { name: nameInput.value, command: command.value, cronExpr: cron.value, timeZone: tz.value,
      timeoutSeconds: Number(timeout.value) || 0, overlapPolicy: overlap.value, missedPolicy: missed.value,
      missedWindowSeconds: Number(windowInput.value) || 0, env: envMap, secretEnv: secretMap,
      startAt: fromLocalInput(startAt.value), endAt: fromLocalInput(endAt.value) };
    try {
      if (name) await api("PUT", `/api/v1/jobs/${enc(name)}`, Object.assign(body, { expectedRevision: job.revision }));
      else await api("POST", "/api/v1/jobs", body);
      toast(`Saved ${body.name}`);
      location.hash = "#/jobs";
    } catch (err) {
      const key = err.field && err.field.split(".")[0];
      if (key && errors[key]) errors[key].textContent = err.message;
      else formError.textContent = err.status === 409 ? `${err.message} (reload to see the current version)` : err.message;
    }
  } },
  field("name", "Name", nameInput, "Letters, digits, dot, dash, underscore"),
  field("cronExpr", "Schedule", cron, "5 fields (minute…), 6 (with seconds) or 7 (with year); @daily, @every 5m; once: @at 2027-01-01T09:00:00Z", false),
  field("command", "Command", command, "Run as sh -c", true),
  field("timeZone", "Time zone", tz, "IANA name; empty means UTC"),
  el("div", {}, el("label", { text: "Next fire times" }), fires),
  field("startAt", "Start at", startAt, "No run before this (your browser's time); empty = no bound"),
  field("endAt", "End at", endAt, "No run after this; empty = no end. The job then shows as done"),
  field("timeoutSeconds", "Timeout (seconds, 0 = none)", timeout),
  field("overlapPolicy", "When the previous run is still running", overlap),
  field("missedPolicy", "Missed slots", missed),
  field("missedWindowSeconds", "Missed-slot window (seconds)", windowInput),
  field("env", "Environment", env, null, true),
  field("secretEnv", "Secret environment", secrets,
    "Values are never shown. A name alone keeps its stored value, NAME=value sets it, a removed line removes it. Masked as *** in output.", true),
  el("div", { class: "wide" }, secretsSet),
  formError,
  el("div", { class: "bar wide" }, el("button", { class: "primary", type: "submit", id: "save", text: "Save" }),
    el("a", { class: "button", href: "#/jobs", text: "Cancel" })),
  zones);
  show(el("h1", { text: name ? `Edit ${name}` : "New job" }), form);
  if (job.cronExpr) preview();
  (name ? command : nameInput).focus();
}

// ---- runs ---------------------------------------------------------------------------------------
async function runsPage(name, params) {
  const status = el("select", { id: "status-filter", "aria-label": "Filter by status" },
    ["", "running", "succeeded", "failed", "timed_out", "killed", "lost", "skipped"].map((s) => el("option", { value: s, text: s || "any status" })));
  status.value = params.get("status") || "";
  status.addEventListener("change", () => { location.hash = `#/jobs/${enc(name)}/runs?status=${enc(status.value)}`; });
  const body = el("tbody");
  const more = el("div", { class: "bar" });
  const total = el("span", { class: "muted" });
  show(el("h1", {}, "Runs of ", el("code", { text: name })),
    el("div", { class: "bar" }, el("a", { class: "button", href: "#/jobs", text: "← Jobs" }), status, total,
      may("operator") ? el("button", { type: "button", text: "Run now", onclick: () => act(`/api/v1/jobs/${enc(name)}/trigger`, `Started ${name}`) }) : null,
      el("button", { type: "button", text: "Refresh", onclick: route })),
    el("div", { class: "scroll" }, el("table", { id: "runs" },
      el("thead", {}, el("tr", {}, ["Status", "Started", "Duration", "Slot", "Trigger", "Worker", "Exit", "Error"].map((h) => el("th", { text: h })))),
      body)),
    more);
  const load = async (token) => {
    try {
      const page = await api("GET", `/api/v1/jobs/${enc(name)}/runs?limit=20&withoutOutput=true&status=${enc(status.value)}&pageToken=${enc(token)}`);
      total.textContent = `${page.total} runs`;
      body.append(...page.runs.map((r) => el("tr", { "data-run": r.runId },
        el("td", {}, el("a", { href: `#/runs/${enc(r.runId)}` }, statusBadge(r.status))),
        el("td", { text: fmtTime(r.startTime) }),
        el("td", { text: fmtDuration(r) }),
        el("td", { text: fmtTime(r.planTime) }),
        el("td", { text: r.trigger }),
        el("td", { text: r.workerId }),
        el("td", { text: r.exitCode ?? (r.signal ? `signal ${r.signal}` : "—") }),
        el("td", { text: r.err }))));
      more.replaceChildren(page.nextPageToken ? el("button", { type: "button", text: "Older runs", onclick: () => load(page.nextPageToken) }) : "");
    } catch (err) {
      if (err.status !== 401) toast(err.message, true);
    }
  };
  load("");
}

const TRUNCATION = "\n[... output truncated ...]\n";

function renderOutput(pre, text) {
  const at = text.indexOf(TRUNCATION);
  if (at < 0) { pre.textContent = text; return; }
  pre.replaceChildren(text.slice(0, at), el("span", { class: "trunc", text: TRUNCATION }), text.slice(at + TRUNCATION.length));
}

async function runPage(runId) {
  let run;
  try { run = await api("GET", `/api/v1/runs/${enc(runId)}`); } catch (err) { if (err.status !== 401) toast(err.message, true); return; }
  const status = el("span", { id: "run-status" }, statusBadge(run.status));
  const facts = el("dl", { class: "muted" });
  const pre = el("pre", { class: "output", id: "output", tabindex: 0 });
  const truncated = el("div", { class: "hint", id: "truncated" });
  const update = (r) => {
    status.replaceChildren(statusBadge(r.status));
    facts.replaceChildren(`started ${fmtTime(r.startTime)} · ${fmtDuration(r)} · worker ${r.workerId || "—"} · exit ${r.exitCode ?? (r.signal ? `signal ${r.signal}` : "—")}${r.err ? ` · ${r.err}` : ""}`,
      r.traceId ? el("span", {}, " · trace ", el("code", { id: "trace-id", title: "OpenTelemetry trace id of this run: look it up in your tracing backend", text: r.traceId })) : "");
    truncated.textContent = r.outputTruncated ? `Output truncated: ${r.outputBytes} bytes produced; the start and the end are kept.` : "";
  };
  show(el("h1", {}, "Run of ", el("a", { href: `#/jobs/${enc(run.jobName)}/runs`, text: run.jobName }), " ", status),
    el("div", { class: "bar" },
      may("operator") && run.status === "running" ? el("button", { type: "button", id: "kill-run", class: "danger", text: "Kill",
        onclick: () => act(`/api/v1/jobs/${enc(run.jobName)}/kill`, "Kill sent") }) : null),
    facts, truncated, pre);
  update(run);
  renderOutput(pre, run.output);
  if (run.status === "running") {
    let text = "";
    const stream = new EventSource(`/api/v1/runs/${enc(runId)}/output`);
    activeStream = stream;
    stream.addEventListener("output", (e) => { text += e.data; renderOutput(pre, text); pre.scrollTop = pre.scrollHeight; });
    stream.addEventListener("end", async (e) => {
      stream.close();
      let done = JSON.parse(e.data);
      // The end event carries the run's state; the stored output comes with the run itself.
      try { done = await api("GET", `/api/v1/runs/${enc(runId)}`); } catch (_) { /* keep what streamed */ }
      update(done);
      renderOutput(pre, done.output || text);
      const kill = document.getElementById("kill-run");
      if (kill) kill.remove();
    });
    stream.addEventListener("error", () => { stream.close(); });
  }
}

// ---- workers ------------------------------------------------------------------------------------
async function workersPage() {
  const body = el("tbody");
  show(el("h1", { text: "Workers" }),
    el("div", { class: "bar" }, el("button", { type: "button", text: "Refresh", onclick: route })),
    el("div", { class: "scroll" }, el("table", { id: "workers" },
      el("thead", {}, el("tr", {}, ["Worker", "Host", "Version", "Labels", "Running", "Last heartbeat", "Clock offset", "Claiming"].map((h) => el("th", { text: h })))),
      body)));
  try {
    const list = await api("GET", "/api/v1/workers");
    body.replaceChildren(...list.workers.map((w) => el("tr", { "data-worker": w.workerId, class: Math.abs(w.clockOffsetMs) > SKEW_BOUND_MS ? "skewed" : "" },
      el("td", { text: w.workerId }),
      el("td", { text: `${w.host} ${w.addresses.join(", ")}` }),
      el("td", { text: w.version }),
      el("td", { text: Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "—" }),
      el("td", { text: `${w.running} / ${w.capacity}` }),
      el("td", { text: fmtTime(w.lastHeartbeat) }),
      el("td", { text: `${w.clockOffsetMs} ms` }),
      el("td", { text: w.claiming ? "yes" : `no: ${w.statusReason}` }))));
    if (!list.workers.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No live workers." })));
  } catch (err) {
    if (err.status !== 401) toast(err.message, true);
  }
}

// ---- routing ------------------------------------------------------------------------------------
// With no tokens configured (loopback only) there is nothing to log in with: the console opens as
// admin and says so.
async function checkAuthentication() {
  try {
    const mode = await api("GET", "/api/v1/session");
    if (mode && mode.authentication === false) {
      role = "admin";
      sessionStorage.setItem("distcron.role", role);
      sessionStorage.setItem("distcron.name", "no authentication (loopback only)");
      document.getElementById("logout").hidden = true;
      if (location.hash === "#/login") location.hash = "#/jobs";
    }
  } catch (_) { /* the login page says what is wrong */ }
}

function route() {
  const [path, query] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (!role && parts[0] !== "login") { location.hash = "#/login"; return; }
  if (parts[0] !== "login") {
    document.getElementById("nav").hidden = false;
    const name = sessionStorage.getItem("distcron.name") || "";
    document.getElementById("who").textContent =
      name.startsWith("no authentication") ? name : `${name} (${role})`;
  }
  if (parts[0] === "login") return loginPage();
  if (parts[0] === "workers") return workersPage();
  if (parts[0] === "runs" && parts[1]) return runPage(parts[1]);
  if (parts[0] === "jobs" && parts[1] === "new") return editorPage(null);
  if (parts[0] === "jobs" && parts[1] && parts[2] === "edit") return editorPage(parts[1]);
  if (parts[0] === "jobs" && parts[1] && parts[2] === "runs") return runsPage(parts[1], params);
  return jobsPage();
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("DELETE", "/api/v1/session"); } catch (_) { /* logged out either way */ }
  role = "";
  sessionStorage.clear();
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
checkAuthentication().then(route);
