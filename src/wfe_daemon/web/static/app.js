// wfe-daemon's page: a read-only single-page app over /api/v1.
//
// Routes (the hash): #/runs, #/runs/<id>, #/runs/<id>/nodes/<node>, #/tasks.
// Every value reaches the page through textContent or createElement, never as markup; the
// one document inserted whole (the run's SVG graph) is parsed as XML and stripped of
// scripts, event handlers and links first. A read answered 401 (a bind other than
// loopback) shows a form asking for the API token instead (token.js).

import { current, enter, errorBox, h, link, setRouter, setTokenPrompt, setView } from "./common.js";
import { showNode } from "./node.js";
import { showRun } from "./run.js";
import { showRuns } from "./runs.js";
import { showTasks } from "./tasks.js";
import { askToken, watchForget } from "./token.js";

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
  const token = enter();
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
    if (current(token)) setView(errorBox(err));
  }
  if (current(token)) document.body.dataset.ready = location.hash || "#/runs";
}

setRouter(route);
setTokenPrompt(askToken);
watchForget();
window.addEventListener("hashchange", route);
route();
