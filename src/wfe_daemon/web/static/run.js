// A run's view: #/runs/<id>, its header, graph, timeline and nodes.

import {
  API, NEVER_RAN, NODE_STATUSES, NUMERIC, SVG_NS, badge, current, debounce, errorBox, facts,
  firstLine, generationNow, getJson, h, later, link, nodeHref, nodeRank, onLeave, request, runHref,
  runRank, seconds, setTitle, setView, span, when,
} from "./common.js";
import { follow } from "./live.js";

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

export async function showRun(id) {
  setTitle(`Run ${id}`);
  const token = generationNow();
  let summary;
  let definition = null;
  let graph;
  // The last event of the run and of each node: an event is sent as the store queues its
  // write, so a read just after it may return the older state, which must not win.
  // The first read waits until the stream is open, so no transition falls between the two.
  let runEvent = null;
  const nodeEvents = new Map();
  let onEvent = () => {}; // until the view is drawn, events are only kept
  let onReset = () => {};
  const connected = follow(`?run_id=${id}`, {
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
  await connected;
  try {
    summary = await getJson(`${API}/runs/${id}`);
    // a file that never ran (REJECTED, DUPLICATE) has no stored definition and no graph
    [definition, graph] = NEVER_RAN.has(summary.status) ? [null, { never: true }] : await Promise.all([
      getJson(`${API}/runs/${id}/definition`).catch(() => null),
      fetchGraph(id),
    ]);
  } catch (err) {
    if (current(token)) setView(h("h1", {}, `Run #${id}`), errorBox(err));
    return;
  }
  if (!current(token)) return;
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
