// ServerActions log viewer. Every value from the API goes into the page through textContent or
// attribute setters: never as HTML.
"use strict";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- the API token ----------------------------------------------------------------------------
// Kept only in sessionStorage (this tab, until it closes): never in a cookie, never in a URL.
const TOKEN_KEY = "sa_token";
function token() { return sessionStorage.getItem(TOKEN_KEY); }
function authHeaders(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set("Authorization", "Bearer " + t);
  return h;
}
const TERMINAL = ["succeeded", "failed", "cancelled", "timed_out", "interrupted"];

// The shown page: its timers and requests end when another page (or the prompt) replaces it.
let view = { gen: 0, ctl: new AbortController(), timers: [] };
function stopView() {
  view.timers.forEach(clearInterval);
  view.ctl.abort();
  view = { gen: view.gen + 1, ctl: new AbortController(), timers: [] };
}
// A periodic refresh of the shown page; a failed round is skipped (a 401 already shows the prompt).
function every(ms, fn) { view.timers.push(setInterval(() => { fn().catch(() => {}); }, ms)); }
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
// The API's {"error": ...} message of a failed response.
async function failure(r) {
  const body = await r.json().catch(() => ({}));
  return new HttpError(r.status, body.error || r.statusText || "HTTP " + r.status);
}

// A token typed into the prompt that no API answer has accepted yet.
let unconfirmed = false;
// Every request with the token; a 401 (bad, expired or revoked token) drops it and asks again.
async function authFetch(path, opts) {
  const gen = view.gen;
  const o = opts || {};
  const r = await fetch(path, { ...o, headers: authHeaders(o.headers), signal: o.signal || view.ctl.signal });
  if (r.ok) { unconfirmed = false; return r; }
  const err = await failure(r);
  if (gen === view.gen && (r.status === 401 || (r.status === 429 && unconfirmed))) signedOut(err.message);
  throw err;
}

async function api(path, opts) {
  const r = await authFetch(path, opts);
  return r.json().catch(() => ({}));
}

function signOutButton() { return document.getElementById("sign-out"); }
function signedOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  unconfirmed = false;
  stopView();
  showPrompt(message);
}

// The sign-in form, in place of the page.
function showPrompt(message) {
  const so = signOutButton(); if (so) so.hidden = true;
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "off",
    spellcheck: "false", required: "", placeholder: "API token" });
  const submit = el("button", { id: "token-submit", type: "submit", text: "Sign in" });
  const error = el("p", { id: "token-error", class: "form-error", role: "alert", text: message || "" });
  const form = el("form", { id: "token-form", class: "signin" },
    el("h1", { text: "Sign in" }),
    el("p", {}, "The viewer reads the API with an API token: create one with ",
      el("code", { text: "sactl tokens create" }),
      ", or use the admin token from the file the api writes on its first start."),
    el("p", { class: "muted", text: "The token is kept in this browser tab only (session storage), until you sign out or close the tab." }),
    el("label", { for: "token", text: "API token" }), el("div", { class: "bar" }, input, submit), error);
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    unconfirmed = true;
    submit.disabled = true; error.textContent = "";
    // Try the token before leaving the form: a 401 (or 429) shows the prompt again with the
    // API's message (authFetch does that); any other answer, a 403 too, goes on to the page.
    const gen = view.gen;
    try { await authFetch("/v1/actions?limit=1"); }
    catch (e) {
      if (gen !== view.gen) return; // the prompt was shown again, with the message
      if (!(e instanceof HttpError)) {
        sessionStorage.removeItem(TOKEN_KEY); unconfirmed = false;
        error.textContent = "The API did not answer: " + e.message;
        submit.disabled = false;
        return;
      }
    }
    show();
  };
  app().replaceChildren(form);
  input.focus();
}

function statusBadge(s) { return el("span", { class: "status status-" + s, text: s }); }
function when(t) { return t ? new Date(t).toISOString().replace("T", " ").slice(0, 19) : ""; }
function duration(a) {
  if (!a.started_at) return "";
  const end = a.finished_at ? new Date(a.finished_at) : new Date();
  const s = (end - new Date(a.started_at)) / 1000;
  return s < 60 ? s.toFixed(1) + " s" : Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
}
function app() { return document.getElementById("app"); }
function link(href, text) { return el("a", { href, text }); }

// ---- /ui/actions ----------------------------------------------------------------------------
async function actionsPage() {
  const params = new URLSearchParams(location.search);
  const form = el("form", { class: "filters", id: "filters" });
  const field = (name, input) => { input.name = name; input.value = params.get(name) || ""; form.append(input); };
  field("server", el("input", { placeholder: "server" }));
  const kind = el("select"); for (const k of ["", "run_script"]) kind.append(el("option", { value: k, text: k || "any kind" }));
  field("kind", kind);
  const status = el("select");
  for (const s of ["", "queued", "waiting", "running", "succeeded", "failed", "cancelled", "timed_out", "interrupted"])
    status.append(el("option", { value: s, text: s || "any status" }));
  field("status", status);
  // Time range, in the browser's time zone; sent as UTC.
  const since = el("input", { type: "datetime-local", title: "created since" });
  const until = el("input", { type: "datetime-local", title: "created before" });
  since.value = params.get("since_local") || ""; until.value = params.get("until_local") || "";
  since.name = "since_local"; until.name = "until_local";
  form.append(since, until, el("button", { type: "submit", text: "Filter" }));
  const table = el("table", { id: "actions" });
  const more = el("button", { id: "older", text: "Older", hidden: "" });
  app().replaceChildren(el("h1", { text: "Actions" }), form, table, el("div", { class: "bar" }, more));

  let before = params.get("before");
  const query = () => {
    const q = new URLSearchParams();
    for (const k of ["server", "kind", "status"]) if (params.get(k)) q.set(k, params.get(k));
    for (const k of ["since", "until"]) {
      const v = params.get(k + "_local");
      if (v) q.set(k, new Date(v).toISOString());
    }
    q.set("limit", "50");
    return q;
  };
  const head = el("tr"); for (const h of ["ID", "Server", "Kind", "Status", "Exit", "Created", "Duration", "Worker", "By"]) head.append(el("th", { text: h }));
  const render = (actions, append) => {
    if (!append) table.replaceChildren(head);
    for (const a of actions) {
      table.append(el("tr", { "data-id": a.id },
        el("td", {}, link("/ui/actions/" + a.id, String(a.id))),
        el("td", {}, link("/ui/servers/" + encodeURIComponent(a.server), a.server)),
        el("td", { text: a.kind }), el("td", {}, statusBadge(a.status)),
        el("td", { text: a.exit_code ?? "" }), el("td", { text: when(a.created_at) }),
        el("td", { text: duration(a) }), el("td", { text: a.worker || "" }),
        el("td", { class: "by", text: a.submitted_by || "" })));
    }
  };
  const load = async (append) => {
    const q = query(); if (append && before) q.set("before", before);
    const r = await api("/v1/actions?" + q);
    render(r.actions, append);
    if (!append || r.next_before) before = r.next_before;
    more.hidden = !r.next_before;
  };
  more.onclick = () => load(true);
  await load(false);
  // The first page refreshes itself while actions run.
  every(2000, async () => { if (table.rows.length <= 51) await load(false); });
}

// ---- /ui/actions/{id} -----------------------------------------------------------------------
async function actionPage(id) {
  const facts = el("dl", { class: "facts", id: "facts" });
  const log = el("pre", { class: "log", id: "log" });
  const cancel = el("button", { id: "cancel", text: "Cancel" });
  const search = el("input", { id: "search", placeholder: "search the log" });
  const searchForm = el("form", { class: "bar", id: "search-form" }, search, el("button", { type: "submit", text: "Search" }));
  const results = el("div", { class: "results", id: "results", hidden: "" });
  const more = el("button", { id: "more", text: "More", hidden: "" });
  const end = el("button", { id: "end", text: "Jump to end" });
  // A plain link would go without the token: fetch the file, then save it from memory.
  const download = el("button", { id: "download", type: "button", text: "Download" });
  download.onclick = async () => {
    download.disabled = true;
    try {
      const blob = await (await authFetch(`/v1/actions/${id}/log?download=1`)).blob();
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: `action-${id}.log` });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      download.textContent = "Download";
    } catch (e) { download.textContent = "Download failed: " + e.message; }
    download.disabled = false;
  };
  app().replaceChildren(el("h1", { id: "title", text: "Action " + id }), facts,
    el("div", { class: "bar" }, cancel, end, download), searchForm, results, log, el("div", { class: "bar" }, more));

  let action = await api("/v1/actions/" + id);
  const showFacts = () => {
    const rows = [["Server", link("/ui/servers/" + encodeURIComponent(action.server), action.server)],
      ["Kind", action.kind], ["Status", statusBadge(action.status)], ["Exit code", action.exit_code ?? ""],
      ["Created", when(action.created_at)], ["Submitted by", action.submitted_by || ""], ["Started", when(action.started_at)], ["Finished", when(action.finished_at)],
      ["Duration", duration(action)], ["Worker", action.worker || ""], ["Attempt", String(action.attempt)]];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
    cancel.hidden = TERMINAL.includes(action.status);
  };
  showFacts();

  let last = 0;
  const line = (l) => el("div", { class: l.stream === "system" ? "sys" : l.stream === "stderr" ? "err" : "", "data-seq": l.seq, text: l.text });
  const page = async () => {
    const r = await api(`/v1/actions/${id}/lines?after=${last}&limit=1000`);
    for (const l of r.lines) { log.append(line(l)); last = l.seq; }
    more.hidden = last >= r.last_seq;
    return r;
  };
  more.onclick = page;
  end.onclick = async () => {
    const r = await api(`/v1/actions/${id}/lines?tail=1000`);
    log.replaceChildren(...r.lines.map(line));
    last = r.last_seq; more.hidden = true;
    log.scrollTop = log.scrollHeight;
  };
  cancel.onclick = async () => {
    action = await api(`/v1/actions/${id}/cancel`, { method: "POST" }).catch((e) => { cancel.textContent = "Cancel failed: " + e.message; return action; });
    showFacts();
  };
  searchForm.onsubmit = async (ev) => {
    ev.preventDefault();
    if (!search.value) return;
    const r = await api(`/v1/actions/${id}/lines?limit=200&q=${encodeURIComponent(search.value)}`);
    results.hidden = false;
    results.replaceChildren(el("div", { class: "muted", text: r.lines.length + " matching lines" + (r.lines.length === 200 ? " (first 200)" : "") }),
      ...r.lines.map((l) => el("div", { "data-seq": l.seq, text: l.seq + ": " + l.text })));
  };

  const first = await page();
  // Live tail while it runs: server-sent events after `last`, read with fetch (EventSource
  // cannot send the token); a dropped stream is resumed after the last line shown.
  if (!TERMINAL.includes(first.status) && last >= first.last_seq) {
    const gen = view.gen;
    let over = false;
    const append = (ev) => {
      if (ev.event === "end") { over = true; return; }
      if (ev.event !== "message") return;
      const seq = Number(ev.id);
      if (!(seq > last)) return;
      const text = ev.data;
      const follow = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
      log.append(el("div", { class: text.includes("] [ServerActionsWorker] : ") ? "sys" : "", "data-seq": seq, text }));
      last = seq;
      if (follow) log.scrollTop = log.scrollHeight;
    };
    every(3000, async () => { if (!over) { action = await api("/v1/actions/" + id); showFacts(); } });
    (async () => {
      let failedSinceEnd = 0;
      while (!over && gen === view.gen) {
        try { await events(`/v1/actions/${id}/log?after=${last}`, append); }
        catch (e) {
          if (gen !== view.gen) return; // another page, or the prompt
          // A refused stream (not found, no role, ...) is not retried; a dropped one is.
          if (e instanceof HttpError && e.status < 500 && e.status !== 429) {
            log.after(el("p", { class: "error", text: "Live log stopped: " + e.message }));
            return;
          }
        }
        if (over || gen !== view.gen) break;
        // Over while the stream was down: one more try fetches its last lines and the end.
        if (TERMINAL.includes(action.status) && ++failedSinceEnd > 1) break;
        await sleep(1000);
      }
      if (gen !== view.gen) return;
      action = await api("/v1/actions/" + id);
      showFacts();
    })().catch(() => {});
  }
}

// Read the server-sent events of `path` (with the token), calling onEvent({event, id, data})
// for each; resolves when the server closes the stream. Parses the stream as the HTML spec
// says: lines end with CRLF, LF or CR (chunks may split anywhere, even a CRLF), `:` starts a
// comment (keep-alive), data lines join with "\n", a blank line ends an event.
async function events(path, onEvent) {
  const r = await authFetch(path, { headers: { Accept: "text/event-stream" }, cache: "no-store" });
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let lastId = "", type = "", data = [];
  const field = (line) => {
    if (line === "") {
      if (data.length) onEvent({ event: type || "message", id: lastId, data: data.join("\n") });
      type = ""; data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") data.push(value);
    else if (name === "event") type = value;
    else if (name === "id" && !value.includes("\0")) lastId = value;
  };
  const lines = (done) => {
    let start = 0;
    const eol = /\r\n|\r|\n/g;
    for (let m; (m = eol.exec(buf)); ) {
      // A CR last in the buffer may be the first half of a CRLF: wait for the next chunk.
      if (m[0] === "\r" && m.index === buf.length - 1 && !done) break;
      field(buf.slice(start, m.index));
      start = eol.lastIndex;
    }
    buf = buf.slice(start);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { buf += decoder.decode(); lines(true); return; } // an unfinished event is dropped
    buf += decoder.decode(value, { stream: true });
    lines(false);
  }
}

// ---- /ui/servers and /ui/servers/{name} -----------------------------------------------------
async function serversPage() {
  const r = await api("/v1/servers");
  const table = el("table", { id: "servers" }, el("tr", {}, ...["Name", "Address", "User", "State"].map((h) => el("th", { text: h }))));
  for (const s of r.servers)
    table.append(el("tr", {}, el("td", {}, link("/ui/servers/" + encodeURIComponent(s.name), s.name)),
      el("td", { text: s.address ? s.address + ":" + s.ssh_port : "(not yet)" }), el("td", { text: s.ssh_user }),
      el("td", { text: s.state })));
  app().replaceChildren(el("h1", { text: "Servers" }), table);
}

async function serverPage(name) {
  const s = await api("/v1/servers/" + encodeURIComponent(name));
  const lock = s.lock
    ? el("span", {}, "held by ", link("/ui/actions/" + s.lock.action_id, "action " + s.lock.action_id), " (worker " + s.lock.holder + ", until " + when(s.lock.expires_at) + ")")
    : "free";
  const facts = el("dl", { class: "facts" }, el("dt", { text: "Address" }), el("dd", { text: s.address + ":" + s.ssh_port }),
    el("dt", { text: "User" }), el("dd", { text: s.ssh_user }), el("dt", { text: "Lock" }), el("dd", { id: "lock" }, lock));
  facts.append(el("dt", { text: "State" }), el("dd", { id: "state" }, s.state));
  if (s.instance_id)
    facts.append(el("dt", { text: "Instance" }), el("dd", { id: "instance" },
      s.instance_id + (s.launch_profile ? " (profile " + s.launch_profile + ")" : "")));
  if (s.cluster)
    facts.append(el("dt", { text: "Cluster" }), el("dd", { id: "role" }, (s.db_role || "member") + " of ",
      link("/ui/clusters/" + encodeURIComponent(s.cluster), s.cluster)));
  if (s.deployment) facts.append(el("dt", { text: "Deployment" }), el("dd", { id: "deployment", text: s.deployment }));
  // The template's operational scripts, offered to run here (with the inherited inputs).
  const offered = el("div", { id: "operational" });
  if (s.template) {
    facts.append(el("dt", { text: "Template" }), el("dd", { id: "template", text: s.template }));
    const t = await api("/v1/templates/" + encodeURIComponent(s.template));
    for (const ref of t.spec.operational) {
      const b = el("button", { class: "run-script", text: "Run " + ref.name + (ref.revision ? " (revision " + ref.revision + ")" : "") });
      b.onclick = async () => {
        b.disabled = true;
        try {
          const a = await api("/v1/actions", { method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ server: name, kind: "run_script", params: { script_ref: ref } }) });
          location.href = "/ui/actions/" + a.id;
        } catch (e) { b.textContent = "Run " + ref.name + " failed: " + e.message; b.disabled = false; }
      };
      offered.append(b, " ");
    }
  }
  const list = async (q) => (await api("/v1/actions?server=" + encodeURIComponent(name) + "&" + q)).actions;
  const table = (actions, id) => {
    const t = el("table", { id }, el("tr", {}, ...["ID", "Kind", "Status", "Created"].map((h) => el("th", { text: h }))));
    for (const a of actions) t.append(el("tr", {}, el("td", {}, link("/ui/actions/" + a.id, String(a.id))),
      el("td", { text: a.kind }), el("td", {}, statusBadge(a.status)), el("td", { text: when(a.created_at) })));
    return t;
  };
  app().replaceChildren(el("h1", { text: "Server " + s.name }), facts,
    ...(offered.childNodes.length ? [el("h2", { text: "Operational scripts" }), offered] : []),
    el("h2", { text: "Waiting for the lock" }), table(await list("status=waiting&limit=50"), "waiting"),
    el("h2", { text: "Last actions" }), table(await list("limit=20"), "recent"));
}

// ---- /ui/clusters/{name} --------------------------------------------------------------------
async function clusterPage(name) {
  const c = await api("/v1/clusters/" + encodeURIComponent(name));
  const server = (n) => link("/ui/servers/" + encodeURIComponent(n), n);
  const slaves = el("span", { id: "slaves" });
  c.slaves.forEach((n, i) => { if (i) slaves.append(", "); slaves.append(server(n)); });
  if (!c.slaves.length) slaves.append("none");
  const facts = el("dl", { class: "facts", id: "cluster" },
    el("dt", { text: "Master" }), el("dd", { id: "master" }, c.master ? server(c.master) : "none"),
    el("dt", { text: "Slaves" }), el("dd", {}, slaves),
    el("dt", { text: "Master DNS record" }),
    el("dd", { id: "dns", text: c.dns.name + " → " + (c.dns.address || "unset") + " (TTL " + c.dns.ttl + " s)" }),
    el("dt", { text: "Fencing" }), el("dd", { id: "fence", text: c.fence }),
    el("dt", { text: "Locked by" }), el("dd", {}, c.locked_by ? link("/ui/actions/" + c.locked_by, "action " + c.locked_by) : "nobody"));
  const f = c.failover;
  if (f) {
    const auto = !f.auto_failover ? "off" : f.blocked_until ? "on, blocked until " + when(f.blocked_until) + " (ack to lift)" : "on";
    facts.append(el("dt", { text: "Automatic failover" }), el("dd", { id: "auto-failover", text: auto + (f.semi_sync ? "; semi-sync" : "") }));
    if (f.analysis) {
      facts.append(el("dt", { text: "Watcher" }),
        el("dd", { id: "analysis", text: f.analysis + ": " + (f.detail || "") + " (" + (f.watcher || "?") + ", " + when(f.observed_at) + ")" }));
    }
    if (f.plan && f.plan.candidate !== undefined) {
      facts.append(el("dt", { text: "Failover plan" }), el("dd", { id: "plan",
        text: f.plan.candidate ? "promote " + f.plan.candidate + "; " + f.plan.fence + (f.plan.spare ? "; spare " + f.plan.spare : "")
          : "refused: " + (f.plan.refused || []).join("; ") }));
    }
  }
  const recent = el("table", { id: "recent" }, el("tr", {}, ...["ID", "Server", "Kind", "Status", "Created"].map((h) => el("th", { text: h }))));
  for (const n of [c.master, ...c.slaves].filter(Boolean)) {
    for (const a of (await api("/v1/actions?limit=10&server=" + encodeURIComponent(n))).actions) {
      if (!a.kind.startsWith("db_")) continue;
      recent.append(el("tr", {}, el("td", {}, link("/ui/actions/" + a.id, String(a.id))), el("td", { text: a.server }),
        el("td", { text: a.kind }), el("td", {}, statusBadge(a.status)), el("td", { text: when(a.created_at) })));
    }
  }
  // Every member as a worker last saw it; detached and fenced-pending ones say why.
  const members = el("table", { id: "members" }, el("tr", {},
    ...["Server", "Role", "IO", "SQL", "Lag (s)", "Received", "Applied", "Seen", "State"].map((h) => el("th", { text: h }))));
  for (const m of c.members) {
    const r = m.repl_state || {};
    const state = m.fenced_pending ? "fenced pending: " + m.fenced_pending : m.detached ? "detached: " + m.detached : "in service";
    members.append(el("tr", {}, el("td", {}, server(m.name)), el("td", { text: m.role || "-" }),
      el("td", { text: r.io_running || "" }), el("td", { text: r.sql_running || "" }),
      el("td", { text: r.heartbeat_lag_s != null ? r.heartbeat_lag_s.toFixed(2) : r.seconds_behind_master == null ? "" : String(r.seconds_behind_master) }),
      el("td", { text: r.received || "" }), el("td", { text: r.applied || "" }),
      el("td", { text: m.repl_state_at ? when(m.repl_state_at) : "" }), el("td", { text: state })));
  }
  const events = el("table", { id: "events" }, el("tr", {}, ...["When", "Action", "What happened"].map((h) => el("th", { text: h }))));
  for (const e of c.events) {
    events.append(el("tr", {}, el("td", { text: when(e.at) }),
      el("td", {}, e.action_id ? link("/ui/actions/" + e.action_id, String(e.action_id)) : "-"), el("td", { text: e.message })));
  }
  app().replaceChildren(el("h1", { text: "Cluster " + c.name }), facts,
    el("h2", { text: "Members" }), members, el("h2", { text: "Timeline" }), events,
    el("h2", { text: "Recent DB actions" }), recent);
}

// ---- /ui/schedules --------------------------------------------------------------------------
async function schedulesPage() {
  const r = await api("/v1/schedules");
  const table = el("table", { id: "schedules" }, el("tr", {},
    ...["Name", "Target", "Kind", "When", "Next", "Last runs"].map((h) => el("th", { text: h }))));
  for (const s of r) {
    const target = s.target.server
      ? link("/ui/servers/" + encodeURIComponent(s.target.server), s.target.server)
      : el("span", {}, link("/ui/clusters/" + encodeURIComponent(s.target.cluster), s.target.cluster), " " + s.target.role);
    const runs = el("span", { class: "runs" });
    for (const run of s.last_runs.slice(0, 5)) {
      if (run.action_id) {
        const a = link("/ui/actions/" + run.action_id, when(run.slot).slice(11));
        if (run.reason) a.title = run.reason; // a catch-up run after downtime
        runs.append(a, " ", statusBadge(run.status || "queued"), " ");
      }
      else runs.append(el("span", { class: "skipped", title: run.reason || "", text: when(run.slot).slice(11) + " skipped" }), " ");
    }
    table.append(el("tr", {}, el("td", { text: s.name }), el("td", {}, target), el("td", { text: s.kind }),
      el("td", { text: s.cron || ("every " + s.every_s + " s") }),
      el("td", { text: s.enabled ? when(s.next_fire_at) : "disabled" }), el("td", {}, runs)));
  }
  app().replaceChildren(el("h1", { text: "Schedules" }), table);
}

// ---- /ui/runs and /ui/runs/{id} ---------------------------------------------------------------
async function runsPage() {
  const r = await api("/v1/runs");
  const table = el("table", { id: "runs" }, el("tr", {},
    ...["Run", "Kind", "Servers", "Concurrency", "Submitted", "Finished", "Stopped"].map((h) => el("th", { text: h }))));
  for (const run of r.runs) {
    table.append(el("tr", {}, el("td", {}, link("/ui/runs/" + run.id, String(run.id))), el("td", { text: run.kind }),
      el("td", { text: String(run.total) }), el("td", { text: String(run.concurrency) }),
      el("td", { text: when(run.created_at) + " by " + run.submitted_by }),
      el("td", { text: run.finished_at ? when(run.finished_at) : "running" }), el("td", { text: run.stopped_reason || "" })));
  }
  app().replaceChildren(el("h1", { text: "Runs" }), table);
}

// A run: its counts and one cell per server, refreshed until it ends.
async function runPage(id) {
  const gen = view.gen;
  const draw = async () => {
    const run = await api("/v1/runs/" + encodeURIComponent(id));
    if (gen !== view.gen) return true;
    const counts = el("p", { id: "counts" });
    for (const [status, n] of Object.entries(run.counts)) counts.append(statusBadge(status), " " + n + "  ");
    const grid = el("div", { id: "grid", class: "grid" });
    for (const a of run.actions) {
      const cell = el("a", { href: "/ui/actions/" + a.id, class: "cell status-" + a.status, "data-status": a.status,
        title: a.server + ": " + a.status + (a.exit_code != null ? " (exit " + a.exit_code + ")" : "") + (a.error ? " — " + a.error : "") });
      cell.append(el("span", { text: a.server }));
      grid.append(cell);
    }
    const limits = [run.max_failures != null ? "max_failures " + run.max_failures : "",
      run.max_fail_percent != null ? "max_fail_percent " + run.max_fail_percent + "%" : ""].filter(Boolean).join(", ");
    const facts = el("dl", { class: "facts" },
      el("dt", { text: "Kind" }), el("dd", { text: run.kind }),
      el("dt", { text: "Target" }), el("dd", { text: JSON.stringify(Object.fromEntries(Object.entries(run.target).filter(([, v]) => v != null))) }),
      el("dt", { text: "Concurrency" }), el("dd", { text: run.concurrency + (limits ? "; " + limits : "") }),
      el("dt", { text: "Submitted" }), el("dd", { text: when(run.created_at) + " by " + run.submitted_by }),
      el("dt", { text: "Finished" }), el("dd", { id: "finished", text: run.finished_at ? when(run.finished_at) : "running" }),
      el("dt", { text: "Stopped" }), el("dd", { id: "stopped", text: run.stopped_reason || "no" }));
    app().replaceChildren(el("h1", { text: "Run " + run.id }), facts, counts, grid);
    return run.finished_at != null;
  };
  if (!(await draw())) every(1000, async () => { await draw(); });
}

// ---- routing --------------------------------------------------------------------------------
// The page for the address, or the sign-in form without a token.
async function show() {
  stopView();
  const gen = view.gen;
  const so = signOutButton();
  if (!token()) { showPrompt(""); return; }
  if (so) so.hidden = false;
  app().replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  const p = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (p[1] === "actions" && p[2]) await actionPage(p[2]);
    else if (p[1] === "servers" && p[2]) await serverPage(p[2]);
    else if (p[1] === "clusters" && p[2]) await clusterPage(p[2]);
    else if (p[1] === "servers") await serversPage();
    else if (p[1] === "schedules") await schedulesPage();
    else if (p[1] === "runs" && p[2]) await runPage(p[2]);
    else if (p[1] === "runs") await runsPage();
    else await actionsPage();
  } catch (e) {
    // A 401 already shows the prompt (and a newer page may be shown): only this page's errors.
    if (gen !== view.gen) return;
    app().replaceChildren(el("p", { class: "error", text: "Error: " + e.message }));
  }
}

const signOut = signOutButton();
if (signOut) signOut.onclick = () => signedOut("");
show();
