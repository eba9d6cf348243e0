// Small DOM helpers: every text goes in through textContent, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "onclick" || k === "onsubmit") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

export function fmtNum(n) {
  return n === null || n === undefined ? "–" : Number.isInteger(n) ? String(n) : n.toFixed(2);
}

export function fmtTime(ts) {
  return ts === null || ts === undefined ? "–" : new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** The workflow's state as shown: active, or how it ended. */
export function stateOf(wf) {
  return wf.deactivated ? wf.deactivated : "active";
}

/** A bar of succeeded | failed | remaining; the remaining part is only known with a broker. */
export function progressBar(totals) {
  const ok = totals.succeeded || 0;
  const bad = totals.failed || 0;
  const left = (totals.pending ?? 0) + (totals.in_flight ?? 0);
  const all = ok + bad + left;
  const bar = h("div", { class: "bar", role: "img", "aria-label": `${ok} succeeded, ${bad} failed, ${left} left` });
  for (const [n, cls] of [[ok, "ok"], [bad, "bad"], [left, "left"]]) {
    const part = h("span", { class: cls });
    part.style.width = all ? `${(100 * n) / all}%` : "0%";
    bar.append(part);
  }
  return bar;
}
