// The signed-in user's workflows (every user's for an admin), with state and progress bars.

import { call, mapLimited } from "../api.js";
import { fmtNum, fmtTime, h, progressBar, stateOf, table } from "../dom.js";

const PROJECTION = ["workflow_id", "owner", "timestamp", "priority", "deactivated"];

function row(wf, p) {
  const t = p ? p.totals : null;
  const state = stateOf(wf);
  return h("tr", { "data-test": "wf-row", "data-workflow-id": wf.workflow_id },
    h("td", {}, h("a", { href: `#/workflow/${encodeURIComponent(wf.workflow_id)}`, class: "mono" }, wf.workflow_id)),
    h("td", {}, wf.owner),
    h("td", { class: `state-${state}`, "data-test": "state" }, state),
    h("td", {}, fmtTime(wf.timestamp)),
    h("td", {}, t ? progressBar(t) : h("span", { class: "muted" }, "–")),
    h("td", { class: "num", "data-test": "succeeded" }, t ? fmtNum(t.succeeded) : "–"),
    h("td", { class: "num", "data-test": "failed" }, t ? fmtNum(t.failed) : "–"),
    h("td", { class: "num", "data-test": "pending" }, t ? fmtNum(t.pending) : "–"),
    h("td", { class: "num", "data-test": "dead-lettered" }, t ? fmtNum(t.dead_lettered) : "–"),
  );
}

const CHUNK = 50;  // rows shown (and progress answers fetched) per "More"

export async function workflowsPage() {
  const root = h("section", { "data-test": "workflows" }, h("h1", {}, "Workflows"));
  let buffered = [];  // the server's page, not yet shown
  let after = null;
  let exhausted = false;
  async function nextRows() {
    while (buffered.length < CHUNK && !exhausted) {
      const page = await call("POST", "/v1/query/workflows", { query: {}, projection: PROJECTION, after });
      buffered.push(...page.workflows);
      after = page.next_after;
      exhausted = !after;
    }
    const shown = buffered.splice(0, CHUNK);
    const progress = await mapLimited(shown, 8, (wf) =>
      call("GET", `/v1/workflows/${encodeURIComponent(wf.workflow_id)}/progress`).catch(() => null));
    return shown.map((wf, i) => row(wf, progress[i]));
  }
  const first = await nextRows();
  if (!first.length) {
    root.append(h("p", { class: "muted", "data-test": "empty" }, "No workflows yet."));
    return root;
  }
  const t = table(["Workflow", "Owner", "State", "Created", "Progress", "Succeeded", "Failed", "Pending", "Dead-lettered"],
    first, { "data-test": "workflow-table" });
  root.append(t);
  if (buffered.length || !exhausted) {
    const more = h("button", { type: "button", "data-test": "more" }, "More");
    more.addEventListener("click", async () => {
      more.disabled = true;
      t.tBodies[0].append(...(await nextRows()));
      more.disabled = false;
      if (!buffered.length && exhausted) more.remove();
    });
    root.append(more);
  }
  return root;
}
