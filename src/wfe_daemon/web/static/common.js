// The page's shared parts: constants, the view's lifecycle, elements, formats, reads.

export const API = "/api/v1";
export const RUN_STATUSES = [
  "RUNNING", "SUCCESS", "PARTIAL_SUCCESS", "FAILED", "CANCELLED", "REJECTED", "DUPLICATE",
];
export const NODE_STATUSES = ["PENDING", "RUNNING", "SUCCESS", "FAILED", "SKIPPED", "CANCELLED"];
export const SVG_NS = "http://www.w3.org/2000/svg";
export const NEVER_RAN = new Set(["REJECTED", "DUPLICATE"]);
export const NUMERIC = new Set(["Run", "Attempts", "Duration"]); // right-aligned columns

// What the current view opened (event streams, timers): closed when the route changes.
const cleanups = [];
// Counts route changes: a view whose reads finish after the route changed draws nothing.
let generation = 0;

// Counts a new route: what the previous view opened is closed first.
export function enter() {
  leave();
  generation += 1;
  return generation;
}

// The current route's number: a view keeps it and draws only while it is `current`.
export function generationNow() {
  return generation;
}

// Whether the route numbered `token` is still the current one.
export function current(token) {
  return token === generation;
}

let router = () => {};

// The router draws the current route; `reload()` draws it again (a view's state is stale).
export function setRouter(fn) {
  router = fn;
}

export function reload() {
  return router();
}

export function onLeave(fn) {
  cleanups.push(fn);
}

function leave() {
  for (const fn of cleanups.splice(0)) fn();
}

// An element with attributes and children (strings become text nodes, null is skipped).
export function h(tag, attrs, ...children) {
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

export function link(href, text, cls) {
  return h("a", { href, class: cls }, text);
}

export function runHref(id) {
  return `#/runs/${encodeURIComponent(id)}`;
}

export function nodeHref(runId, nodeId) {
  return `${runHref(runId)}/nodes/${encodeURIComponent(nodeId)}`;
}

export function badge(status) {
  const text = status || "—";
  return h("span", { class: `badge status-${text}` }, text);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// A stamp in the browser's time zone: 2026-12-04 05:01:02.
export function when(stamp) {
  if (!stamp) return "—";
  const d = new Date(stamp);
  if (Number.isNaN(d.getTime())) return String(stamp);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  const m = Math.floor(value / 60);
  if (m < 60) return `${m} m ${pad(Math.round(value % 60))} s`;
  return `${Math.floor(m / 60)} h ${pad(m % 60)} m`;
}

// The duration of something started and maybe finished (running: until now).
export function span(started, finished, duration) {
  if (duration !== null && duration !== undefined) return duration;
  if (!started) return null;
  const end = finished ? Date.parse(finished) : Date.now();
  return Math.max(0, (end - Date.parse(started)) / 1000);
}

export function firstLine(text) {
  if (!text) return "";
  const line = String(text).split("\n", 1)[0];
  return line.length > 160 ? `${line.slice(0, 159)}…` : line;
}

export function pretty(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

class HttpError extends Error {
  constructor(status, message, problems) {
    super(message);
    this.status = status;
    this.problems = problems || [];
  }
}

// The error a response that is not ok stands for (its JSON error and problems).
export async function httpError(response) {
  let body = {};
  try {
    body = await response.json();
  } catch (_) {
    body = {};
  }
  return new HttpError(response.status, body.error || `${response.status} ${response.statusText}`,
    body.problems);
}

// The API token, which a server bound to an address other than loopback wants for every
// read: kept in this tab's sessionStorage only (never localStorage, a cookie or a URL),
// sent as `Authorization: Bearer`.
const TOKEN_KEY = "wfe-daemon.api-token";

export function savedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    return null; // storage turned off: the page asks again on each load
  }
}

export function saveToken(token) {
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch (_) {
    // storage turned off: the token is lost on the next read's 401, which asks again
  }
}

export function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // nothing was kept
  }
}

// A read's headers: Accept, and the token when one is given. A header carries bytes, so
// the token goes as its UTF-8 bytes, as the server compares it.
export function readHeaders(accept, token) {
  const headers = { Accept: accept };
  if (token) {
    headers.Authorization = `Bearer ${String.fromCharCode(...new TextEncoder().encode(token))}`;
  }
  return headers;
}

let askToken = () => {};

// `fn(err, wrong)` asks for the token: after a 401, `wrong` when one was sent.
export function setTokenPrompt(fn) {
  askToken = fn;
}

// A read sent with the token `sent` (or none) was answered 401: the token is forgotten and
// asked for, unless the kept one changed meanwhile (a late answer). Whether it asked.
export function refused(sent, err) {
  if (savedToken() !== sent) return false;
  forgetToken();
  askToken(err, sent !== null);
  return true;
}

export async function request(path) {
  const sent = savedToken();
  const response = await fetch(path, { headers: readHeaders("application/json", sent) });
  if (!response.ok) {
    const err = await httpError(response);
    if (response.status === 401) refused(sent, err);
    throw err;
  }
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" },
    h("strong", {}, err instanceof HttpError ? `${err.status}: ` : "Error: "),
    err.message,
    err.problems && err.problems.length ? h("ul", {}, err.problems.map((p) => h("li", {}, p))) : null);
}

export function setView(...children) {
  const view = document.getElementById("view");
  view.replaceChildren(...children);
  return view;
}

export function setTitle(text) {
  document.title = text ? `${text} · wfe-daemon` : "wfe-daemon";
}

// Calls fn at most once per `ms`, after the last call (for refreshes after events).
export function debounce(fn, ms) {
  let timer = null;
  const call = () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
  onLeave(() => clearTimeout(timer));
  return call;
}

// Calls fn once after `ms`, unless the view is left first.
export function later(fn, ms) {
  const timer = setTimeout(fn, ms);
  onLeave(() => clearTimeout(timer));
}

// How far a status has come: a newer state never gives way to an older one.
export function runRank(status) {
  return status === "RUNNING" ? 0 : 1;
}

export function nodeRank(status) {
  if (status === "PENDING") return 0;
  return status === "RUNNING" ? 1 : 2;
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}
