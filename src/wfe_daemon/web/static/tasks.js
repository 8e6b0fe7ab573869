// The task types view: #/tasks.

import {
  API, current, errorBox, generationNow, getJson, h, pretty, setTitle, setView,
} from "./common.js";

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

export async function showTasks() {
  setTitle("Task types");
  const token = generationNow();
  let tasks;
  try {
    tasks = (await getJson(`${API}/tasks`)).tasks;
  } catch (err) {
    if (current(token)) setView(h("h1", {}, "Task types"), errorBox(err));
    return;
  }
  if (!current(token)) return;
  setView(h("h1", {}, "Task types"),
    h("div", { class: "tasks", id: "tasks" }, tasks.map((t) => h("section", { class: "task", "data-type": t.type },
      h("h2", {}, h("code", {}, t.type)),
      h("p", { class: "description" }, t.description || ""),
      paramsTable(t.params_schema),
      h("details", {}, h("summary", {}, "JSON schema"), pretty(t.params_schema))))));
}
