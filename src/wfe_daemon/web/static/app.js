// wfe-daemon's page: a read-only single-page app over /api/v1.
//
// Routes (the hash): #/runs, #/runs/<id>, #/runs/<id>/nodes/<node>, #/tasks.
// Every value reaches the page through textContent or createElement, never as markup; the
// one document inserted whole (the run's SVG graph) is parsed as XML and stripped of
// scripts, event handlers and links first.
"use strict";

const API = "/api/v1";
const RUN_STATUSES = [
  "RUNNING", "SUCCESS", "PARTIAL_SUCCESS", "FAILED", "CANCELLED", "REJECTED", "DUPLICATE",
];
const NODE_STATUSES = ["PENDING", "RUNNING", "SUCCESS", "FAILED", "SKIPPED", "CANCELLED"];
const SVG_NS = "http://www.w3.org/2000/svg";
const NEVER_RAN = new Set(["REJECTED", "DUPLICATE"]);
const NUMERIC = new Set(["Run", "Attempts", "Duration"]); // right-aligned columns

// What the current view opened (event streams, timers): closed when the route changes.
let cleanups = [];
// Counts route changes: a view whose reads finish after the route changed draws nothing.
let generation = 0;

function onLeave(fn) {
  cleanups.push(fn);
}

function leave() {
  for (const fn of cleanups.splice(0)) fn();
}

// --- small helpers ---------------------------------------------------------------------

// An element with attributes and children (strings become text nodes, null is skipped).
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(href, text, cls) {
  return h("a", { href, class: cls }, text);
}

function runHref(id) {
  return `#/runs/${encodeURIComponent(id)}`;
}

function nodeHref(runId, nodeId) {
  return `${runHref(runId)}/nodes/${encodeURIComponent(nodeId)}`;
}

function badge(status) {
  const text = status || "—";
  return h("span", { class: `badge status-${text}` }, text);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// A stamp in the browser's time zone: 2026-12-04 05:01:02.
function when(stamp) {
  if (!stamp) return "—";
  const d = new Date(stamp);
  if (Number.isNaN(d.getTime())) return String(stamp);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  const m = Math.floor(value / 60);
  if (m < 60) return `${m} m ${pad(Math.round(value % 60))} s`;
  return `${Math.floor(m / 60)} h ${pad(m % 60)} m`;
}

// The duration of something started and maybe finished (running: until now).
function span(started, finished, duration) {
  if (duration !== null && duration !== undefined) return duration;
  if (!started) return null;
  const end = finished ? Date.parse(finished) : Date.now();
  return Math.max(0, (end - Date.parse(started)) / 1000);
}

function firstLine(text) {
  if (!text) return "";
  const line = String(text).split("\n", 1)[0];
  return line.length > 160 ? `${line.slice(0, 159)}…` : line;
}

function pretty(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

class HttpError extends Error {
  constructor(status, message, problems) {
    super(message);
    this.status = status;
    this.problems = problems || [];
  }
}

async function request(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let body = {};
    try {
      body = await response.json();
    } catch (_) {
      body = {};
    }
    throw new HttpError(response.status, body.error || `${response.status} ${response.statusText}`,
      body.problems);
  }
  return response;
}

async function getJson(path) {
  return (await request(path)).json();
}

function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" },
    h("strong", {}, err instanceof HttpError ? `${err.status}: ` : "Error: "),
    err.message,
    err.problems && err.problems.length ? h("ul", {}, err.problems.map((p) => h("li", {}, p))) : null);
}

function setView(...children) {
  const view = document.getElementById("view");
  view.replaceChildren(...children);
  return view;
}

function setTitle(text) {
  document.title = text ? `${text} · wfe-daemon` : "wfe-daemon";
}

// Calls fn at most once per `ms`, after the last call (for refreshes after events).
function debounce(fn, ms) {
  let timer = null;
  const call = () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
  onLeave(() => clearTimeout(timer));
  return call;
}

// Calls fn once after `ms`, unless the view is left first.
function later(fn, ms) {
  const timer = setTimeout(fn, ms);
  onLeave(() => clearTimeout(timer));
}

// How far a status has come: a newer state never gives way to an older one.
function runRank(status) {
  return status === "RUNNING" ? 0 : 1;
}

function nodeRank(status) {
  if (status === "PENDING") return 0;
  return status === "RUNNING" ? 1 : 2;
}

// --- live events -----------------------------------------------------------------------

// Follows /api/v1/events (optionally one run's); handlers by event name. The browser
// reconnects by itself, and when it gives up (the daemon was down when it retried) a new
// stream is opened after a pause. Either way the view reads its state again once the
// stream is back ("reset"): a stream that had seen no event yet has no Last-Event-ID to
// resume from, so the server could not say what was missed.
function follow(query, handlers) {
  const live = document.getElementById("live");
  const setLive = (text, on) => {
    live.textContent = text;
    live.className = on ? "live on" : "live";
  };
  let source = null;
  let timer = null;
  let pause = 1000;
  let broken = false;
  const open = () => {
    source = new EventSource(`${API}/events${query}`);
    source.addEventListener("open", () => {
      setLive("live", true);
      pause = 1000;
      if (broken && handlers.reset) handlers.reset({});
      broken = false;
    });
    source.addEventListener("error", () => {
      setLive("reconnecting", false);
      broken = true;
      if (source.readyState !== EventSource.CLOSED) return;
      timer = setTimeout(open, pause);
      pause = Math.min(pause * 2, 15000);
    });
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => {
        let data = {};
        try {
          data = JSON.parse(event.data || "{}");
        } catch (_) {
          return;
        }
        handler(data);
      });
    }
  };
  open();
  onLeave(() => {
    clearTimeout(timer);
    source.close();
    setLive("", false); // a view that does not follow shows no dot
  });
}

// --- runs ------------------------------------------------------------------------------

const FILTERS = ["status", "workflow", "since", "until"];

function runsQuery(filters, extra) {
  const params = new URLSearchParams();
  for (const key of FILTERS) {
    if (!filters[key]) continue;
    // since/until come from datetime-local inputs (local time): the API takes ISO with offset
    const value = key === "since" || key === "until"
      ? new Date(filters[key]).toISOString() : filters[key];
    params.set(key, value);
  }
  for (const [key, value] of Object.entries(extra || {})) params.set(key, value);
  const text = params.toString();
  return text ? `?${text}` : "";
}

function runsFilterForm(filters) {
  const statusSelect = h("select", { name: "status", id: "f-status" },
    h("option", { value: "" }, "any status"),
    RUN_STATUSES.map((s) => h("option", { value: s, selected: filters.status === s }, s)));
  const field = (label, input) => h("label", {}, h("span", {}, label), input);
  const form = h("form", { class: "filters", id: "run-filters" },
    field("Status", statusSelect),
    field("Workflow", h("input", { name: "workflow", id: "f-workflow", value: filters.workflow || "",
      placeholder: "name", autocomplete: "off" })),
    field("Started since", h("input", { type: "datetime-local", step: 1, name: "since",
      id: "f-since", value: filters.since || "" })),
    field("until", h("input", { type: "datetime-local", step: 1, name: "until", id: "f-until",
      value: filters.until || "" })),
    h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", class: "secondary", onclick: () => { location.hash = "#/runs"; } },
      "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const key of FILTERS) {
      const value = form.elements[key].value.trim();
      if (value) params.set(key, value);
    }
    const text = params.toString();
    location.hash = text ? `#/runs?${text}` : "#/runs";
  });
  return form;
}

function countsBar(counts) {
  const chips = RUN_STATUSES.filter((s) => counts.counts && counts.counts[s])
    .map((s) => h("a", { class: `chip status-${s}`, href: `#/runs?status=${s}`, "data-status": s },
      h("span", { class: "chip-label" }, s), h("span", { class: "chip-count" }, counts.counts[s])));
  return [h("span", { class: "chip total", "data-status": "total" },
    h("span", { class: "chip-label" }, "total"), h("span", { class: "chip-count" }, counts.total)),
  ...chips];
}

function runRow(run) {
  const row = h("tr", { "data-run": run.id },
    h("td", { class: "num" }, link(runHref(run.id), `#${run.id}`)),
    h("td", { class: "workflow" }, run.name || "—"),
    h("td", { class: "status" }, badge(run.status)),
    h("td", { class: "source" }, run.source || "—"),
    h("td", { class: "time" }, when(run.started_at)),
    h("td", { class: "num duration" }, seconds(span(run.started_at, run.finished_at, run.duration))),
    h("td", { class: "error" }, firstLine(run.error)));
  if (run.retry_of !== null && run.retry_of !== undefined) {
    row.children[0].append(" ", h("span", { class: "muted", title: `retry of run ${run.retry_of}` },
      `↻${run.retry_of}`));
  }
  row.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    location.hash = runHref(run.id);
  });
  return row;
}

function matchesFilters(filters, event) {
  if (filters.status && filters.status !== event.status) return false;
  if (filters.workflow && filters.workflow !== event.workflow) return false;
  const started = Date.parse(event.started_at);
  if (filters.since && started < new Date(filters.since).getTime()) return false;
  if (filters.until && started >= new Date(filters.until).getTime()) return false; // exclusive
  return true;
}

async function showRuns(query) {
  setTitle("Runs");
  const filters = Object.fromEntries(FILTERS.map((k) => [k, query.get(k) || ""]));
  const size = /^\d+$/.test(query.get("limit") || "") ? { limit: query.get("limit") } : {};
  const counts = h("div", { class: "counts", id: "counts" });
  const body = h("tbody", { id: "runs-body" });
  const more = h("button", { type: "button", id: "more", class: "secondary", hidden: true }, "Older runs");
  const status = h("p", { class: "note", id: "runs-note" });
  const table = h("table", { class: "runs", id: "runs" },
    h("thead", {}, h("tr", {}, ["Run", "Workflow", "Status", "Source", "Started", "Duration",
      "First error"].map((t) => h("th", { class: NUMERIC.has(t) ? "num" : null }, t)))), body);
  setView(h("h1", {}, "Runs"), runsFilterForm(filters), counts, h("div", { class: "scroll" }, table),
    status, more);

  const refreshCounts = async () => {
    const countFilters = { ...filters, status: "" };
    try {
      counts.replaceChildren(...countsBar(await getJson(`${API}/runs/counts${runsQuery(countFilters)}`)));
    } catch (err) {
      counts.replaceChildren(errorBox(err));
    }
  };
  let cursor = null;
  const loadPage = async () => {
    more.disabled = true;
    try {
      const page = await getJson(`${API}/runs${runsQuery(filters, cursor ? { ...size, cursor } : size)}`);
      for (const run of page.runs) {
        if (!body.querySelector(`tr[data-run="${Number(run.id)}"]`)) body.append(runRow(run));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      status.textContent = body.children.length ? "" : "No runs match.";
    } catch (err) {
      status.replaceChildren(errorBox(err));
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", loadPage);

  const countsLater = debounce(refreshCounts, 250);
  // The last run event of each run: newer than what a read may return, since an event is
  // sent as the store queues the write (a read right after it can still see the old row).
  const latest = new Map();
  const rowOf = (id) => body.querySelector(`tr[data-run="${Number(id)}"]`);
  const place = async (id, tries) => {
    const event = latest.get(id);
    if (!rowOf(id)) {
      if (!matchesFilters(filters, event)) return;
      const first = body.querySelector("tr[data-run]");
      if (first && Number(first.dataset.run) > id) return; // older: paging shows it
    }
    const fetched = await reloadSummaryListing(id);
    const last = latest.get(id);
    const stale = !fetched || runRank(fetched.status) < runRank(last.status);
    const listing = stale ? {
      id, name: last.workflow, source: null, error: null, retry_of: null, ...(fetched || {}),
      status: last.status, started_at: last.started_at, finished_at: last.finished_at, duration: null,
    } : fetched;
    const row = rowOf(id);
    if (row && !listing.source) {
      const old = row.querySelector(".source").textContent;
      if (old !== "—") listing.source = old;
    }
    if (filters.status && filters.status !== listing.status) {
      if (row) row.remove();
    } else if (row) {
      row.replaceWith(runRow(listing));
    } else {
      body.prepend(runRow(listing));
      status.textContent = "";
    }
    if (stale && tries < 8) later(() => place(id, tries + 1), 250 * (tries + 1));
  };
  follow("", {
    run: (event) => {
      countsLater();
      const id = Number(event.run_id);
      const prev = latest.get(id);
      if (!prev || runRank(event.status) >= runRank(prev.status)) latest.set(id, event);
      place(id, 0);
    },
    reset: () => route(),
  });
  await Promise.all([refreshCounts(), loadPage()]);
}

// A run's listing built from its summary (the source, the first error, the duration).
async function reloadSummaryListing(id) {
  try {
    const s = await getJson(`${API}/runs/${Number(id)}`);
    const failed = Object.values(s.nodes || {}).find((n) => n.error);
    return {
      id: s.run_id, name: s.workflow, status: s.status, source: s.source,
      started_at: s.started_at, finished_at: s.status === "RUNNING" ? null : s.finished_at,
      duration: s.status === "RUNNING" ? null : s.duration,
      error: (s.errors && s.errors[0]) || (failed ? failed.error : null),
      retry_of: s.retry_of === undefined ? null : s.retry_of,
    };
  } catch (_) {
    return null;
  }
}

// --- one run ---------------------------------------------------------------------------

// The nodes in dependency order (Kahn), ties kept in the definition's order.
function topoOrder(definition, summaryNodes) {
  const defs = (definition && Array.isArray(definition.nodes)) ? definition.nodes : [];
  const ids = defs.map((n) => String(n.id));
  for (const id of Object.keys(summaryNodes || {})) if (!ids.includes(id)) ids.push(id);
  const deps = new Map(ids.map((id) => [id, []]));
  for (const n of defs) {
    const list = Array.isArray(n.depends_on) ? n.depends_on.map(String) : [];
    deps.set(String(n.id), list.filter((d) => deps.has(d)));
  }
  const done = new Set();
  const order = [];
  while (order.length < ids.length) {
    const ready = ids.filter((id) => !done.has(id) && deps.get(id).every((d) => done.has(d)));
    // a cycle is never stored, but the page must not hang on one: take the first left
    for (const id of ready.length ? ready : [ids.find((id) => !done.has(id))]) {
      done.add(id);
      order.push(id);
    }
  }
  return { order, deps };
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

function runHeader(summary, definition) {
  const key = definition && typeof definition === "object" ? definition.idempotency_key : null;
  const running = summary.status === "RUNNING";
  return h("section", { class: "run-header", id: "run-header" },
    h("h1", {}, h("span", { class: "muted" }, `Run #${summary.run_id} `),
      h("span", { class: "workflow", id: "run-workflow" }, summary.workflow || "—"), " ",
      badge(summary.status)),
    facts([
      ["Started", when(summary.started_at)],
      ["Finished", running ? "—" : when(summary.finished_at)],
      ["Duration", seconds(span(summary.started_at, running ? null : summary.finished_at,
        running ? null : summary.duration))],
      ["Source", summary.source || "—"],
      ["Idempotency key", key || null],
      ["Retry of", summary.retry_of === undefined ? null : link(runHref(summary.retry_of), `#${summary.retry_of}`)],
      ["Duplicate of", summary.duplicate_of === undefined ? null
        : link(runHref(summary.duplicate_of), `#${summary.duplicate_of}`)],
    ]),
    summary.errors && summary.errors.length
      ? h("ul", { class: "errors" }, summary.errors.map((e) => h("li", {}, e))) : null);
}

// Parses the graph's SVG as XML and keeps only drawing: no script, handler, link or style.
function safeSvg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (!root || root.namespaceURI !== SVG_NS || root.localName !== "svg") return null;
  for (const bad of root.querySelectorAll("script, foreignObject, style, iframe, image, use")) bad.remove();
  for (const node of [root, ...root.querySelectorAll("*")]) {
    for (const attr of [...node.attributes]) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on") || name === "style" || name === "href" || name.endsWith(":href")) {
        node.removeAttribute(attr.name);
      }
    }
  }
  const svg = document.importNode(root, true);
  // sized by the style sheet: as wide as it needs, never wider than the page
  const width = parseFloat(svg.getAttribute("width") || "0");
  svg.removeAttribute("height");
  svg.removeAttribute("width");
  if (width) svg.style.maxWidth = `${Math.ceil(width * 1.2)}px`;
  return svg;
}

// Recolours a graph node: its status class, and the status line of its label.
function setNodeClass(g, status) {
  for (const cls of [...g.classList]) if (cls.startsWith("status-")) g.classList.remove(cls);
  g.classList.add(`status-${status}`);
  for (const text of g.querySelectorAll("text")) {
    if (NODE_STATUSES.includes(text.textContent.trim())) text.textContent = status;
  }
}

function graphNodes(svg) {
  const nodes = new Map();
  for (const g of svg.querySelectorAll("g.wfe-node")) {
    const id = g.getAttribute("id") || "";
    if (id.startsWith("node-")) nodes.set(id.slice(5), g);
  }
  return nodes;
}

function timeline(summary, order) {
  const nodes = summary.nodes || {};
  const started = order.filter((id) => nodes[id] && nodes[id].started_at);
  if (!started.length) return h("p", { class: "note" }, "No node has started.");
  const now = Date.now();
  const t0 = Math.min(...started.map((id) => Date.parse(nodes[id].started_at)));
  const end = (n) => (n.finished_at ? Date.parse(n.finished_at) : now);
  const t1 = Math.max(t0 + 1, ...started.map((id) => end(nodes[id])));
  const total = t1 - t0;
  const axis = h("div", { class: "gantt-axis" });
  for (let i = 0; i <= 4; i += 1) {
    const tick = h("span", { class: "tick" }, `+${seconds((total * i) / 4 / 1000)}`);
    tick.style.left = `${i * 25}%`;
    axis.append(tick);
  }
  const rows = order.map((id) => {
    const n = nodes[id] || { status: "PENDING" };
    const track = h("div", { class: "gantt-track" });
    if (n.started_at) {
      const a = Date.parse(n.started_at) - t0;
      const b = end(n) - t0;
      const bar = h("div", { class: `gantt-bar status-${n.status}`,
        title: `${id}: ${n.status}, ${seconds(span(n.started_at, n.finished_at, n.duration))}` });
      bar.style.left = `${(a / total) * 100}%`;
      bar.style.width = `${Math.max(0.4, ((b - a) / total) * 100)}%`;
      track.append(bar);
    }
    return h("div", { class: "gantt-row", "data-node": id },
      h("a", { class: "gantt-label", href: nodeHref(summary.run_id, id) }, id),
      track,
      h("span", { class: "gantt-dur" }, n.started_at ? seconds(span(n.started_at, n.finished_at, n.duration)) : n.status));
  });
  return h("div", { class: "gantt", id: "timeline" },
    h("div", { class: "gantt-row head" }, h("span", { class: "gantt-label" }), axis, h("span", { class: "gantt-dur" })),
    rows);
}

function nodesTable(summary, order, deps) {
  const nodes = summary.nodes || {};
  return h("table", { class: "nodes", id: "nodes" },
    h("thead", {}, h("tr", {}, ["Node", "Type", "Status", "Depends on", "Attempts", "Started",
      "Duration", "Error or reason"].map((t) => h("th", { class: NUMERIC.has(t) ? "num" : null }, t)))),
    h("tbody", {}, order.map((id) => {
      const n = nodes[id] || { status: "PENDING" };
      return h("tr", { "data-node": id },
        h("td", {}, link(nodeHref(summary.run_id, id), id)),
        h("td", {}, n.type || "—"),
        h("td", { class: "status" }, badge(n.status)),
        h("td", {}, (deps.get(id) || []).join(", ") || "—"),
        h("td", { class: "num" }, n.attempts || "—"),
        h("td", { class: "time" }, when(n.started_at)),
        h("td", { class: "num" }, seconds(span(n.started_at, n.finished_at, n.duration))),
        h("td", { class: n.error ? "error" : "reason" }, firstLine(n.error || n.reason)));
    })));
}

async function fetchGraph(id) {
  try {
    return { svg: safeSvg(await (await request(`${API}/runs/${id}/graph?format=svg`)).text()) };
  } catch (err) {
    return { error: err };
  }
}

async function showRun(id) {
  setTitle(`Run ${id}`);
  const token = generation;
  let summary;
  let definition = null;
  let graph;
  // The last event of the run and of each node: an event is sent as the store queues its
  // write, so a read just after it may return the older state, which must not win.
  // Following starts before the first read, so no transition falls between the two.
  let runEvent = null;
  const nodeEvents = new Map();
  let onEvent = () => {}; // until the view is drawn, events are only kept
  let onReset = () => {};
  follow(`?run_id=${id}`, {
    node: (event) => {
      const nodeId = String(event.node_id);
      const prev = nodeEvents.get(nodeId);
      if (!prev || nodeRank(event.status) >= nodeRank(prev.status)) nodeEvents.set(nodeId, event);
      onEvent();
    },
    run: (event) => {
      if (!runEvent || runRank(event.status) >= runRank(runEvent.status)) runEvent = event;
      onEvent();
    },
    reset: () => onReset(),
  });
  try {
    summary = await getJson(`${API}/runs/${id}`);
    // a file that never ran (REJECTED, DUPLICATE) has no stored definition and no graph
    [definition, graph] = NEVER_RAN.has(summary.status) ? [null, { never: true }] : await Promise.all([
      getJson(`${API}/runs/${id}/definition`).catch(() => null),
      fetchGraph(id),
    ]);
  } catch (err) {
    if (token === generation) setView(h("h1", {}, `Run #${id}`), errorBox(err));
    return;
  }
  if (token !== generation) return;
  const header = h("div");
  const timeBox = h("div");
  const tableBox = h("div", { class: "scroll" });
  const graphBox = h("div", { class: "graph", id: "graph" });
  let nodeGroups = new Map();
  if (graph.svg) {
    graphBox.append(graph.svg);
    nodeGroups = graphNodes(graph.svg);
    for (const [nodeId, g] of nodeGroups) {
      g.classList.add("clickable");
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "link");
      g.setAttribute("aria-label", `node ${nodeId}`);
      const open = () => { location.hash = nodeHref(id, nodeId); };
      g.addEventListener("click", open);
      g.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
    }
  } else if (graph.error) {
    graphBox.append(errorBox(graph.error));
  }
  const draw = () => {
    const { order, deps } = topoOrder(definition, summary.nodes);
    header.replaceChildren(runHeader(summary, definition));
    timeBox.replaceChildren(timeline(summary, order));
    tableBox.replaceChildren(nodesTable(summary, order, deps));
    for (const [nodeId, n] of Object.entries(summary.nodes || {})) {
      const g = nodeGroups.get(nodeId);
      if (g) setNodeClass(g, n.status);
    }
    setTitle(`Run ${id} ${summary.workflow || ""}`);
  };
  draw();
  if (graph.never) {
    setView(header, h("p", { class: "note" }, `This file never ran (${summary.status}).`));
    return;
  }
  setView(header, h("h2", {}, "Graph"), graphBox, h("h2", {}, "Timeline"), timeBox,
    h("h2", {}, "Nodes"), tableBox);

  const overlay = () => {
    let stale = false;
    if (runEvent && runRank(runEvent.status) > runRank(summary.status)) {
      Object.assign(summary, { status: runEvent.status, finished_at: runEvent.finished_at, duration: null });
      stale = true;
    }
    summary.nodes = summary.nodes || {};
    for (const [nodeId, event] of nodeEvents) {
      const node = summary.nodes[nodeId] || (summary.nodes[nodeId] = { status: "PENDING" });
      const ahead = nodeRank(event.status) - nodeRank(node.status);
      if (ahead > 0 || (ahead === 0 && (event.attempts || 0) > (node.attempts || 0))) {
        Object.assign(node, { status: event.status, attempts: event.attempts,
          started_at: event.started_at, finished_at: event.finished_at, duration: null });
        if (event.error) node.error = event.error;
        stale = true;
      }
    }
    return stale;
  };
  let tries = 0;
  const load = async () => {
    try {
      summary = await getJson(`${API}/runs/${id}`);
    } catch (_) {
      return; // the next event, or the next try, reads it again
    }
    const stale = overlay();
    draw();
    // a read older than the events: read again shortly, for the durations and errors
    if (stale && tries < 8) {
      tries += 1;
      later(load, 250 * tries);
    } else if (!stale) {
      tries = 0;
    }
  };
  const refresh = debounce(load, 200);
  // a running run's bars and durations grow with the clock
  const tick = setInterval(() => { if (summary.status === "RUNNING") draw(); }, 1000);
  onLeave(() => clearInterval(tick));
  onEvent = () => {
    overlay();
    draw();
    refresh();
  };
  onReset = refresh;
  if (overlay()) onEvent(); // events that came while the first read was under way
}

// --- one node --------------------------------------------------------------------------

async function showNode(runId, nodeId) {
  setTitle(`${nodeId} · run ${runId}`);
  const box = h("div");
  const crumbs = h("p", { class: "crumbs" }, link(runHref(runId), `Run #${runId}`), " / ", nodeId);
  setView(crumbs, box);
  let latest = null; // the node's last event: a read just after it may still be older
  let tries = 0;
  const load = async () => {
    let n;
    try {
      n = await getJson(`${API}/runs/${runId}/nodes/${encodeURIComponent(nodeId)}`);
    } catch (err) {
      box.replaceChildren(h("h1", {}, nodeId), errorBox(err));
      return;
    }
    if (latest && nodeRank(n.status) < nodeRank(latest.status) && tries < 8) {
      tries += 1;
      later(load, 250 * tries);
    }
    const parts = [
      h("h1", {}, h("span", { class: "muted" }, "Node "), h("span", { id: "node-id" }, n.node_id), " ",
        badge(n.status)),
      facts([
        ["Type", n.type],
        ["Attempts", n.attempts === null || n.attempts === undefined ? "—" : String(n.attempts)],
        ["Started", when(n.started_at)],
        ["Finished", when(n.finished_at)],
        ["Duration", seconds(span(n.started_at, n.finished_at, n.duration))],
        ["Depends on", (n.depends_on || []).length
          ? h("span", {}, n.depends_on.map((d, i) => [i ? ", " : "", link(nodeHref(runId, d), d)]))
          : "—"],
      ]),
    ];
    if (n.error) parts.push(h("h2", {}, "Error"), h("pre", { class: "error-text", id: "node-error" }, n.error));
    if (n.reason) parts.push(h("h2", {}, "Skipped because"), h("p", { id: "node-reason" }, n.reason));
    if (n.cause) {
      const cause = typeof n.cause === "string" ? link(nodeHref(runId, n.cause), n.cause) : JSON.stringify(n.cause);
      parts.push(h("p", { class: "muted", id: "node-cause" }, "Cause: ", cause));
    }
    parts.push(h("h2", {}, "Params"), h("div", { id: "node-params" }, pretty(n.params === undefined ? {} : n.params)));
    parts.push(h("h2", {}, "Output"), h("div", { id: "node-output" },
      n.output === null || n.output === undefined ? h("p", { class: "note" }, "No output.") : pretty(n.output)));
    box.replaceChildren(...parts);
  };
  const again = debounce(load, 200);
  follow(`?run_id=${Number(runId)}`, {
    node: (event) => {
      if (String(event.node_id) !== nodeId) return;
      latest = event;
      tries = 0;
      again();
    },
    reset: again,
  });
  await load();
}

// --- task types ------------------------------------------------------------------------

function schemaType(schema) {
  if (!schema || typeof schema !== "object") return "";
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  const type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type;
  if (type === "array" && schema.items) return `array of ${schemaType(schema.items) || "any"}`;
  if (type) return type;
  for (const key of ["anyOf", "oneOf"]) {
    if (Array.isArray(schema[key])) return schema[key].map(schemaType).filter(Boolean).join(" | ");
  }
  return "any";
}

function paramsTable(schema) {
  const props = schema && schema.properties ? Object.entries(schema.properties) : [];
  if (!props.length) return h("p", { class: "note" }, "Any params (no fixed schema).");
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  return h("table", { class: "params" },
    h("thead", {}, h("tr", {}, ["Param", "Type", "Required", "Default", "Meaning"].map((t) => h("th", {}, t)))),
    h("tbody", {}, props.map(([name, p]) => h("tr", {},
      h("td", {}, h("code", {}, name)),
      h("td", {}, schemaType(p)),
      h("td", {}, required.has(name) ? "yes" : ""),
      h("td", {}, p && "default" in p ? JSON.stringify(p.default) : ""),
      h("td", {}, (p && p.description) || "")))));
}

async function showTasks() {
  setTitle("Task types");
  const token = generation;
  let tasks;
  try {
    tasks = (await getJson(`${API}/tasks`)).tasks;
  } catch (err) {
    if (token === generation) setView(h("h1", {}, "Task types"), errorBox(err));
    return;
  }
  if (token !== generation) return;
  setView(h("h1", {}, "Task types"),
    h("div", { class: "tasks", id: "tasks" }, tasks.map((t) => h("section", { class: "task", "data-type": t.type },
      h("h2", {}, h("code", {}, t.type)),
      h("p", { class: "description" }, t.description || ""),
      paramsTable(t.params_schema),
      h("details", {}, h("summary", {}, "JSON schema"), pretty(t.params_schema))))));
}

// --- the router ------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch (_) {
      return p;
    }
  });
  return { parts, query: new URLSearchParams(search || "") };
}

async function route() {
  leave();
  generation += 1;
  const token = generation;
  const { parts, query } = parseHash();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === (parts[0] || "runs"));
  }
  try {
    if (parts[0] === "tasks") await showTasks();
    else if (parts[0] === "runs" && parts.length === 2 && /^\d+$/.test(parts[1])) await showRun(parts[1]);
    else if (parts[0] === "runs" && parts.length === 4 && parts[2] === "nodes" && /^\d+$/.test(parts[1])) {
      await showNode(parts[1], parts[3]);
    } else if (parts.length === 0 || (parts[0] === "runs" && parts.length === 1)) await showRuns(query);
    else setView(h("h1", {}, "Not found"), h("p", {}, "No such page: ", location.hash, " · ", link("#/runs", "runs")));
  } catch (err) {
    setView(errorBox(err));
  }
  if (token === generation) document.body.dataset.ready = location.hash || "#/runs";
}

window.addEventListener("hashchange", route);
route();
