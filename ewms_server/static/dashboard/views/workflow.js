// One workflow: totals, tasks done over time, queues, task directives and their taskforces
// (phase timeline, compound statuses, top errors, diagnosis).

import { call, queryAll } from "../api.js";
import { fmtDuration, fmtNum, fmtTime, h, progressBar, stateOf, table } from "../dom.js";
import { tasksPlot } from "../plot.js";

function refresh(flash) {
  document.dispatchEvent(new CustomEvent("ewms:refresh", { detail: { flash } }));
}

/** Refresh, and (while dead letters wait and the workflow is active) move them back to their queues. */
function actions(path, wf, totals) {
  const bar = h("p", {}, h("button", { type: "button", "data-test": "refresh", onclick: () => refresh() }, "Refresh"));
  if (!wf.deactivated && totals.dead_lettered > 0) {
    const retry = h("button", { type: "button", "data-test": "retry" }, `Retry ${totals.dead_lettered} dead letters`);
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        const r = await call("POST", `${path}/actions/retry-dead-letters`);
        refresh(`requeued ${r.requeued} dead letters`);
      } catch (e) {
        refresh(`retry failed: ${e.message}`);
      }
    });
    bar.append(" ", retry);
  }
  return bar;
}

function card(label, value, test) {
  return h("div", { class: "card" }, h("div", { class: "n", "data-test": test }, value), h("div", { class: "k" }, label));
}

function counts(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h("ul", {}, entries.map(([k, v]) => h("li", {}, h("code", {}, k), `: ${typeof v === "object" ? JSON.stringify(v) : v}`)));
}

function compound(statuses) {
  const rows = [];
  for (const [jobStatus, byPilot] of Object.entries(statuses || {})) {
    for (const [pilot, n] of Object.entries(byPilot)) {
      rows.push(h("tr", { "data-test": "compound" }, h("td", {}, jobStatus), h("td", {}, pilot), h("td", { class: "num" }, fmtNum(n))));
    }
  }
  return rows.length ? table(["Job status", "Pilot status", "Jobs"], rows) : h("p", { class: "muted" }, "No statuses reported yet.");
}

function timeline(log) {
  return h("ol", { class: "timeline", "data-test": "timeline" }, (log || []).map((e) =>
    h("li", { class: e.was_successful ? "ok" : "failed", "data-test": "timeline-entry", "data-phase": e.target_phase },
      h("strong", {}, e.target_phase), " ", h("span", { class: "muted" }, fmtTime(e.timestamp)),
      e.was_successful ? "" : " (failed)", " by ", h("code", {}, e.source_entity),
      e.context ? h("div", { class: "muted" }, e.context) : null)));
}

function diagnosis(d) {
  if (!d) return null;
  const parts = [h("h4", {}, "Diagnosis"),
    h("p", {}, `jobs: ${d.jobs.idle} idle, ${d.jobs.running} running, ${d.jobs.held} held, ${d.jobs.ended} ended; evictions: ${d.n_evictions}`)];
  if (d.error) parts.push(h("p", { class: "error" }, d.error));
  if (Object.keys(d.idle_reasons || {}).length) parts.push(h("p", {}, "Why idle:"), counts(d.idle_reasons));
  if ((d.held || []).length) {
    parts.push(h("p", {}, "Held:"), table(["Proc", "Reason", "Code", "Since", "Released", "Next"], d.held.map((x) =>
      h("tr", { "data-test": "held" }, h("td", {}, x.proc), h("td", {}, x.reason), h("td", {}, `${x.code}/${x.subcode ?? "–"}`),
        h("td", {}, fmtTime(x.since)), h("td", { class: "num" }, x.n_released),
        h("td", {}, `${x.next_action}${x.next_action_ts ? " at " + fmtTime(x.next_action_ts) : ""}`)))));
  }
  return h("div", { "data-test": "diagnosis" }, parts);
}

function taskforceBox(tf) {
  return h("div", { class: "tf", "data-test": "taskforce", "data-taskforce-uuid": tf.taskforce_uuid },
    h("h3", {}, h("code", {}, tf.taskforce_uuid), " ", h("span", { "data-test": "phase" }, tf.phase)),
    h("p", { class: "muted" }, `schedd ${tf.schedd} · location ${tf.cluster_location} · ${tf.n_workers} workers · cluster ${tf.cluster_id ?? "–"}`),
    h("h4", {}, "Phases"), timeline(tf.phase_change_log),
    h("h4", {}, "Compound statuses"), compound(tf.compound_statuses),
    h("h4", {}, "Top task errors"), counts(tf.top_task_errors),
    diagnosis(tf.diagnosis));
}

export async function workflowPage(id) {
  const path = `/v1/workflows/${encodeURIComponent(id)}`;
  const [wf, p, tds, tfs] = await Promise.all([
    call("GET", path),
    call("GET", `${path}/progress`),
    queryAll("task-directives", { workflow_id: id }),
    queryAll("taskforces", { workflow_id: id }),
  ]);
  const t = p.totals;
  const root = h("section", { "data-test": "workflow", "data-workflow-id": id },
    h("h1", {}, "Workflow ", h("code", {}, id)),
    h("p", {}, "owner ", h("strong", { "data-test": "owner" }, wf.owner), " · state ",
      h("strong", { class: `state-${stateOf(wf)}`, "data-test": "state" }, stateOf(wf)),
      ` · priority ${wf.priority} · created ${fmtTime(wf.timestamp)}`),
    progressBar(t),
    actions(path, wf, t),
    h("div", { class: "cards" },
      card("succeeded", fmtNum(t.succeeded), "succeeded"),
      card("failed", fmtNum(t.failed), "failed"),
      card("pending", fmtNum(t.pending), "pending"),
      card("in flight", fmtNum(t.in_flight), "in-flight"),
      card("dead-lettered", fmtNum(t.dead_lettered), "dead-lettered"),
      card("tasks/s", fmtNum(p.rate_per_s), "rate"),
      card("ETA", fmtDuration(p.eta_s), "eta")),
    p.broker_error ? h("p", { class: "notice", "data-test": "broker-error" }, `Queue figures unknown: ${p.broker_error}`) : null,
    h("h2", {}, "Tasks done over time"), tasksPlot(p.history),
    h("h2", {}, "Queues"),
    table(["Alias", "Public", "Pending", "In flight", "Dead-lettered"], Object.entries(p.queues).map(([alias, q]) =>
      h("tr", { "data-test": "queue", "data-alias": alias }, h("td", {}, alias), h("td", {}, q.is_public ? "yes" : "no"),
        h("td", { class: "num", "data-test": "q-pending" }, fmtNum(q.pending)),
        h("td", { class: "num" }, fmtNum(q.in_flight)),
        h("td", { class: "num", "data-test": "q-dead-lettered" }, fmtNum(q.dead_lettered))))),
  );
  root.append(h("h2", {}, "Task directives"));
  for (const td of tds) {
    const tp = p.tasks[td.task_id] || { succeeded: 0, failed: 0, workers: {}, top_errors: {} };
    root.append(h("div", { class: "tf", "data-test": "task", "data-task-id": td.task_id },
      h("h3", {}, h("code", {}, td.task_id)),
      h("p", {}, "image ", h("code", {}, td.task_image), " args ", h("code", {}, td.task_args || "–")),
      h("p", {}, "succeeded ", h("strong", { "data-test": "task-succeeded" }, fmtNum(tp.succeeded)),
        " · failed ", h("strong", { "data-test": "task-failed" }, fmtNum(tp.failed))),
      h("h4", {}, "Workers"), counts(tp.workers),
      h("h4", {}, "Top errors"), h("div", { "data-test": "top-errors" }, counts(tp.top_errors))));
  }
  root.append(h("h2", {}, `Taskforces (${tfs.length})`));
  for (const tf of tfs) root.append(taskforceBox(tf));
  return root;
}
