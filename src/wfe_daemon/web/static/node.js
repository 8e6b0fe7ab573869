// A node's view: #/runs/<id>/nodes/<node>.

import {
  API, badge, debounce, errorBox, facts, getJson, h, later, link, nodeHref, nodeRank, pretty,
  runHref, seconds, setTitle, setView, span, when,
} from "./common.js";
import { follow } from "./live.js";

export async function showNode(runId, nodeId) {
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
    const output = n.output === null || n.output === undefined
      ? h("p", { class: "note" }, "No output.") : pretty(n.output);
    parts.push(h("div", { class: "io" },
      h("section", {}, h("h2", {}, "Params"),
        h("div", { id: "node-params" }, pretty(n.params === undefined ? {} : n.params))),
      h("section", {}, h("h2", {}, "Output"), h("div", { id: "node-output" }, output))));
    box.replaceChildren(...parts);
  };
  const again = debounce(load, 200);
  const connected = follow(`?run_id=${Number(runId)}`, {
    node: (event) => {
      if (String(event.node_id) !== nodeId) return;
      latest = event;
      tries = 0;
      again();
    },
    reset: again,
  });
  await connected;
  await load();
}
