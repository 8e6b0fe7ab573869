// The runs view: #/runs?status=&workflow=&since=&until=&limit=.

import {
  API, NUMERIC, RUN_STATUSES, badge, debounce, errorBox, firstLine, getJson, h, later, link,
  reload, runHref, runRank, seconds, setTitle, setView, span, when,
} from "./common.js";
import { follow } from "./live.js";

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

// The counts by status; each links to the runs of that status under the other filters.
function countsBar(counts, filters) {
  const href = (status) => {
    const params = new URLSearchParams();
    for (const key of FILTERS) {
      const value = key === "status" ? status : filters[key];
      if (value) params.set(key, value);
    }
    const text = params.toString();
    return text ? `#/runs?${text}` : "#/runs";
  };
  const chips = RUN_STATUSES.filter((s) => counts.counts && counts.counts[s])
    .map((s) => h("a", { class: `chip status-${s}`, href: href(s), "data-status": s },
      h("span", { class: "chip-label" }, s), h("span", { class: "chip-count" }, counts.counts[s])));
  return [h("a", { class: "chip total", href: href(""), "data-status": "total" },
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

export async function showRuns(query) {
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
      const answer = await getJson(`${API}/runs/counts${runsQuery(countFilters)}`);
      counts.replaceChildren(...countsBar(answer, filters));
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
  const connected = follow("", {
    run: (event) => {
      countsLater();
      const id = Number(event.run_id);
      const prev = latest.get(id);
      if (!prev || runRank(event.status) >= runRank(prev.status)) latest.set(id, event);
      place(id, 0);
    },
    reset: () => reload(),
  });
  await connected; // the stream is open: a run that starts from now on shows up
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
