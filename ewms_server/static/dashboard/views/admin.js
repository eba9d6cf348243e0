// Admin pages: taskforces by schedd and phase; quarantined machines (GET /v1/quarantine,
// shown as "not available" while the server has no such route).

import { ApiError, call, queryAll } from "../api.js";
import { fmtNum, fmtTime, h, table } from "../dom.js";

export async function taskforcesPage() {
  const root = h("section", { "data-test": "admin-taskforces" }, h("h1", {}, "Taskforces by schedd and phase"));
  const [tfs, schema] = await Promise.all([queryAll("taskforces", {}, ["schedd", "phase"]), call("GET", "/v1/schema/openapi")]);
  // columns in the phases' life order (the schema's enum), for the phases present
  const order = schema.components.schemas.TaskforceObject.properties.phase.enum;
  const rank = (p) => (order.includes(p) ? order.indexOf(p) : order.length);
  const phases = [...new Set(tfs.map((t) => t.phase))].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const bySchedd = new Map();
  for (const t of tfs) {
    const row = bySchedd.get(t.schedd) || new Map();
    row.set(t.phase, (row.get(t.phase) || 0) + 1);
    bySchedd.set(t.schedd, row);
  }
  if (!tfs.length) {
    root.append(h("p", { class: "muted", "data-test": "empty" }, "No taskforces."));
    return root;
  }
  const rows = [...bySchedd.keys()].sort().map((schedd) => {
    const row = bySchedd.get(schedd);
    const total = [...row.values()].reduce((a, b) => a + b, 0);
    return h("tr", { "data-test": "schedd-row", "data-schedd": schedd }, h("td", {}, schedd),
      phases.map((ph) => h("td", { class: "num", "data-phase": ph }, fmtNum(row.get(ph) || 0))),
      h("td", { class: "num", "data-test": "total" }, fmtNum(total)));
  });
  root.append(h("p", { class: "muted" }, `${tfs.length} taskforces visible to this token.`),
    table(["Schedd", ...phases, "Total"], rows, { "data-test": "phase-table" }));
  return root;
}

function cell(v) {
  if (typeof v === "number" && v > 1e9 && v < 1e10) return fmtTime(v);  // epoch seconds
  return typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "–");
}

export async function quarantinePage() {
  const root = h("section", { "data-test": "admin-quarantine" }, h("h1", {}, "Quarantined machines"));
  let data;
  try {
    data = await call("GET", "/v1/quarantine");
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) {
      root.append(h("p", { class: "notice", "data-test": "not-available" }, "Not available: this server has no quarantine (GET /v1/quarantine)."));
      return root;
    }
    throw e;
  }
  // the list is the answer itself or its one array field
  const items = Array.isArray(data) ? data : Object.values(data || {}).find(Array.isArray) || [];
  if (!items.length) {
    root.append(h("p", { class: "muted", "data-test": "empty" }, "No machine is quarantined."));
    return root;
  }
  const keys = [...new Set(items.flatMap((x) => Object.keys(x)))];
  root.append(table(keys, items.map((x) => h("tr", { "data-test": "quarantined" }, keys.map((k) => h("td", {}, cell(x[k]))))),
    { "data-test": "quarantine-table" }));
  return root;
}
